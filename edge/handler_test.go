package edge

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"shake/ticket"
)

// startEdge builds an edge on f and starts its reserver; it is stopped at cleanup.
func startEdge(t testing.TB, f *fixture, mod func(*Config)) *Server {
	t.Helper()
	cfg := f.config(filepath.Join(f.dir, "edge.state"))
	if mod != nil {
		mod(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	stop, err := s.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stop() })
	return s
}

type wonBody struct {
	Result      string  `json:"result"`
	Token       string  `json:"token"`
	Campaign    string  `json:"campaign"`
	ExpiresAt   string  `json:"expires_at"`
	NextRoundAt *string `json:"next_round_at"`
	RetryAfter  int     `json:"retry_after_ms"`
	Error       string  `json:"error"`
}

func decode(t testing.TB, body string) wonBody {
	t.Helper()
	var w wonBody
	if err := json.Unmarshal([]byte(body), &w); err != nil {
		t.Fatalf("not JSON: %q", body)
	}
	return w
}

func TestHandlerEveryStatus(t *testing.T) {
	f := newFixture(t, shardSpec{count: 3})
	s := startEdge(t, f, nil)
	h := s.Handler()
	auth := "Bearer " + f.session(1)

	code, body, ctx := do(h, "POST", "/v1/shake", auth, nil)
	w := decode(t, body)
	if code != 200 || w.Result != "won" || w.Campaign != "cny-2026" || len(w.Token) > 160 {
		t.Fatalf("won: %d %s", code, body)
	}
	if ct := string(ctx.Response.Header.ContentType()); ct != "application/json" {
		t.Fatalf("content type %q", ct)
	}
	exp, err := time.Parse(time.RFC3339, w.ExpiresAt)
	if err != nil || exp.Before(time.Now().Add(86000*time.Second)) {
		t.Fatalf("expires_at %q: %v", w.ExpiresAt, err)
	}
	f.checkToken(t, w.Token, 1)
	// Same user again: per-user cap of 1.
	if code, body, _ := do(h, "POST", "/v1/shake", auth, nil); code != 200 || body != `{"result":"miss"}` {
		t.Fatalf("second shake: %d %s", code, body)
	}
	for uid := uint64(2); uid <= 3; uid++ {
		if code, body, _ := do(h, "POST", "/v1/shake", "Bearer "+f.session(uid), nil); decode(t, body).Result != "won" || code != 200 {
			t.Fatalf("uid %d: %s", uid, body)
		}
	}
	// Pool empty.
	if _, body, _ := do(h, "POST", "/v1/shake", "Bearer "+f.session(9), nil); body != `{"result":"miss"}` {
		t.Fatalf("empty pool: %s", body)
	}

	cases := []struct {
		name, method, path, auth string
		body                     []byte
		code                     int
		want                     string
	}{
		{"get", "GET", "/v1/shake", auth, nil, 405, `{"error":"method_not_allowed"}`},
		{"put", "PUT", "/v1/shake", auth, nil, 405, `{"error":"method_not_allowed"}`},
		{"body", "POST", "/v1/shake", auth, []byte(`{}`), 413, `{"error":"too_large"}`},
		{"unknown path", "POST", "/v1/shakes", auth, nil, 404, `{"error":"not_found"}`},
		{"root", "GET", "/", "", nil, 404, `{"error":"not_found"}`},
	}
	for _, c := range cases {
		code, body, ctx := do(h, c.method, c.path, c.auth, c.body)
		if code != c.code || body != c.want {
			t.Errorf("%s: %d %s, want %d %s", c.name, code, body, c.code, c.want)
		}
		if c.code == 405 && string(ctx.Response.Header.Peek("Allow")) != "POST" {
			t.Errorf("%s: Allow %q", c.name, ctx.Response.Header.Peek("Allow"))
		}
	}
}

func TestHandlerBadSessionsAre401(t *testing.T) {
	f := newFixture(t, shardSpec{count: 10})
	s := startEdge(t, f, nil)
	h := s.Handler()
	good := f.session(5)
	otherKey, _ := ticket.NewSessionKey(ticket.NewKey())
	forged := []byte(good)
	forged[len(forged)-3] ^= 1
	tamperedUID := "6" + good[1:]
	bad := map[string]string{
		"missing":      "",
		"no bearer":    good,
		"basic":        "Basic " + good,
		"empty bearer": "Bearer ",
		"garbage":      "Bearer !!!not-a-token!!!",
		"forged sig":   "Bearer " + string(forged),
		"tampered uid": "Bearer " + tamperedUID,
		"expired":      "Bearer " + string(f.sess.Mint(nil, 5, time.Now().Add(-time.Second).Unix())),
		"other key":    "Bearer " + string(otherKey.Mint(nil, 5, time.Now().Add(time.Hour).Unix())),
		"too long":     "Bearer " + strings.Repeat("1", 200),
		"leading zero": "Bearer 05" + good[1:],
	}
	for name, a := range bad {
		code, body, _ := do(h, "POST", "/v1/shake", a, nil)
		if code != 401 || body != `{"error":"unauthorized"}` {
			t.Errorf("%s: %d %s", name, code, body)
		}
	}
	if code, body, _ := do(h, "POST", "/v1/shake", "bearer "+good, nil); code != 200 || decode(t, body).Result != "won" {
		t.Fatalf("good session (lower-case scheme): %d %s", code, body)
	}
	if s.m.unauthorized.Value() != uint64(len(bad)) {
		t.Fatalf("unauthorized counter %d", s.m.unauthorized.Value())
	}
}

