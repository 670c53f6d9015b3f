package query

import (
	"context"
	"fmt"
	"net"
	"os"
	"runtime"
	rmetrics "runtime/metrics"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/valyala/fasthttp"

	"shake/internal/testpg"
	"shake/settler/ledger"
)

// loadPostings COPYs n postings of users uids into the PostgreSQL ledger at url: user
// u gets tickets u, u+users, u+2*users, ... spread over a day of settled times.
func loadPostings(tb testing.TB, url string, n, users int) {
	tb.Helper()
	ctx := context.Background()
	c, err := pgx.Connect(ctx, url)
	if err != nil {
		tb.Fatal(err)
	}
	defer c.Close(ctx)
	i := 0
	src := pgx.CopyFromFunc(func() ([]any, error) {
		if i >= n {
			return nil, nil
		}
		i++
		uid := uint64(1 + i%users)
		return []any{"perf", int64(i), int32(0), int32(0), int64(1 + i%2000), "CNY", fmt.Sprint(uid),
			"budget:perf", fmt.Sprintf("wallet:CNY:%d", uid), t0 + int64(i)*86_400, t0 + int64(i)*86_400}, nil
	})
	if _, err := c.CopyFrom(ctx, pgx.Identifier{"postings"}, []string{"campaign", "ticket", "shard", "round", "amount",
		"currency", "uid", "debit", "credit", "opened_at", "posted_at"}, src); err != nil {
		tb.Fatal(err)
	}
	// Index-only scans need the visibility map; a live ledger gets it from autovacuum.
	if _, err := c.Exec(ctx, `VACUUM ANALYZE postings`); err != nil {
		tb.Fatal(err)
	}
}

// drive calls do from conns goroutines, closed loop for d (rate 0), or open loop at
// rate with each call's latency counted from its intended start (no coordinated
// omission: a late call is late by its wait too). It returns the calls per second that
// succeeded and their sorted latencies; failures are reported to errorf.
func drive(errorf func(format string, args ...any), conns int, d time.Duration, rate float64, do func(w, k int) error) (float64, []time.Duration) {
	var n, errs atomic.Int64
	var firstErr atomic.Value
	var mu sync.Mutex
	var lats []time.Duration
	start := time.Now()
	end := start.Add(d)
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < conns; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			mine := make([]time.Duration, 0, 4096)
			for k := 0; ; k++ {
				intended := time.Now()
				if rate > 0 {
					i := next.Add(1) - 1
					intended = start.Add(time.Duration(float64(i) / rate * float64(time.Second)))
					if wait := time.Until(intended); wait > 0 {
						time.Sleep(wait)
					}
				}
				if !intended.Before(end) {
					break
				}
				if err := do(w, k); err != nil {
					if errs.Add(1) == 1 {
						firstErr.Store(err)
					}
					continue
				}
				n.Add(1)
				mine = append(mine, time.Since(intended))
			}
			mu.Lock()
			lats = append(lats, mine...)
			mu.Unlock()
		}(w)
	}
	wg.Wait()
	if e := errs.Load(); e > 0 {
		errorf("%d calls failed, the first: %v", e, firstErr.Load())
	}
	sort.Slice(lats, func(i, j int) bool { return lats[i] < lats[j] })
	return float64(n.Load()) / time.Since(start).Seconds(), lats
}

// userOf spreads the calls of worker w over the users.
func userOf(w, k, users int) uint64 { return uint64(1 + (w*7919+k*104729)%users) }

// tokens holds "Bearer <session>" for users 1..n in one pointer-free buffer: minted
// once per benchmark, so that the load generator, which shares the process (and its
// garbage collector) with the server under test, neither allocates them per run nor
// gives the collector 2n objects to mark at every cycle.
type tokens struct {
	buf []byte
	off []int32 // token u is buf[off[u-1]:off[u]]
}

func newTokens(n int) *tokens {
	t := &tokens{off: make([]int32, 1, n+1)}
	for u := 1; u <= n; u++ {
		t.buf = append(t.buf, "Bearer "...)
		t.buf = append(t.buf, session(uint64(u))...)
		t.off = append(t.off, int32(len(t.buf)))
	}
	return t
}

func (t *tokens) users() int { return len(t.off) - 1 }

