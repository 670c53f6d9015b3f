package verifier

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"shake/broker"
	"shake/ticket"
)

// twoVerifiers returns the configurations of the verifiers of uid shards 0/2 and 1/2,
// each with its own spool, on the broker at addr.
func twoVerifiers(f *fixture, addr string) (Config, Config) {
	a, b := f.config([]string{addr}), f.config([]string{addr})
	a.UIDShard, b.UIDShard = UIDShard{0, 2}, UIDShard{1, 2}
	b.Spool = filepath.Join(f.dir, "spool-b")
	return a, b
}

type answer struct {
	status int
	body   string
}

// TestRebuildKeepsEveryAnswer: two verifiers (uid shards 0/2 and 1/2) share a topic
// with per_user 1. One is closed, its spool deleted (so that all it can learn is in the
// topic), and started again: every answer it gave is the same, a ticket opened by the
// other shard's user is 409 already_opened, and the other shard's user is 421.
func TestRebuildKeepsEveryAnswer(t *testing.T) {
	defer setPerUser(1)()
	f := newFixture(t, 2, 100)
	b := startBroker(t)
	cfgA, cfgB := twoVerifiers(f, b.Addr())
	a, err := New(cfgA)
	must(t, err)
	waitRebuilt(t, a)
	vb := newServer(t, f, cfgB)

	type req struct{ uid, ticket uint64 }
	var reqs []req
	// Even users (shard 0) each try three tickets: one opens, two are limit_reached.
	for u := uint64(2); u <= 40; u += 2 {
		for k := uint64(0); k < 3; k++ {
			reqs = append(reqs, req{u, u*3 + k})
		}
	}
	// Odd user 3 (shard 1) opens ticket 150 at the other verifier.
	if st, got := do(vb, "POST", "/v1/open", f.bearer(3), body(f.tok(150, 3))); st != 200 {
		t.Fatalf("shard 1 open: %d %s", st, got)
	}
	reqs = append(reqs, req{4, 150}, req{3, 151})
	before := map[req]answer{}
	counts := map[int]int{}
	for _, r := range reqs {
		st, got := do(a, "POST", "/v1/open", f.bearer(r.uid), body(f.tok(r.ticket, r.uid)))
		before[r] = answer{st, got}
		counts[st]++
	}
	if counts[200] != 20 || counts[409] != 41 || counts[421] != 1 {
		t.Fatalf("answers before the restart: %v", counts)
	}
	if got := before[req{4, 150}]; got.status != 409 || !strings.Contains(got.body, "limit_reached") {
		// uid 4 already opened its one ticket, and ticket 150 is free as far as this
		// verifier knows: it has not seen shard 1's claim.
		t.Fatalf("uid 4, ticket 150: %+v", got)
	}
	must(t, a.Close())
	must(t, os.RemoveAll(cfgA.Spool))

	a2 := newServer(t, f, cfgA)
	if n := a2.rb.counts[restoreCounted].Load(); n != 20 {
		t.Fatalf("rebuild counted %d claims of its users, want 20", n)
	}
	if n := a2.rb.counts[restoreMarked].Load(); n != 1 {
		t.Fatalf("rebuild marked %d tickets of other users, want 1", n)
	}
	for _, r := range reqs {
		st, got := do(a2, "POST", "/v1/open", f.bearer(r.uid), body(f.tok(r.ticket, r.uid)))
		if r == (req{4, 150}) {
			// The one answer that may change: a running verifier does not follow the
			// other shards' claims, so before the restart it did not know ticket 150
			// (a ticket handed out twice) was taken. Still a 409, and no claim either way.
			if st != 409 || !strings.Contains(got, "already_opened") {
				t.Errorf("uid 4, ticket 150 after the restart: %d %s", st, got)
			}
			continue
		}
		if w := before[r]; st != w.status || got != w.body {
			t.Errorf("uid %d ticket %d: before the restart %d %s, after %d %s", r.uid, r.ticket, w.status, w.body, st, got)
		}
	}
	// A fresh user of shard 0 meets ticket 150 as someone else's.
	if st, got := do(a2, "POST", "/v1/open", f.bearer(42), body(f.tok(150, 42))); st != 409 || !strings.Contains(got, "already_opened") {
		t.Fatalf("uid 42, ticket 150 opened by uid 3: %d %s", st, got)
	}
	if claims := readTopic(t, b.Addr(), 21, 5*time.Second); len(claims) != 21 {
		t.Fatalf("topic holds %d tickets, want 21", len(claims))
	}
}

