package query

import (
	"context"
	"fmt"
	"net"
	"sort"
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

// hammer sends GET /v1/packets as random users from conns clients, closed loop for d
// (rate 0), or open loop at rate with latency counted from each request's intended
// time. It returns the answers per second and the latencies.
func hammer(tb testing.TB, addr string, users int, conns int, d time.Duration, rate float64) (float64, []time.Duration) {
	hc := &fasthttp.HostClient{Addr: addr, MaxConns: conns, ReadTimeout: 5 * time.Second, WriteTimeout: 5 * time.Second}
	toks := make([][]byte, users+1)
	for u := 1; u <= users; u++ {
		toks[u] = []byte("Bearer " + session(uint64(u)))
	}
	var n, errs atomic.Int64
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
			req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
			defer fasthttp.ReleaseRequest(req)
			defer fasthttp.ReleaseResponse(resp)
			var mine []time.Duration
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
				u := 1 + (w*7919+k*104729)%users
				req.Reset()
				req.SetRequestURI("http://" + addr + PacketsPath)
				req.Header.SetBytesV("Authorization", toks[u])
				if err := hc.Do(req, resp); err != nil || resp.StatusCode() != 200 {
					errs.Add(1)
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
		tb.Errorf("%d requests failed", e)
	}
	sort.Slice(lats, func(i, j int) bool { return lats[i] < lats[j] })
	return float64(n.Load()) / time.Since(start).Seconds(), lats
}

func p99(l []time.Duration) time.Duration {
	if len(l) == 0 {
		return 0
	}
	return l[len(l)*99/100]
}

// BenchmarkPacketsPG1M measures GET /v1/packets over a PostgreSQL ledger of 1,000,000
// postings (100,000 users, 10 each): saturation throughput as a ratio of a bare
// fasthttp handler answering a constant page of the same size, with the same client
// in the same run, then the p99 latency (open loop, from the intended send time) at
// half the saturation rate. Run it alone: go test -run X -bench PacketsPG1M -benchtime 1x ./query
func BenchmarkPacketsPG1M(b *testing.B) {
	url := testpg.URL(b)
	if url == "" {
		b.Skip("SHAKE_TEST_POSTGRES not set")
	}
	const n, users = 1_000_000, 100_000
	l, err := ledger.Open(context.Background(), url)
	if err != nil {
		b.Fatal(err)
	}
	l.Close()
	t0 := time.Now()
	loadPostings(b, url, n, users)
	b.Logf("loaded %d postings with COPY in %v", n, time.Since(t0).Round(time.Millisecond))
	ts := startServer(b, url, nil)
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
	const conns, d = 32, 5 * time.Second
	b.ResetTimer()
	for range b.N {
		bareQPS, _ := hammer(b, ln.Addr().String(), users, conns, d, 0)
		qps, _ := hammer(b, ts.s.Addr(), users, conns, d, 0)
		// A warm-up at the same rate first, so the measured run does not count the
		// client's connection set-up or the server's first database connections.
		hammer(b, ts.s.Addr(), users, conns*4, time.Second, qps/2)
		_, lats := hammer(b, ts.s.Addr(), users, conns*4, d, qps/2)
		b.ReportMetric(bareQPS, "bare_req/s")
		b.ReportMetric(qps, "packets_req/s")
		b.ReportMetric(qps/bareQPS, "ratio")
		b.ReportMetric(float64(p99(lats).Microseconds())/1000, "p99_ms@half")
		b.ReportMetric(float64(lats[len(lats)/2].Microseconds())/1000, "p50_ms@half")
		b.Logf("bare %.0f/s, /v1/packets %.0f/s (ratio %.3f); at %.0f/s: p50 %v p99 %v max %v (%d requests)",
			bareQPS, qps, qps/bareQPS, qps/2, lats[len(lats)/2], p99(lats), lats[len(lats)-1], len(lats))
	}
}