func (t *tokens) get(u uint64) []byte { return t.buf[t.off[u-1]:t.off[u]] }

// hammer sends GET /v1/packets as random users through drive, one HTTP client
// connection per goroutine.
func hammer(errorf func(format string, args ...any), addr string, toks *tokens, conns int, d time.Duration, rate float64) (float64, []time.Duration) {
	hc := &fasthttp.HostClient{Addr: addr, MaxConns: conns, ReadTimeout: 5 * time.Second, WriteTimeout: 5 * time.Second}
	uri := "http://" + addr + PacketsPath
	reqs := make([]*fasthttp.Request, conns)
	resps := make([]*fasthttp.Response, conns)
	for w := range reqs {
		reqs[w], resps[w] = fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	}
	defer func() {
		for w := range reqs {
			fasthttp.ReleaseRequest(reqs[w])
			fasthttp.ReleaseResponse(resps[w])
		}
	}()
	return drive(errorf, conns, d, rate, func(w, k int) error {
		req, resp := reqs[w], resps[w]
		req.Reset()
		req.SetRequestURI(uri)
		req.Header.SetBytesV("Authorization", toks.get(userOf(w, k, toks.users())))
		if err := hc.Do(req, resp); err != nil {
			return err
		}
		if resp.StatusCode() != 200 {
			return fmt.Errorf("status %d: %s", resp.StatusCode(), resp.Body())
		}
		return nil
	})
}

// timedReader records how long each Packets call of the wrapped reader takes (the
// server's whole ledger time: waiting for a connection, then the statement).
type timedReader struct {
	Reader
	mu   sync.Mutex
	lats []time.Duration
	on   atomic.Bool
}

func (r *timedReader) Packets(deadline time.Time, uid uint64, campaign string, pos *Position, limit int, dst []Packet) ([]Packet, error) {
	t0 := time.Now()
	out, err := r.Reader.Packets(deadline, uid, campaign, pos, limit, dst)
	if r.on.Load() {
		d := time.Since(t0)
		r.mu.Lock()
		r.lats = append(r.lats, d)
		r.mu.Unlock()
	}
	return out, err
}

func (r *timedReader) take() []time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	l := r.lats
	r.lats = nil
	sort.Slice(l, func(i, j int) bool { return l[i] < l[j] })
	return l
}

func p99(l []time.Duration) time.Duration {
	if len(l) == 0 {
		return 0
	}
	return l[len(l)*99/100]
}

// latencyRun is one open-loop run's figures.
type latencyRun struct {
	name     string
	rate     float64
	lats     []time.Duration
	gcs      uint32
	gcPause  time.Duration // longest stop-the-world pause in the run
	gcCPU    float64       // CPU seconds the collector took in the run (all its classes)
	schedP99 time.Duration // p99 of the process's goroutine scheduling latency in the run
	ckpts    int64         // PostgreSQL checkpoints that ran during it
	loadAvg  string
}

