package bench

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"shake/ticket"
)

func TestArrivalOffset(t *testing.T) {
	// Constant rate: arrival i is due at i/rate.
	for _, i := range []int64{0, 1, 99, 1000} {
		want := time.Duration(float64(i) / 250 * float64(time.Second))
		if got := arrivalOffset(i, 250, 0); got != want {
			t.Fatalf("offset(%d) = %v, want %v", i, got, want)
		}
	}
	// Ramp: rate*ramp/2 arrivals during the ramp, then the constant rate.
	rate, ramp := 1000.0, 2*time.Second
	if got := arrivalOffset(1000, rate, ramp); got != ramp {
		t.Fatalf("end of ramp at %v, want %v", got, ramp)
	}
	if got := arrivalOffset(250, rate, ramp); got != time.Second {
		t.Fatalf("a quarter of the ramp's arrivals by %v, want 1s", got)
	}
	if got := arrivalOffset(1500, rate, ramp); got != ramp+500*time.Millisecond {
		t.Fatalf("offset after ramp %v", got)
	}
	prev := time.Duration(-1)
	for i := int64(0); i < 3000; i++ {
		o := arrivalOffset(i, rate, ramp)
		if o < prev {
			t.Fatalf("offsets not monotonic at %d", i)
		}
		prev = o
	}
}

func TestConfigErrors(t *testing.T) {
	good := Config{EdgeURLs: []string{"http://127.0.0.1:1"}, SessionKey: testSessionKey, Duration: time.Second}
	bad := []func(*Config){
		func(c *Config) { c.EdgeURLs = nil },
		func(c *Config) { c.SessionKey = []byte("short") },
		func(c *Config) { c.Users = -1 },
		func(c *Config) { c.Users = MaxUsers + 1 },
		func(c *Config) { c.Rate = -1 },
		func(c *Config) { c.Rate = math.NaN() },
		func(c *Config) { c.Duration = 0 },
		func(c *Config) { c.Ramp = 2 * time.Second },
		func(c *Config) { c.Think = -1 },
		func(c *Config) { c.Connections = -3 },
		func(c *Config) { c.EdgeURLs = []string{"ftp://x"} },
		func(c *Config) { c.VerifierURL = "http://" },
	}
	for i, mut := range bad {
		c := good
		mut(&c)
		if _, err := Run(context.Background(), c); err == nil {
			t.Errorf("case %d: no error", i)
		}
	}
}

// fakeChain is an in-process edge and verifier that answer per docs/api.md and count what
// they answered, so the bench's counts can be checked against the servers' own.
type fakeChain struct {
	sk                        *ticket.SessionKey
	won, miss, closed, retry  atomic.Int64
	unauth, opened, openedSum atomic.Int64
	openCalls                 atomic.Int64
	mu                        sync.Mutex
	issued                    map[string]uint64 // token -> uid
}

// edge answers by uid: uid%5 == 0 won, 1 miss, 2 closed, 3 retry (429), 4 unauthorized.
func (f *fakeChain) edge(ctx *fasthttp.RequestCtx) {
	if string(ctx.Path()) != "/v1/shake" || !ctx.IsPost() {
		ctx.Error(`{"error":"not_found"}`, 404)
		return
	}
	uid, ok := sessionUID(f.sk, ctx)
	if !ok {
		ctx.Error(`{"error":"unauthorized"}`, 401)
		return
	}
	ctx.SetContentType("application/json")
	switch uid % 5 {
	case 0:
		f.won.Add(1)
		tok := fmt.Sprintf("tok-%d-%d", uid, f.won.Load())
		f.mu.Lock()
		f.issued[tok] = uid
		f.mu.Unlock()
		fmt.Fprintf(ctx, `{"result":"won","token":%q,"campaign":"gala","expires_at":"2030-01-01T00:00:00Z"}`, tok)
	case 1:
		f.miss.Add(1)
		ctx.WriteString(`{"result":"miss"}`)
	case 2:
		f.closed.Add(1)
		ctx.WriteString(`{"result":"closed","next_round_at":null}`)
	case 3:
		f.retry.Add(1)
		ctx.SetStatusCode(429)
		ctx.Response.Header.Set("Retry-After", "1")
		ctx.WriteString(`{"result":"retry","retry_after_ms":20}`)
	case 4:
		f.unauth.Add(1)
		ctx.SetStatusCode(401)
		ctx.WriteString(`{"error":"unauthorized"}`)
	}
}