func TestHandlerOverload429(t *testing.T) {
	f := newFixture(t, shardSpec{count: 10})
	s := startEdge(t, f, func(c *Config) { c.MaxInFlight = 2; c.RetryAfter = 1500 * time.Millisecond })
	s.inflight.Add(2) // two requests "inside"
	code, body, ctx := do(s.Handler(), "POST", "/v1/shake", "Bearer "+f.session(1), nil)
	if code != 429 || body != `{"result":"retry","retry_after_ms":1500}` || string(ctx.Response.Header.Peek("Retry-After")) != "2" {
		t.Fatalf("overload: %d %s Retry-After %q", code, body, ctx.Response.Header.Peek("Retry-After"))
	}
	s.inflight.Add(-2)
	if code, _, _ := do(s.Handler(), "POST", "/v1/shake", "Bearer "+f.session(1), nil); code != 200 {
		t.Fatalf("after overload: %d", code)
	}
}

func TestHandlerRoundsClosedAndPaced(t *testing.T) {
	start := time.Now().Add(time.Hour).UTC().Truncate(time.Second)
	rounds := []ticket.RoundWindow{
		{Index: 0, Start: start, End: start.Add(100 * time.Second)},
		{Index: 1, Start: start.Add(200 * time.Second), End: start.Add(300 * time.Second)},
	}
	f := newFixture(t, shardSpec{count: 2000, rounds: rounds, perRnd: []uint64{1000, 1000}})
	var now atomic.Int64
	now.Store(start.Add(-time.Minute).UnixNano())
	s := startEdge(t, f, func(c *Config) {
		c.Pace = true
		c.PerUser = 0
		c.Now = func() time.Time { return time.Unix(0, now.Load()) }
	})
	h := s.Handler()
	shake := func(uid uint64) wonBody {
		// Session expiry is checked against the edge's clock; mint far ahead.
		tok := f.sess.Mint(nil, uid, time.Unix(0, now.Load()).Add(time.Hour).Unix())
		code, body, _ := do(h, "POST", "/v1/shake", "Bearer "+string(tok), nil)
		if code != 200 {
			t.Fatalf("status %d %s", code, body)
		}
		return decode(t, body)
	}
	w := shake(1)
	if w.Result != "closed" || w.NextRoundAt == nil || *w.NextRoundAt != start.Format(time.RFC3339) {
		t.Fatalf("before round 0: %+v", w)
	}
	// 10% into round 0 with pacing: about 100 (+1 burst) tickets, not 1000.
	now.Store(start.Add(10 * time.Second).UnixNano())
	won := 0
	for uid := uint64(1); uid <= 1000; uid++ {
		if r := shake(uid); r.Result == "won" {
			id := f.checkToken(t, r.Token, uid)
			if f.hdr.RoundOf(id) != 0 {
				t.Fatalf("ticket %d not of round 0", id)
			}
			won++
		}
	}
	if won != 101 {
		t.Fatalf("paced: %d won at 10%% of the window, want 101", won)
	}
	// Between rounds: closed with the next start.
	now.Store(start.Add(150 * time.Second).UnixNano())
	if w := shake(1); w.Result != "closed" || *w.NextRoundAt != rounds[1].Start.Format(time.RFC3339) {
		t.Fatalf("between rounds: %+v", w)
	}
	// Round 1's tickets are its own; round 0's leftovers are not carried over.
	now.Store(start.Add(299 * time.Second).UnixNano())
	if r := shake(1); r.Result != "won" || f.hdr.RoundOf(f.checkToken(t, r.Token, 1)) != 1 {
		t.Fatalf("round 1: %+v", r)
	}
	// After the last round: closed for good.
	now.Store(start.Add(301 * time.Second).UnixNano())
	if w := shake(1); w.Result != "closed" || w.NextRoundAt != nil {
		t.Fatalf("after last round: %+v", w)
	}
}