func (r latencyRun) String() string {
	if len(r.lats) == 0 {
		return r.name + ": no answers"
	}
	return fmt.Sprintf("%-22s at %5.0f/s: p50 %7.3fms p99 %7.3fms p99.9 %7.3fms max %7.3fms (%d calls; %d GCs, %.0fms GC CPU, longest pause %v; sched p99 %v; %d checkpoints; load %s)",
		r.name, r.rate, ms(r.lats[len(r.lats)/2]), ms(p99(r.lats)), ms(r.lats[len(r.lats)*999/1000]), ms(r.lats[len(r.lats)-1]),
		len(r.lats), r.gcs, r.gcCPU*1000, r.gcPause, r.schedP99, r.ckpts, r.loadAvg)
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// loadAvg returns the first three fields of /proc/loadavg ("?" elsewhere).
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// checkpoints returns how many checkpoints PostgreSQL has run so far.
func checkpoints(tb testing.TB, c *pgx.Conn) int64 {
	var n int64
	if err := c.QueryRow(context.Background(), `SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter`).Scan(&n); err != nil {
		tb.Logf("pg_stat_bgwriter: %v", err)
	}
	return n
}

// measure runs fn (an open-loop drive) and returns its figures with the GC pauses and
// checkpoints that happened meanwhile.
func measure(tb testing.TB, name string, rate float64, admin *pgx.Conn, fn func() []time.Duration) latencyRun {
	var m0, m1 runtime.MemStats
	s0, s1 := runtimeSamples(), runtimeSamples()
	runtime.ReadMemStats(&m0)
	rmetrics.Read(s0)
	c0 := checkpoints(tb, admin)
	lats := fn()
	runtime.ReadMemStats(&m1)
	rmetrics.Read(s1)
	r := latencyRun{name: name, rate: rate, lats: lats, gcs: m1.NumGC - m0.NumGC, ckpts: checkpoints(tb, admin) - c0, loadAvg: loadAvg(),
		gcCPU: s1[0].Value.Float64() - s0[0].Value.Float64(), schedP99: histP99(s0[1].Value.Float64Histogram(), s1[1].Value.Float64Histogram())}
	for g := m0.NumGC; g < m1.NumGC && m1.NumGC-g <= 256; g++ {
		r.gcPause = max(r.gcPause, time.Duration(m1.PauseNs[g%256]))
	}
	return r
}

func runtimeSamples() []rmetrics.Sample {
	return []rmetrics.Sample{{Name: "/cpu/classes/gc/total:cpu-seconds"}, {Name: "/sched/latencies:seconds"}}
}

// histP99 returns the 99th percentile of what histogram b holds beyond a (an earlier
// read of the same histogram), by the upper bound of its bucket.
func histP99(a, b *rmetrics.Float64Histogram) time.Duration {
	var total uint64
	for i := range b.Counts {
		total += b.Counts[i] - a.Counts[i]
	}
	var acc uint64
	for i := range b.Counts {
		acc += b.Counts[i] - a.Counts[i]
		if total > 0 && acc*100 >= total*99 {
			return time.Duration(b.Buckets[i+1] * float64(time.Second))
		}
	}
	return 0
}

// BenchmarkPacketsPG1M measures GET /v1/packets over a PostgreSQL ledger of 1,000,000
// postings (100,000 users, 10 each): saturation throughput as a ratio of a bare
// fasthttp handler answering a constant page of the same size, with the same client
// (a second process, see loadproc_test.go) in the same run; then, at half the
// saturation rate, open loop, the latency split into what the machine gives a bare
// handler (the floor), what the page statement costs alone (the same reader, called
// directly), what the server spends on the ledger, and what the client sees. Run it
// alone:
//
//	go test -run X -bench PacketsPG1M -benchtime 1x ./query
func BenchmarkPacketsPG1M(b *testing.B) {
	url := testpg.URL(b)
	if url == "" {
		b.Skip("SHAKE_TEST_POSTGRES not set")
	}
	const n, users = 1_000_000, 100_000
	ctx := context.Background()
	l, err := ledger.Open(ctx, url)
	if err != nil {
		b.Fatal(err)
	}
	l.Close()
	t0 := time.Now()
	loadPostings(b, url, n, users)
	b.Logf("loaded %d postings with COPY in %v", n, time.Since(t0).Round(time.Millisecond))
	admin, err := pgx.Connect(ctx, url)
	if err != nil {
		b.Fatal(err)
	}
	defer admin.Close(ctx)
	rd, err := OpenReader(ctx, url, DefaultDBConns)
	if err != nil {
		b.Fatal(err)
	}
	tr := &timedReader{Reader: rd}
	ts := startWith(b, tr, nil)
	direct, err := OpenReader(ctx, url, DefaultDBConns)
	if err != nil {
		b.Fatal(err)
	}
	defer direct.Close()
	// The bare ceiling answers what a page of 10 packets weighs.
	_, page := ts.get(b, PacketsPath, session(42))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	bare := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		ctx.SetContentType("application/json")
		ctx.SetBody(page)
	}}
	go bare.Serve(ln)
	defer bare.Shutdown()
	sql := func(rate float64, d time.Duration) []time.Duration {
		bufs := make([][]Packet, conns*4)
		_, lats := drive(b.Errorf, conns*4, d, rate, func(w, k int) error {
			var err error
			bufs[w], err = direct.Packets(time.Now().Add(DefaultDBTimeout), userOf(w, k, users), "", nil, PageSize+1, bufs[w][:0])
			return err
		})
		return lats
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		// Every HTTP load comes from a second process (loadproc_test.go), each run
		// after a warm-up second at the same rate, so that no run counts the client's
		// connection set-up or the readers' first database connections.
		bareAddr, addr := ln.Addr().String(), ts.s.Addr()
		bareQPS, _ := hammerProc(b, loadSpec{addr: bareAddr, conns: conns, d: d, users: users})
		qps, _ := hammerProc(b, loadSpec{addr: addr, conns: conns, d: d, users: users})
		rate := qps / 2
		sql(rate, time.Second)
		floor := measure(b, "bare fasthttp", rate, admin, func() []time.Duration {
			_, l := hammerProc(b, loadSpec{addr: bareAddr, conns: conns * 4, d: d, rate: rate, users: users})
			return l
		})
		alone := measure(b, "SQL alone (pgx)", rate, admin, func() []time.Duration { return sql(rate, d) })
		tr.take()
		tr.on.Store(true)
		client := measure(b, "/v1/packets client", rate, admin, func() []time.Duration {
			_, l := hammerProc(b, loadSpec{addr: addr, conns: conns * 4, d: d, rate: rate, users: users})
			return l
		})
		tr.on.Store(false)
		server := latencyRun{name: "  its ledger calls", rate: rate, lats: tr.take(), loadAvg: client.loadAvg}
		b.ReportMetric(bareQPS, "bare_req/s")
		b.ReportMetric(qps, "packets_req/s")
		b.ReportMetric(qps/bareQPS, "ratio")
		b.ReportMetric(ms(p99(client.lats)), "p99_ms@half")
		b.ReportMetric(ms(client.lats[len(client.lats)/2]), "p50_ms@half")
		b.ReportMetric(ms(p99(floor.lats)), "bare_p99_ms@half")
		b.ReportMetric(ms(p99(alone.lats)), "sql_p99_ms@half")
		b.Logf("saturation: bare %.0f/s, /v1/packets %.0f/s (ratio %.3f); load %s", bareQPS, qps, qps/bareQPS, loadAvg())
		for _, r := range []latencyRun{floor, alone, client, server} {
			b.Log(r)
		}
	}
}