func (f *fakeChain) verifier(ctx *fasthttp.RequestCtx) {
	f.openCalls.Add(1)
	uid, ok := sessionUID(f.sk, ctx)
	if !ok {
		ctx.Error(`{"error":"unauthorized"}`, 401)
		return
	}
	tok, ok := jsonField(ctx.PostBody(), keyToken)
	f.mu.Lock()
	owner, known := f.issued[string(tok)]
	f.mu.Unlock()
	ctx.SetContentType("application/json")
	switch {
	case !ok || !known:
		ctx.SetStatusCode(422)
		ctx.WriteString(`{"error":"invalid_token"}`)
	case owner != uid:
		ctx.SetStatusCode(403)
		ctx.WriteString(`{"error":"not_your_ticket"}`)
	default:
		amount := int64(uid * 10)
		f.opened.Add(1)
		f.openedSum.Add(amount)
		// The ticket id is the uid: the test checks the bench carried it back.
		fmt.Fprintf(ctx, `{"result":"opened","campaign":"gala","ticket":"%d","amount":%d,"currency":"CNY"}`, uid, amount)
	}
}

func newFakeChain(t *testing.T) (*fakeChain, string, string) {
	sk, err := ticket.NewSessionKey(testSessionKey)
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeChain{sk: sk, issued: map[string]uint64{}}
	return f, startFake(t, f.edge), startFake(t, f.verifier)
}

func TestBenchCountsResults(t *testing.T) {
	f, edge, verifier := newFakeChain(t)
	edge2 := startFake(t, f.edge)
	res, err := Run(context.Background(), Config{
		EdgeURLs: []string{edge, edge2}, VerifierURL: verifier, SessionKey: testSessionKey,
		Users: 50, Rate: 400, Duration: 500 * time.Millisecond, Think: 20 * time.Millisecond, Seed: 1,
		MaxOpened: 1000,
	})
	if err != nil {
		t.Fatal(err)
	}
	s := res.Shake
	if res.Arrivals != 200 {
		t.Fatalf("arrivals %d, want 200 (400/s for 0.5s)", res.Arrivals)
	}
	check := func(name string, got, want int64) {
		t.Helper()
		if got != want {
			t.Errorf("%s: bench counted %d, servers answered %d", name, got, want)
		}
	}
	check("won", s.Results["won"], f.won.Load())
	check("miss", s.Results["miss"], f.miss.Load())
	check("closed", s.Results["closed"], f.closed.Load())
	check("retry", s.Results["retry"], f.retry.Load())
	check("unauthorized", s.Errors["unauthorized"], f.unauth.Load())
	check("status 429", s.Status["429"], f.retry.Load())
	check("status 401", s.Status["401"], f.unauth.Load())
	// Each 429 is retried exactly once, and the retry (same uid) is answered 429 again.
	retriedShakes := s.Results["retry"] / 2
	check("shake requests", s.Requests, res.Arrivals+retriedShakes)
	check("shake responses", s.Responses, s.Requests)
	check("latency samples", s.Latency.Count, s.Responses)
	if s.Results["retry"]%2 != 0 || s.Results["retry"] == 0 {
		t.Errorf("retry count %d: every 429 should be retried once", s.Results["retry"])
	}
	o := res.Open
	if o == nil {
		t.Fatal("no open endpoint result")
	}
	check("opens sent", o.Requests, f.openCalls.Load())
	check("opened", o.Results["opened"], f.opened.Load())
	check("opened = won", o.Results["opened"], s.Results["won"])
	check("opened count", res.OpenedN, f.opened.Load())
	check("opened amount", res.OpenedSum, f.openedSum.Load())
	if len(o.Errors) != 0 || res.OpenedTruncated || int64(len(res.Opened)) != res.OpenedN {
		t.Errorf("open errors %v truncated %v list %d", o.Errors, res.OpenedTruncated, len(res.Opened))
	}
	var sum int64
	for _, ot := range res.Opened {
		if ot.Ticket != ot.UID || ot.Amount != int64(ot.UID*10) || ot.UID%5 != 0 {
			t.Fatalf("opened ticket %+v does not match what the verifier answered", ot)
		}
		sum += ot.Amount
	}
	check("opened list sum", sum, res.OpenedSum)
	if res.Campaign != "gala" {
		t.Errorf("campaign %q", res.Campaign)
	}
	// Opens happen at least the think time after the win, and latency counts from then.
	if o.Latency.Max <= 0 || o.Latency.Max > time.Second {
		t.Errorf("open latency %+v", o.Latency)
	}
	if len(s.Series) == 0 {
		t.Error("no time series")
	}
	var seriesN, won, miss, closed, retry, openedAmount int64
	for _, p := range s.Series {
		seriesN += p.Count
		won, miss, closed, retry = won+p.Won, miss+p.Miss, closed+p.Closed, retry+p.Retry
	}
	check("series total", seriesN, s.Latency.Count)
	// Every result class is in the per-second series, and the opened money too.
	check("series won", won, s.Results["won"])
	check("series miss", miss, s.Results["miss"])
	check("series closed", closed, s.Results["closed"])
	check("series retry", retry, s.Results["retry"])
	for _, p := range o.Series {
		openedAmount += p.Amount
	}
	check("series opened amount", openedAmount, res.OpenedSum)
}