// TestRebuildOwnClaimWins: a ticket handed out twice (a restored edge state) and
// opened by a user of each uid shard. Whatever the order in the topic, the verifier
// keeps answering its own user's 200 after a restart, and never counts the other one.
func TestRebuildOwnClaimWins(t *testing.T) {
	defer setPerUser(1)()
	f := newFixture(t, 1, 100)
	b := startBroker(t)
	cfgA, cfgB := twoVerifiers(f, b.Addr())
	vb := newServer(t, f, cfgB)
	if st, got := do(vb, "POST", "/v1/open", f.bearer(5), body(f.tok(9, 5))); st != 200 {
		t.Fatalf("uid 5: %d %s", st, got)
	}
	a, err := New(cfgA)
	must(t, err)
	waitRebuilt(t, a)
	// A started after uid 5's claim: ticket 9 is taken.
	if st, _ := do(a, "POST", "/v1/open", f.bearer(6), body(f.tok(9, 6))); st != 409 {
		t.Fatalf("uid 6 at a verifier that read uid 5's claim: %d", st)
	}
	// Had both verifiers opened ticket 9 at about the same moment, A would have answered
	// its own uid 8 200, with its claim landing after uid 5's: that is this claim.
	produceClaims(t, b.Addr(), f, []ticket.Claim{f.claim(9, 8)})
	must(t, a.Close())
	must(t, os.RemoveAll(cfgA.Spool))
	a2 := newServer(t, f, cfgA)
	if st, got := do(a2, "POST", "/v1/open", f.bearer(8), body(f.tok(9, 8))); st != 200 {
		t.Fatalf("own user 8 after the restart: %d %s", st, got)
	}
	if n := a2.users.count(8, 0); n != 1 {
		t.Fatalf("own user's count %d", n)
	}
	if n := a2.users.count(5, 0); n != 0 {
		t.Fatalf("other shard's user counted %d", n)
	}
}

// TestRebuildWaitsForTheTopic: with no broker at start, the verifier is not ready,
// opens answer 503 unavailable, each failed attempt is logged and counted, and it
// becomes ready by itself once the broker is there.
func TestRebuildWaitsForTheTopic(t *testing.T) {
	f := newFixture(t, 1, 100)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	addr := ln.Addr().String()
	ln.Close()
	cfg := f.config([]string{addr})
	cfg.KafkaTimeout = 200 * time.Millisecond
	var logs syncBuffer
	cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	s, err := New(cfg)
	must(t, err)
	t.Cleanup(func() { s.Close() })
	time.Sleep(700 * time.Millisecond)
	if s.ready() {
		t.Fatal("ready before the topic was read")
	}
	if st, got := do(s, "POST", "/v1/open", f.bearer(7), body(f.tok(1, 7))); st != 503 || !strings.Contains(got, `"unavailable"`) {
		t.Fatalf("open during the rebuild: %d %s", st, got)
	}
	if s.rb.errors.Value() == 0 || !strings.Contains(logs.String(), "cannot read the claims topic to rebuild; retrying") {
		t.Fatalf("no failed attempt counted or logged: %d, %q", s.rb.errors.Value(), logs.String())
	}
	br, err := broker.Start(broker.Config{Listen: addr, Partitions: 4})
	must(t, err)
	defer br.Close()
	waitRebuilt(t, s)
	if st, got := do(s, "POST", "/v1/open", f.bearer(7), body(f.tok(1, 7))); st != 200 {
		t.Fatalf("open after the rebuild: %d %s", st, got)
	}
}

// syncBuffer is a bytes.Buffer safe for the logger's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// claim returns the claim a verifier makes when uid opens ticket id of the fixture.
func (f *fixture) claim(id, uid uint64) ticket.Claim {
	sh, _ := f.man.ShardOf(id)
	a := amountOf(id)
	now := time.Now().UTC().Truncate(time.Millisecond)
	return ticket.Claim{Campaign: testCampaign, Ticket: id, Shard: sh, Round: 0, Amount: int64(a),
		Currency: "CNY", UID: uid, IssuedAt: now, OpenedAt: now, MAC: f.mac.Sum(id, a, 0)}
}

// produceClaims writes claims to the topic as a verifier would (key = ticket id).
func produceClaims(t testing.TB, addr string, f *fixture, cs []ticket.Claim) {
	t.Helper()
	w := &kafka.Writer{Addr: kafka.TCP(addr), Topic: broker.DefaultTopic, Balancer: &kafka.Hash{},
		RequiredAcks: kafka.RequireAll, BatchSize: 5000, BatchBytes: 64 << 20, BatchTimeout: time.Millisecond}
	defer w.Close()
	msgs := make([]kafka.Message, 0, 5000)
	flush := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		if err := w.WriteMessages(ctx, msgs...); err != nil {
			t.Fatalf("produce %d claims: %v", len(msgs), err)
		}
		msgs = msgs[:0]
	}
	for i := range cs {
		c := &cs[i]
		f.sign(c)
		msgs = append(msgs, kafka.Message{Key: c.AppendKey(nil), Value: c.AppendJSON(make([]byte, 0, 400))})
		if len(msgs) == cap(msgs) {
			flush()
		}
	}
	if len(msgs) > 0 {
		flush()
	}
}

