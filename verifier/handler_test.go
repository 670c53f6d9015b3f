package verifier

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/valyala/fasthttp"

	"shake/broker"
	"shake/ticket"
)

func do(s *Server, method, path string, auth, b []byte) (int, string) {
	var ctx fasthttp.RequestCtx
	ctx.Request.Header.SetMethod(method)
	ctx.Request.SetRequestURI(path)
	if auth != nil {
		ctx.Request.Header.SetBytesV("Authorization", auth)
	}
	ctx.Request.SetBody(b)
	s.Handler()(&ctx)
	return ctx.Response.StatusCode(), string(ctx.Response.Body())
}

func startBroker(t testing.TB) *broker.Broker {
	b, err := broker.Start(broker.Config{Listen: "127.0.0.1:0", Partitions: 4})
	must(t, err)
	t.Cleanup(b.Close)
	return b
}

// newServer starts a verifier and waits for its rebuild from the topic.
func newServer(t testing.TB, f *fixture, cfg Config) *Server {
	t.Helper()
	s, err := New(cfg)
	must(t, err)
	t.Cleanup(func() { s.Close() })
	waitRebuilt(t, s)
	return s
}

func waitRebuilt(t testing.TB, s *Server) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !s.rb.done.Load() {
		if time.Now().After(deadline) {
			t.Fatal("the verifier never finished its rebuild")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// newServerNoKafka starts a verifier whose Kafka is unreachable from the start: the
// rebuild from the topic is skipped (as if the topic had been read and was empty), so
// that the spool path can be tested alone.
func newServerNoKafka(t testing.TB, f *fixture, cfg Config) *Server {
	t.Helper()
	s, err := New(cfg)
	must(t, err)
	t.Cleanup(func() { s.Close() })
	skipRebuild(s)
	return s
}

func skipRebuild(s *Server) {
	s.stopRebuild()
	s.finishRebuild()
}

// readTopic returns every claim on the topic, keyed by ticket id (failing on a claim
// whose key disagrees with its value).
func readTopic(t testing.TB, addr string, want int, d time.Duration) map[uint64][]ticket.Claim {
	t.Helper()
	conn, err := kafka.Dial("tcp", addr)
	must(t, err)
	parts, err := conn.ReadPartitions(broker.DefaultTopic)
	conn.Close()
	must(t, err)
	out := map[uint64][]ticket.Claim{}
	n := 0
	deadline := time.Now().Add(d)
	for {
		out, n = map[uint64][]ticket.Claim{}, 0
		for _, p := range parts {
			r := kafka.NewReader(kafka.ReaderConfig{Brokers: []string{addr}, Topic: broker.DefaultTopic,
				Partition: p.ID, MinBytes: 1, MaxBytes: 1 << 20, MaxWait: 50 * time.Millisecond})
			lc, err := kafka.DialLeader(context.Background(), "tcp", addr, broker.DefaultTopic, p.ID)
			must(t, err)
			last, err := lc.ReadLastOffset()
			lc.Close()
			must(t, err)
			for i := int64(0); i < last; i++ {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				m, err := r.ReadMessage(ctx)
				cancel()
				must(t, err)
				c, err := ticket.ParseClaim(m.Value)
				must(t, err)
				if string(m.Key) != fmt.Sprint(c.Ticket) {
					t.Fatalf("key %s for ticket %d", m.Key, c.Ticket)
				}
				out[c.Ticket] = append(out[c.Ticket], c)
				n++
			}
			r.Close()
		}
		if n >= want || time.Now().After(deadline) {
			return out
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestOpenErrorCodes(t *testing.T) {
	f := newFixture(t, 2, 100)
	b := startBroker(t)
	s := newServer(t, f, f.config([]string{b.Addr()}))
	alice, bob := f.bearer(7), f.bearer(8)
	good := f.tok(5, 7)
	expiredSess := f.sess.Mint([]byte("Bearer "), 7, time.Now().Add(-time.Second).Unix())
	// Ticket 150 belongs to shard 1 but is sealed with shard 0's key (a stolen edge 0).
	foreign := f.token(0, 150, 7, time.Now().Add(time.Hour))
	// A well-formed token whose MAC is not the generator's (an edge forging amounts).
	forged := f.sealers[0].Seal(nil, &ticket.TicketToken{Ticket: 6, UID: 7, Amount: 99, MAC: f.mac.Sum(6, 98, 0),
		ExpiresAt: uint32(time.Now().Add(time.Hour).Unix())})
	// An amount outside [min, max] even with a valid MAC.
	big := f.sealers[0].Seal(nil, &ticket.TicketToken{Ticket: 9, UID: 7, Amount: 101, MAC: f.mac.Sum(9, 101, 0),
		ExpiresAt: uint32(time.Now().Add(time.Hour).Unix())})
	wrongRound := f.sealers[0].Seal(nil, &ticket.TicketToken{Ticket: 10, UID: 7, Amount: amountOf(10), Round: 1,
		MAC: f.mac.Sum(10, amountOf(10), 1), ExpiresAt: uint32(time.Now().Add(time.Hour).Unix())})
	cases := []struct {
		name         string
		method, path string
		auth, body   []byte
		status       int
		code         string
	}{
		{"no auth", "POST", "/v1/open", nil, body(good), 401, `"unauthorized"`},
		{"basic auth", "POST", "/v1/open", []byte("Basic abc"), body(good), 401, `"unauthorized"`},
		{"forged session", "POST", "/v1/open", append(f.bearer(7)[:len(f.bearer(7))-1], 'x'), body(good), 401, `"unauthorized"`},
		{"expired session", "POST", "/v1/open", expiredSess, body(good), 401, `"unauthorized"`},
		{"garbage json", "POST", "/v1/open", alice, []byte(`{"token":`), 400, `"bad_request"`},
		{"empty body", "POST", "/v1/open", alice, nil, 400, `"bad_request"`},
		{"extra field", "POST", "/v1/open", alice, []byte(`{"token":"` + string(good) + `","x":1}`), 400, `"bad_request"`},
		{"oversized", "POST", "/v1/open", alice, []byte(`{"token":"` + strings.Repeat("a", MaxBodySize) + `"}`), 413, `"too_large"`},
		{"short token", "POST", "/v1/open", alice, body([]byte("abc")), 422, `"invalid_token"`},
		{"other user's token", "POST", "/v1/open", bob, body(good), 403, `"not_your_ticket"`},
		{"expired", "POST", "/v1/open", alice, body(f.token(0, 5, 7, time.Now().Add(-time.Second))), 410, `"expired"`},
		{"out of shard", "POST", "/v1/open", alice, body(foreign), 422, `"invalid_token"`},
		{"forged mac", "POST", "/v1/open", alice, body(forged), 422, `"invalid_token"`},
		{"amount over max", "POST", "/v1/open", alice, body(big), 422, `"invalid_token"`},
		{"wrong round", "POST", "/v1/open", alice, body(wrongRound), 422, `"invalid_token"`},
		{"not found", "POST", "/v1/nope", alice, body(good), 404, `"not_found"`},
		{"method", "GET", "/v1/open", alice, nil, 405, `"method_not_allowed"`},
		{"opened", "POST", "/v1/open", alice, body(good), 200, `"opened"`},
		{"same user again", "POST", "/v1/open", alice, body(good), 200, `"opened"`},
		{"same user, fresh token", "POST", "/v1/open", alice, body(f.tok(5, 7)), 200, `"opened"`},
		{"other user, same ticket", "POST", "/v1/open", bob, body(f.tok(5, 8)), 409, `"already_opened"`},
	}
	for _, c := range cases {
		st, got := do(s, c.method, c.path, c.auth, c.body)
		if st != c.status || !strings.Contains(got, c.code) {
			t.Errorf("%s: got %d %s, want %d %s", c.name, st, got, c.status, c.code)
		}
		if !json.Valid([]byte(got)) {
			t.Errorf("%s: body is not JSON: %q", c.name, got)
		}
	}
	_, got := do(s, "POST", "/v1/open", alice, body(good))
	want := fmt.Sprintf(`{"result":"opened","campaign":"%s","ticket":"5","amount":%d,"currency":"CNY"}`, testCampaign, amountOf(5))
	if got != want {
		t.Fatalf("200 body %s, want %s", got, want)
	}
	// Exactly one claim reached Kafka for the three 200s.
	claims := readTopic(t, b.Addr(), 1, 5*time.Second)
	if len(claims) != 1 || len(claims[5]) != 1 || claims[5][0].UID != 7 || claims[5][0].Amount != int64(amountOf(5)) {
		t.Fatalf("topic holds %+v", claims)
	}
}

func TestEveryFlippedByteIsRejected(t *testing.T) {
	f := newFixture(t, 2, 100)
	s := newServerNoKafka(t, f, f.config([]string{"127.0.0.1:1"}))
	alice := f.bearer(7)
	good := f.tok(42, 7)
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	for i := range good {
		bad := append([]byte(nil), good...)
		// Replace the character by another base64url character, so that the token still
		// decodes and only the AEAD can catch it.
		bad[i] = alphabet[(strings.IndexByte(alphabet, bad[i])+1)%64]
		st, got := do(s, "POST", "/v1/open", alice, body(bad))
		if st != 422 {
			t.Fatalf("byte %d flipped: %d %s", i, st, got)
		}
	}
}

func TestConcurrentOpensOfOneTicket(t *testing.T) {
	f := newFixture(t, 1, 10)
	b := startBroker(t)
	s := newServer(t, f, f.config([]string{b.Addr()}))
	var wg sync.WaitGroup
	var mu sync.Mutex
	count := map[int]int{}
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func(uid uint64) {
			defer wg.Done()
			// Users 1 and 2 race for ticket 3; each retries its own open.
			st, _ := do(s, "POST", "/v1/open", f.bearer(uid), body(f.tok(3, uid)))
			mu.Lock()
			count[int(uid)*1000+st]++
			mu.Unlock()
		}(uint64(1 + i%2))
	}
	wg.Wait()
	// One user got 200 on all 8 of its opens, the other 409 on all 8.
	if !(count[1200] == 8 && count[2409] == 8 || count[2200] == 8 && count[1409] == 8) {
		t.Fatalf("results %v", count)
	}
	if c := readTopic(t, b.Addr(), 1, 5*time.Second); len(c) != 1 || len(c[3]) != 1 {
		t.Fatalf("topic %v", c)
	}
}

// TestKafkaDownSpoolsThenDrains: with no broker, opens answer 200 from the spool; when a
// broker appears at the address, the replayer drains the spool into the topic.
func TestKafkaDownSpoolsThenDrains(t *testing.T) {
	f := newFixture(t, 2, 100)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	addr := ln.Addr().String()
	ln.Close() // nothing listens there for now
	cfg := f.config([]string{addr})
	cfg.KafkaTimeout = 300 * time.Millisecond
	s := newServerNoKafka(t, f, cfg)
	for id := uint64(1); id <= 50; id++ {
		if st, got := do(s, "POST", "/v1/open", f.bearer(id), body(f.tok(id, id))); st != 200 {
			t.Fatalf("open %d while Kafka down: %d %s", id, st, got)
		}
	}
	if s.sp.pendingRecs.Load() != 50 {
		t.Fatalf("spool holds %d claims, want 50", s.sp.pendingRecs.Load())
	}
	// A repeat is answered from memory, without a second claim.
	if st, _ := do(s, "POST", "/v1/open", f.bearer(3), body(f.tok(3, 3))); st != 200 {
		t.Fatal("repeat failed")
	}
	b, err := broker.Start(broker.Config{Listen: addr, Partitions: 4})
	must(t, err)
	defer b.Close()
	deadline := time.Now().Add(20 * time.Second)
	for s.sp.pendingRecs.Load() > 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if n := s.sp.pendingRecs.Load(); n != 0 {
		t.Fatalf("spool still holds %d claims", n)
	}
	claims := readTopic(t, addr, 50, 5*time.Second)
	for id := uint64(1); id <= 50; id++ {
		if len(claims[id]) == 0 || claims[id][0].UID != id || claims[id][0].Amount != int64(amountOf(id)) {
			t.Fatalf("ticket %d: %+v", id, claims[id])
		}
	}
	if st, _ := do(s, "POST", "/v1/open", f.bearer(60), body(f.tok(60, 60))); st != 200 {
		t.Fatal("open after drain failed")
	}
}

func TestSpoolFullIs503(t *testing.T) {
	f := newFixture(t, 1, 100)
	cfg := f.config([]string{"127.0.0.1:1"})
	cfg.KafkaTimeout = 200 * time.Millisecond
	cfg.SpoolMaxBytes = 1000 // about three claims
	s := newServerNoKafka(t, f, cfg)
	var ok, unavailable int
	for id := uint64(1); id <= 10; id++ {
		st, got := do(s, "POST", "/v1/open", f.bearer(id), body(f.tok(id, id)))
		switch st {
		case 200:
			ok++
		case 503:
			unavailable++
			if !strings.Contains(got, `"retry_after_ms":1000`) {
				t.Fatalf("503 body %s", got)
			}
		default:
			t.Fatalf("status %d %s", st, got)
		}
	}
	if ok == 0 || unavailable == 0 || ok > 4 {
		t.Fatalf("ok %d unavailable %d", ok, unavailable)
	}
	// A refused open released its ticket: the same user may retry later.
	if free, _ := s.table.state(0, 10); !free {
		t.Fatal("ticket 10 stays claimed after a 503")
	}
}

func TestQueueBound(t *testing.T) {
	f := newFixture(t, 1, 10)
	sp, err := openSpool(t.TempDir(), 0, 0, func(_, _ []byte) {})
	must(t, err)
	reg := newServerNoKafka(t, f, f.config([]string{"127.0.0.1:1"})).cfg.Registry
	d := newDurable(durableConfig{Brokers: []string{"127.0.0.1:1"}, Topic: "t", QueueSize: 3, BatchMax: 4,
		Producers: 0, KafkaTimeout: time.Second, DownFor: time.Second, ReplayBackoff: time.Second}, sp, reg, nullLog())
	for i := 0; i < 3; i++ {
		must(t, d.submit(getOp()))
	}
	if err := d.submit(getOp()); err != ErrQueueFull {
		t.Fatalf("4th submit: %v", err)
	}
}