func TestBenchNoRetry(t *testing.T) {
	f, edge, _ := newFakeChain(t)
	res, err := Run(context.Background(), Config{
		EdgeURLs: []string{edge}, SessionKey: testSessionKey, Users: 10, Rate: 200,
		Duration: 300 * time.Millisecond, NoRetry: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Open != nil || res.Shake.Requests != res.Arrivals || res.Shake.Results["retry"] != f.retry.Load() {
		t.Fatalf("requests %d arrivals %d retry %d/%d", res.Shake.Requests, res.Arrivals, res.Shake.Results["retry"], f.retry.Load())
	}
}

func TestBenchMaxOpenedBound(t *testing.T) {
	_, edge, verifier := newFakeChain(t)
	res, err := Run(context.Background(), Config{
		EdgeURLs: []string{edge}, VerifierURL: verifier, SessionKey: testSessionKey, Users: 100,
		Rate: 400, Duration: 300 * time.Millisecond, MaxOpened: 3,
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.OpenedN <= 3 || len(res.Opened) != 3 || !res.OpenedTruncated {
		t.Fatalf("opened %d, list %d, truncated %v", res.OpenedN, len(res.Opened), res.OpenedTruncated)
	}
}

// TestStallShowsInP99 is the coordinated-omission test: the server stalls every request
// for 200 ms during a 400 ms window, and the client has a single connection, so only a
// couple of requests are even sent during the stall. Measured from their intended send
// times, the arrivals queued behind the stall must still put it in the p99.
func TestStallShowsInP99(t *testing.T) {
	var stallFrom atomic.Int64 // unix ns
	var sentInStall atomic.Int64
	const window = 400 * time.Millisecond
	url := startFake(t, func(ctx *fasthttp.RequestCtx) {
		now := time.Now().UnixNano()
		if from := stallFrom.Load(); from != 0 && now >= from && now < from+int64(window) {
			sentInStall.Add(1)
			time.Sleep(200 * time.Millisecond)
		}
		ctx.SetContentType("application/json")
		ctx.WriteString(`{"result":"miss"}`)
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-time.After(500 * time.Millisecond):
			stallFrom.Store(time.Now().UnixNano())
		case <-ctx.Done():
		}
	}()
	res, err := Run(ctx, Config{
		EdgeURLs: []string{url}, SessionKey: testSessionKey, Users: 10, Rate: 200,
		Duration: 2 * time.Second, Connections: 1,
	})
	if err != nil {
		t.Fatal(err)
	}
	s := res.Shake
	t.Logf("sent during stall %d of %d; latency %+v", sentInStall.Load(), s.Requests, s.Latency)
	if n := sentInStall.Load(); n == 0 || n > 4 {
		t.Fatalf("%d requests reached the server during the stall, want a few", n)
	}
	if s.Errors["dropped"] != 0 || s.Responses != 400 {
		t.Fatalf("responses %d errors %v", s.Responses, s.Errors)
	}
	// About 80 of 400 arrivals fall in the stall window and wait up to 400 ms.
	if s.Latency.P99 < 150*time.Millisecond || s.Latency.P90 < 20*time.Millisecond {
		t.Fatalf("stall hidden: p90 %v p99 %v", s.Latency.P90, s.Latency.P99)
	}
	if s.Latency.P50 > 50*time.Millisecond {
		t.Fatalf("p50 %v: most requests were not in the stall", s.Latency.P50)
	}
	var worst time.Duration
	for _, p := range s.Series {
		worst = max(worst, p.P99)
	}
	if worst < 150*time.Millisecond {
		t.Fatalf("per-second p99 never shows the stall: %+v", s.Series)
	}
}

func TestMaxInFlightDrops(t *testing.T) {
	url := startFake(t, func(ctx *fasthttp.RequestCtx) {
		time.Sleep(100 * time.Millisecond)
		ctx.WriteString(`{"result":"miss"}`)
	})
	res, err := Run(context.Background(), Config{
		EdgeURLs: []string{url}, SessionKey: testSessionKey, Users: 10, Rate: 200,
		Duration: 500 * time.Millisecond, MaxInFlight: 2, Connections: 2,
	})
	if err != nil {
		t.Fatal(err)
	}
	s := res.Shake
	d := s.Errors["dropped"]
	if d == 0 || s.Responses == 0 || s.Requests != res.Arrivals || d+s.Responses != s.Requests {
		t.Fatalf("arrivals %d requests %d responses %d dropped %d", res.Arrivals, s.Requests, s.Responses, d)
	}
	if s.Responses > 12 {
		t.Fatalf("%d responses: the bound of 2 in flight for 0.5s at 100ms each allows about 10", s.Responses)
	}
	if s.Latency.Count != s.Requests {
		t.Fatalf("latency samples %d, want one per request %d", s.Latency.Count, s.Requests)
	}
}

func TestClosedLoop(t *testing.T) {
	f, edge, verifier := newFakeChain(t)
	res, err := Run(context.Background(), Config{
		EdgeURLs: []string{edge}, VerifierURL: verifier, SessionKey: testSessionKey, Users: 100,
		Duration: 300 * time.Millisecond, Connections: 4,
	})
	if err != nil {
		t.Fatal(err)
	}
	s := res.Shake
	if res.Mode != "closed-loop" || s.Responses < 20 || s.Throughput <= 0 {
		t.Fatalf("mode %s responses %d throughput %v", res.Mode, s.Responses, s.Throughput)
	}
	if s.Results["won"] != f.won.Load() || res.OpenedN != f.opened.Load() || res.OpenedN != s.Results["won"] {
		t.Fatalf("won %d/%d opened %d/%d", s.Results["won"], f.won.Load(), res.OpenedN, f.opened.Load())
	}
}

func TestConnectErrorsCounted(t *testing.T) {
	res, err := Run(context.Background(), Config{
		EdgeURLs: []string{"http://127.0.0.1:1"}, SessionKey: testSessionKey, Users: 1, Rate: 100,
		Duration: 100 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Shake.Errors["connect"] != res.Arrivals || res.Arrivals != 10 {
		t.Fatalf("errors %v arrivals %d", res.Shake.Errors, res.Arrivals)
	}
}

func TestRunCancelled(t *testing.T) {
	_, edge, _ := newFakeChain(t)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	res, err := Run(ctx, Config{EdgeURLs: []string{edge}, SessionKey: testSessionKey, Rate: 100, Duration: time.Minute})
	if err == nil || res == nil || !res.Interrupted || time.Since(start) > 5*time.Second {
		t.Fatalf("res %v err %v after %v", res != nil, err, time.Since(start))
	}
	if res.Shake.Requests == 0 {
		t.Fatal("nothing reached before the cancel")
	}
}

func TestPendingQueueBoundAndOrder(t *testing.T) {
	var q pendingQueue
	q.init(5)
	base := time.Now()
	for _, ms := range []int{50, 10, 40, 20, 30} {
		j := job{intended: base.Add(time.Duration(ms) * time.Millisecond), uid: uint64(ms)}
		if !q.push(&j) {
			t.Fatal("push refused below the bound")
		}
	}
	extra := job{intended: base}
	if q.push(&extra) {
		t.Fatal("push accepted beyond the bound")
	}
	var j job
	if q.popDue(base.Add(5*time.Millisecond), &j) {
		t.Fatal("popped a job before it was due")
	}
	var got []uint64
	for q.popDue(base.Add(time.Second), &j) {
		got = append(got, j.uid)
	}
	if fmt.Sprint(got) != "[10 20 30 40 50]" {
		t.Fatalf("order %v", got)
	}
}

func TestFollowUpQueueFullCounted(t *testing.T) {
	r := &runner{cfg: Config{MaxPending: 1}, wake: make(chan struct{}, 1)}
	r.pending.init(1)
	ep := newEndpoint("open", nil, time.Now())
	j := job{intended: time.Now()}
	r.followUp(&j, ep)
	r.followUp(&j, ep)
	if r.pending.len() != 1 || ep.errors[errQueueFull].Load() != 1 {
		t.Fatalf("pending %d queue_full %d", r.pending.len(), ep.errors[errQueueFull].Load())
	}
}

func TestHotPathAllocatesNothing(t *testing.T) {
	r := &runner{cfg: Config{MaxPending: 1024, Think: time.Millisecond}, wake: make(chan struct{}, 1)}
	r.pending.init(1024)
	start := time.Now()
	r.shake = newEndpoint("shake", nil, start)
	r.open = newEndpoint("open", nil, start)
	r.verifier = &target{}
	c := &client{r: r}
	won := []byte(`{"result":"won","token":"` + strconv.Itoa(123456789) + `","campaign":"gala","expires_at":"2030-01-01T00:00:00Z"}`)
	miss := []byte(`{"result":"miss"}`)
	retry := []byte(`{"result":"retry","retry_after_ms":5}`)
	j := job{intended: start, uid: 7}
	var out job
	n := testing.AllocsPerRun(1000, func() {
		now := time.Now()
		_ = arrivalOffset(12345, 1000, time.Second)
		c.shakeAnswer(&j, 200, won, now)
		c.shakeAnswer(&j, 200, miss, now)
		c.shakeAnswer(&j, 429, retry, now)
		r.shake.record(now, time.Millisecond, false)
		for r.pending.popDue(now.Add(time.Hour), &out) {
		}
	})
	if n != 0 {
		t.Fatalf("hot path allocates %v per iteration", n)
	}
}

func BenchmarkSchedulerHotPath(b *testing.B) {
	// One arrival's worth of scheduler work: its offset, a follow-up through the pending
	// queue, and the latency record.
	r := &runner{cfg: Config{MaxPending: 1 << 16}, wake: make(chan struct{}, 1)}
	r.pending.init(1 << 16)
	start := time.Now()
	ep := newEndpoint("shake", nil, start)
	var out job
	b.ReportAllocs()
	for i := int64(0); b.Loop(); i++ {
		off := arrivalOffset(i, 50000, time.Second)
		j := job{intended: start.Add(off), uid: uint64(i)}
		r.pending.push(&j)
		r.pending.popDue(j.intended, &out)
		ep.record(start.Add(off), time.Duration(i&1023)*time.Microsecond, false)
	}
}

func BenchmarkShakeAnswer(b *testing.B) {
	r := &runner{cfg: Config{MaxPending: 1 << 16}, wake: make(chan struct{}, 1)}
	r.pending.init(1 << 16)
	r.shake = newEndpoint("shake", nil, time.Now())
	c := &client{r: r}
	body := []byte(`{"result":"won","token":"AQAAq2V4YW1wbGV0b2tlbmV4YW1wbGV0b2tlbmV4YW1wbGV0b2tlbmV4YW1wbGV0b2tlbg","campaign":"gala","expires_at":"2030-01-01T00:00:00Z"}`)
	j := job{uid: 1}
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		c.shakeAnswer(&j, 200, body, now)
	}
}
