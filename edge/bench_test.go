package edge

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"shake/bench/baseline"
)

// BenchmarkShakeWin measures the handler on the win path: a distinct user per
// request, per-user cap on, a ticket every time. It must report 0 allocs/op.
func BenchmarkShakeWin(b *testing.B) {
	const pool = 1 << 18
	f := benchFixture(b, pool)
	s := startEdge(b, f, nil)
	h := s.Handler()
	auths := benchSessions(f, pool)
	var ctx fasthttp.RequestCtx
	ctx.Request.Header.SetMethod("POST")
	ctx.Request.SetRequestURI(ShakePath)
	b.ReportAllocs()
	i := 0
	var waits uint64 // requests that waited on a reservation, over every edge
	for b.Loop() {
		if i == pool {
			b.StopTimer()
			waits += s.disp.nwaits.Load()
			// The pool is spent: start over on a fresh edge so every op stays a win.
			f = benchFixture(b, pool)
			s = startEdge(b, f, nil)
			h = s.Handler()
			auths = benchSessions(f, pool)
			i = 0
			b.StartTimer()
		}
		ctx.Request.Header.SetBytesV("Authorization", auths[i])
		i++
		ctx.Response.Reset()
		h(&ctx)
	}
	if ctx.Response.StatusCode() != 200 {
		b.Fatalf("last answer %d %s", ctx.Response.StatusCode(), ctx.Response.Body())
	}
	// Waits mean an fdatasync on the request path: the reservation fell behind.
	b.ReportMetric(float64(waits+s.disp.nwaits.Load())/float64(b.N)*1e6, "reserve-waits/Mop")
}

// The loopback pair: the same client drives the bare baseline server and the edge
// (distinct users, per-user cap on, every answer a win), so their ratio is the edge's
// cost over fasthttp itself on this machine. Run both in one go:
//
//	go test -run '^$' -bench 'HTTP$' -benchtime=2s ./edge/
const (
	httpPool    = 1 << 20 // tickets per edge instance: more than any b.N at -benchtime=2s
	httpConns   = 64
	httpWorkers = 32 // goroutines per GOMAXPROCS
)

var (
	httpFixtureOnce sync.Once
	httpFixture     *fixture
	httpAuths       [][]byte
)

func loopbackFixture(b *testing.B) *fixture {
	httpFixtureOnce.Do(func() {
		dir, err := os.MkdirTemp("", "edge-bench-")
		if err != nil {
			b.Fatal(err)
		}
		httpFixture = newFixture(b, shardSpec{count: httpPool, dir: dir})
		httpAuths = benchSessions(httpFixture, httpPool)
	})
	return httpFixture
}

// loadLoop sends b.N POSTs with many connections and goroutines and checks answers.
func loadLoop(b *testing.B, addr string, auths [][]byte, want string) {
	hc := &fasthttp.HostClient{Addr: addr, MaxConns: httpConns, ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second}
	var next atomic.Int64
	var bad atomic.Int64
	b.SetParallelism(httpWorkers)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		defer fasthttp.ReleaseRequest(req)
		defer fasthttp.ReleaseResponse(resp)
		req.Header.SetMethod("POST")
		req.SetRequestURI("http://" + addr + ShakePath)
		for pb.Next() {
			i := next.Add(1) - 1
			if auths != nil {
				req.Header.SetBytesV("Authorization", auths[i%int64(len(auths))])
			}
			if err := hc.Do(req, resp); err != nil || resp.StatusCode() != 200 || !bytes.Contains(resp.Body(), []byte(want)) {
				bad.Add(1)
			}
		}
	})
	b.StopTimer()
	if n := bad.Load(); n != 0 {
		b.Fatalf("%d of %d requests did not answer %s", n, b.N, want)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "req/s")
}

func BenchmarkBaselineHTTP(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- baseline.ServeListener(ctx, ln) }()
	defer func() { cancel(); <-done }()
	loadLoop(b, ln.Addr().String(), nil, `"won"`)
}

func BenchmarkShakeHTTP(b *testing.B) {
	f := loopbackFixture(b)
	if b.N > httpPool {
		b.Fatalf("b.N %d above the pool %d: lower -benchtime", b.N, httpPool)
	}
	cfg := f.config(filepath.Join(b.TempDir(), "edge.state"))
	s, err := New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	defer func() { cancel(); <-done }()
	// Wait for readiness so the first reservation is not part of the measurement.
	for i := 0; i < 500; i++ {
		if code, _, _ := fasthttp.Get(nil, "http://"+s.Addr()+"/readyz"); code == 200 {
			break
		}
		time.Sleep(2 * time.Millisecond)
	}
	loadLoop(b, s.Addr(), httpAuths, `"won"`)
	b.ReportMetric(float64(s.disp.nwaits.Load()), "reserve-waits")
	b.ReportMetric(float64(s.disp.nres.Load()), "reservations")
}