// BenchmarkRebuild1M: 1,000,000 claims (of 1,000,000 users, per_user 1) in the
// embedded broker's topic; each iteration starts a verifier and waits until it is
// ready. It reports the verifier's own shake_verifier_rebuild_seconds (time from New
// to ready). Run: go test -run XXX -bench Rebuild1M -benchtime 2x ./verifier/
func BenchmarkRebuild1M(b *testing.B) {
	defer setPerUser(1)()
	const n = 1_000_000
	f := newFixture(b, 2, n/2)
	br, err := broker.Start(broker.Config{Listen: "127.0.0.1:0", Partitions: 8})
	must(b, err)
	defer br.Close()
	cs := make([]ticket.Claim, 0, n)
	for id := uint64(1); id <= n; id++ {
		cs = append(cs, f.claim(id, id*7))
	}
	start := time.Now()
	produceClaims(b, br.Addr(), f, cs)
	b.Logf("produced %d claims in %v", n, time.Since(start))
	cs = nil
	var secs, cpu float64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		cpu0 := processCPU()
		cfg := f.config([]string{br.Addr()})
		cfg.Spool = filepath.Join(f.dir, fmt.Sprintf("spool-%d", i))
		s, err := New(cfg)
		must(b, err)
		deadline := time.Now().Add(120 * time.Second)
		for !s.rb.done.Load() && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		if !s.rb.done.Load() {
			b.Fatal("no rebuild within 120 s")
		}
		if got := s.rb.counts[restoreCounted].Load(); got != n {
			b.Fatalf("rebuild counted %d claims, want %d", got, n)
		}
		secs += s.metricValue("shake_verifier_rebuild_seconds")
		cpu += processCPU() - cpu0
		s.Close()
	}
	b.ReportMetric(secs/float64(b.N), "rebuild_s")
	// The CPU this process (verifier and in-process broker) spent per rebuild: on a
	// shared machine the wall time above also holds the time other processes had the
	// cores.
	b.ReportMetric(cpu/float64(b.N), "cpu_s")
}

// processCPU returns the user and system CPU seconds this process has used.
func processCPU() float64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

// metricValue reads one unlabelled metric from the server's registry.
func (s *Server) metricValue(name string) float64 {
	var buf bytes.Buffer
	s.cfg.Registry.WriteTo(&buf)
	for _, l := range strings.Split(buf.String(), "\n") {
		if v, ok := strings.CutPrefix(l, name+" "); ok {
			var x float64
			fmt.Sscan(v, &x)
			return x
		}
	}
	return -1
}

// TestRebuildIgnoresUntrustedClaims: anyone who can produce to the topic (kcat) writes
// claims that would, if believed, lock users out (limit_reached) or take their tickets
// (already_opened): unsigned, signed with another generation's key, tampered after
// signing, of another campaign, outside the manifest, or not claims at all. The rebuild
// counts none of them: every victim opens its ticket afterwards.
func TestRebuildIgnoresUntrustedClaims(t *testing.T) {
	defer setPerUser(1)()
	f := newFixture(t, 1, 100)
	other := newFixture(t, 1, 100) // same campaign id, another generation and key
	b := startBroker(t)
	unsigned := f.claim(1, 101)
	oldGen := f.claim(2, 102)
	other.sign(&oldGen)
	tampered := f.claim(3, 103)
	f.sign(&tampered)
	tampered.UID = 203 // the signature was for uid 103
	otherCampaign := f.claim(4, 104)
	otherCampaign.Campaign = "another-one"
	outside := f.claim(5, 105)
	outside.Ticket = 1000
	w := &kafka.Writer{Addr: kafka.TCP(b.Addr()), Topic: broker.DefaultTopic, Balancer: &kafka.Hash{},
		RequiredAcks: kafka.RequireAll, BatchTimeout: time.Millisecond}
	var msgs []kafka.Message
	for _, c := range []ticket.Claim{unsigned, oldGen, tampered, otherCampaign, outside} {
		msgs = append(msgs, kafka.Message{Key: c.AppendKey(nil), Value: c.AppendJSON(nil)})
	}
	msgs = append(msgs, kafka.Message{Key: []byte("6"), Value: []byte(`{"v":1,"campaign":"cny-2026","ticket":"6"`)})
	must(t, w.WriteMessages(context.Background(), msgs...))
	w.Close()
	s := newServer(t, f, f.config([]string{b.Addr()}))
	want := map[restoreResult]uint64{restoreBadClaim: 4, restoreOtherCampaign: 1, restoreMalformed: 1}
	for r := restoreResult(0); r < numRestoreResults; r++ {
		if got := s.rb.counts[r].Load(); got != want[r] {
			t.Errorf("rebuild %s: %d, want %d", restoreNames[r], got, want[r])
		}
	}
	// Had they counted, the uids they name would be limit_reached on another ticket, and
	// the tickets they name already_opened for their real holders.
	for k, uid := range []uint64{101, 102, 203, 104, 105} {
		id := uint64(k + 1)
		if st, got := do(s, "POST", "/v1/open", f.bearer(uid), body(f.tok(id+10, uid))); st != 200 {
			t.Errorf("uid %d named in a forged claim, its own ticket %d: %d %s", uid, id+10, st, got)
		}
		if st, got := do(s, "POST", "/v1/open", f.bearer(uid+1000), body(f.tok(id, uid+1000))); st != 200 {
			t.Errorf("ticket %d named in a forged claim, its holder uid %d: %d %s", id, uid+1000, st, got)
		}
	}
}