const conns, d = 32, 5 * time.Second

// BenchmarkPacketsHandler measures one GET /v1/packets through the server's handler
// (session check, ledger read, page encoding) without the network, over PostgreSQL
// when SHAKE_TEST_POSTGRES is set and SQLite otherwise: its allocations per request
// are what the server's garbage collector has to keep up with at a given rate.
func BenchmarkPacketsHandler(b *testing.B) {
	url := testpg.URL(b)
	if url == "" {
		url = "sqlite://" + b.TempDir() + "/ledger.db"
	}
	ctx := context.Background()
	l, err := ledger.Open(ctx, url)
	if err != nil {
		b.Fatal(err)
	}
	const users = 1000
	var batch []ledger.Posting
	if err := l.Fund(ctx, "perf", "CNY", 1<<40); err != nil {
		b.Fatal(err)
	}
	for i := 1; i <= 10*users; i++ {
		batch = append(batch, ledger.Posting{Campaign: "perf", Ticket: uint64(i), Amount: int64(1 + i%2000), Currency: "CNY",
			UID: uint64(1 + i%users), OpenedAt: time.Unix(1_700_000_000+int64(i), 0)})
	}
	if _, err := l.Post(ctx, batch); err != nil {
		b.Fatal(err)
	}
	l.Close()
	rd, err := OpenReader(ctx, url, DefaultDBConns)
	if err != nil {
		b.Fatal(err)
	}
	s, err := New(Config{Reader: rd, SessionKey: testSessionKey, Listen: "127.0.0.1:0"})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	h := s.Handler()
	toks := make([][]byte, users+1)
	for u := 1; u <= users; u++ {
		toks[u] = []byte("Bearer " + session(uint64(u)))
	}
	var rc fasthttp.RequestCtx
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		rc.Request.Reset()
		rc.Response.Reset()
		rc.Request.SetRequestURI(PacketsPath)
		rc.Request.Header.SetBytesV("Authorization", toks[1+i%users])
		h(&rc)
		if rc.Response.StatusCode() != 200 {
			b.Fatalf("%d %s", rc.Response.StatusCode(), rc.Response.Body())
		}
	}
}