func TestAlwaysOpenStopsAtIssueUntil(t *testing.T) {
	f := newFixture(t, shardSpec{count: 10, created: time.Now().Add(-2 * time.Hour).UTC(), ttl: 3600})
	s := startEdge(t, f, nil)
	if _, body, _ := do(s.Handler(), "POST", "/v1/shake", "Bearer "+f.session(1), nil); body != `{"result":"closed","next_round_at":null}` {
		t.Fatalf("after created_at+ttl: %s", body)
	}
}

func TestNewRefusesBadInputs(t *testing.T) {
	f := newFixture(t, shardSpec{count: 10})
	g := newFixture(t, shardSpec{count: 10, shard: 1, shards: 2})
	state := filepath.Join(f.dir, "edge.state")
	corrupt := filepath.Join(f.dir, "corrupt.tickets")
	b, _ := os.ReadFile(f.tickets)
	b[len(b)-40] ^= 0xff
	os.WriteFile(corrupt, b, 0o600)
	shortKey := filepath.Join(f.dir, "short.key")
	os.WriteFile(shortKey, []byte("short"), 0o600)
	wrongName := filepath.Join(f.dir, "edge-001.key")
	os.WriteFile(wrongName, f.shardKey, 0o600)
	cases := []struct {
		name string
		mod  func(*Config)
		want error
	}{
		{"missing shard", func(c *Config) { c.Tickets = filepath.Join(f.dir, "nope.tickets") }, ErrShard},
		{"corrupt shard", func(c *Config) { c.Tickets = corrupt }, ErrShard},
		{"short key", func(c *Config) { c.Key = shortKey }, ErrKey},
		{"another shard's key file", func(c *Config) { c.Key = wrongName }, ErrKey},
		{"missing session key", func(c *Config) { c.SessionKey = filepath.Join(f.dir, "none") }, ErrSessionKey},
		{"unwritable state", func(c *Config) { c.State = filepath.Join(f.dir, "no", "dir", "s") }, ErrState},
		{"missing state", func(c *Config) { c.InitState = false; c.State = filepath.Join(f.dir, "gone.state") }, ErrStateMissing},
		{"bad listen", func(c *Config) { c.Listen = "256.0.0.1:bad" }, ErrListen},
		{"per-user too big", func(c *Config) { c.PerUser = MaxPerUser + 1 }, ErrConfig},
	}
	for _, c := range cases {
		cfg := f.config(state)
		c.mod(&cfg)
		s, err := New(cfg)
		if !errors.Is(err, c.want) {
			if s != nil {
				s.Close()
			}
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
	// A state file from another shard.
	state = filepath.Join(f.dir, "foreign.state")
	s, err := New(g.config(state))
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if _, err := New(f.resume(state)); !errors.Is(err, ErrStateForeign) {
		t.Fatalf("foreign state: %v", err)
	}
}

// TestServeOverHTTP runs the real server (Run) on loopback: health, readiness, metrics,
// JSON errors from the wrapper, and a graceful stop that syncs the state.
func TestServeOverHTTP(t *testing.T) {
	f := newFixture(t, shardSpec{count: 100})
	state := filepath.Join(f.dir, "edge.state")
	s, err := New(f.config(state))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	c := &fasthttp.Client{}
	url := "http://" + s.Addr()
	get := func(method, path, auth string, body []byte) (int, string) {
		req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		defer fasthttp.ReleaseRequest(req)
		defer fasthttp.ReleaseResponse(resp)
		req.Header.SetMethod(method)
		req.SetRequestURI(url + path)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		req.SetBody(body)
		if err := c.DoTimeout(req, resp, 5*time.Second); err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		return resp.StatusCode(), string(resp.Body())
	}
	for i := 0; i < 200 && func() bool { code, _ := get("GET", "/readyz", "", nil); return code != 200 }(); i++ {
		time.Sleep(5 * time.Millisecond)
	}
	if code, _ := get("GET", "/healthz", "", nil); code != 200 {
		t.Fatal("healthz")
	}
	for uid := uint64(1); uid <= 30; uid++ {
		if code, body := get("POST", "/v1/shake", "Bearer "+f.session(uid), nil); code != 200 || !strings.Contains(body, `"won"`) {
			t.Fatalf("shake: %d %s", code, body)
		}
	}
	if code, body := get("POST", "/v1/shake", "Bearer "+f.session(1), make([]byte, 5000)); code != 413 || !strings.Contains(body, "too_large") {
		t.Fatalf("big body: %d %s", code, body)
	}
	if code, _ := get("GET", "/metrics", "", nil); code != 404 {
		t.Errorf("public /metrics: %d, want 404", code)
	}
	url = "http://" + s.AdminAddr()
	_, metrics := get("GET", "/metrics", "", nil)
	url = "http://" + s.Addr()
	for _, want := range []string{
		`shake_edge_shakes_total{result="won"} 30`, "shake_edge_tickets_issued_total 30",
		"shake_edge_tickets_lost_total 0", "shake_edge_tickets_left 70", `shake_edge_round_tickets_left{round="0"} 70`,
		"shake_edge_reservations_total", "shake_edge_shake_duration_seconds_count 30", "shake_edge_in_flight",
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// Clean stop: the exact position is recorded, nothing lost, and a restart resumes.
	s2, err := New(f.resume(state))
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if issued, lost, left := s2.disp.totals(); issued != 30 || lost != 0 || left != 70 {
		t.Fatalf("after restart: issued %d lost %d left %d", issued, lost, left)
	}
}

// TestGarbageRequests throws random bytes at a live server: it answers or closes the
// connection, and keeps serving.
func TestGarbageRequests(t *testing.T) {
	f := newFixture(t, shardSpec{count: 100})
	s, err := New(f.config(filepath.Join(f.dir, "edge.state")))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	defer func() { cancel(); <-done }()
	rng := rand.New(rand.NewPCG(1, 2))
	prefixes := []string{"", "POST /v1/shake HTTP/1.1\r\n", "POST /v1/shake HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ", "GET /metrics HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n"}
	reqs := make(chan []byte, 300)
	for i := 0; i < 300; i++ {
		b := make([]byte, rng.IntN(600))
		for j := range b {
			b[j] = byte(rng.IntN(256))
		}
		reqs <- append([]byte(prefixes[i%len(prefixes)]), b...)
	}
	close(reqs)
	var wg sync.WaitGroup
	for w := 0; w < 16; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for b := range reqs {
				sendRaw(t, s.Addr(), b)
			}
		}()
	}
	wg.Wait()
	resp := sendRaw(t, s.Addr(), []byte("POST /v1/shake HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "+f.session(1)+"\r\nContent-Length: 0\r\n\r\n"))
	if !strings.HasPrefix(resp, "HTTP/1.1 200") || !strings.Contains(resp, `"won"`) {
		t.Fatalf("server unhealthy after garbage: %q", resp)
	}
}

func TestTokensAreUniqueUnderConcurrency(t *testing.T) {
	f := newFixture(t, shardSpec{count: 3000})
	s := startEdge(t, f, func(c *Config) { c.PerUser = 0 })
	h := s.Handler()
	tokens := make(chan string, 4000)
	errs := make(chan error, 8)
	for g := 0; g < 8; g++ {
		go func(g int) {
			for i := 0; i < 500; i++ {
				_, body, _ := do(h, "POST", "/v1/shake", "Bearer "+f.session(uint64(g)), nil)
				var w wonBody
				if err := json.Unmarshal([]byte(body), &w); err != nil {
					errs <- err
					return
				}
				if w.Result == "won" {
					tokens <- w.Token + "|" + strconv.Itoa(g)
				}
			}
			errs <- nil
		}(g)
	}
	for g := 0; g < 8; g++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	close(tokens)
	seen := map[uint64]bool{}
	for tk := range tokens {
		tok, uid, _ := strings.Cut(tk, "|")
		u, _ := strconv.ParseUint(uid, 10, 64)
		id := f.checkToken(t, tok, u)
		if seen[id] {
			t.Fatalf("ticket %d issued twice", id)
		}
		seen[id] = true
	}
	if len(seen) != 3000 {
		t.Fatalf("%d tickets issued, want 3000", len(seen))
	}
}

func TestWinPathAllocatesNothing(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are not meaningful under -race (sync.Pool drops items)")
	}
	const n = 2000
	f := newFixture(t, shardSpec{count: n + 100})
	s := startEdge(t, f, nil)
	h := s.Handler()
	auths := make([][]byte, n+1)
	for i := range auths {
		auths[i] = []byte("Bearer " + f.session(uint64(i+1)))
	}
	if a := winAllocs(t, h, auths); a != 0 {
		t.Fatalf("win path: %.2f allocs per request", a)
	}
}

// winAllocs shakes with each of auths in turn (every answer must be a win) and returns
// the allocations per request, after one to warm the pools.
func winAllocs(t *testing.T, h fasthttp.RequestHandler, auths [][]byte) float64 {
	t.Helper()
	var ctx fasthttp.RequestCtx
	ctx.Request.Header.SetMethod("POST")
	ctx.Request.SetRequestURI("/v1/shake")
	i := 0
	step := func() {
		ctx.Request.Header.SetBytesV("Authorization", auths[i])
		i++
		ctx.Response.Reset()
		h(&ctx)
		if ctx.Response.StatusCode() != 200 || !bytes.Contains(ctx.Response.Body(), []byte(`"won"`)) {
			t.Fatalf("not won: %s", ctx.Response.Body())
		}
	}
	step() // warm the pools
	return testing.AllocsPerRun(len(auths)-11, step)
}
