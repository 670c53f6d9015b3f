package verifier

import (
	"context"
	"net"
	"os"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"shake/broker"
	ikafka "shake/internal/kafka"
)

// chainFixture returns a server (Kafka unreachable: the chain never gets that far) and
// n distinct open bodies for uid 7.
func chainFixture(b testing.TB, n int) (*Server, [][]byte) {
	f := newFixture(b, 2, uint64(n/2+1))
	s := newServerNoKafka(b, f, f.config([]string{"127.0.0.1:1"}))
	bodies := make([][]byte, n)
	for i := range bodies {
		bodies[i] = body(f.tok(uint64(i+1), 7))
	}
	return s, bodies
}

func TestVerifyChainAllocatesNothing(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are meaningless under -race")
	}
	s, bodies := chainFixture(t, 64)
	o := getOp()
	now := time.Now().Unix()
	fp := s.table.fingerprint(7)
	i := 0
	n := testing.AllocsPerRun(200, func() {
		if s.verify(o, bodies[i%len(bodies)], 7, now) != resOpened {
			t.Fatal("verify failed")
		}
		if s.table.claim(int(o.tok.Shard), o.tok.Ticket, fp) != claimNew {
			t.Fatal("claim failed")
		}
		if !s.users.reserve(7, o.tok.Round) {
			t.Fatal("per-user check failed")
		}
		s.users.giveBack(7, o.tok.Round)
		s.table.release(int(o.tok.Shard), o.tok.Ticket)
		s.makeClaim(o, 7, time.Unix(now, 0))
		s.appendOpened(o)
		i++
	})
	if n != 0 {
		t.Fatalf("verification chain allocates %v per open", n)
	}
}

// BenchmarkVerifyChain: body scan, AEAD open, uid, ticket MAC, shard range, round,
// amount bounds, time window, expiry, the claim-table CAS and the per-user check (a
// reserve and its give-back), per open.
func BenchmarkVerifyChain(b *testing.B) {
	s, bodies := chainFixture(b, 4096)
	o := getOp()
	now := time.Now().Unix()
	fp := s.table.fingerprint(7)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if s.verify(o, bodies[i%len(bodies)], 7, now) != resOpened {
			b.Fatal("verify failed")
		}
		sh := int(o.tok.Shard)
		if s.table.claim(sh, o.tok.Ticket, fp) != claimNew {
			b.Fatal("claim failed")
		}
		if !s.users.reserve(7, o.tok.Round) {
			b.Fatal("per-user check failed")
		}
		s.users.giveBack(7, o.tok.Round)
		s.table.release(sh, o.tok.Ticket)
	}
}

// BenchmarkMakeClaim builds, signs and encodes the claim of one open (what follows the
// chain before the durable write).
func BenchmarkMakeClaim(b *testing.B) {
	s, bodies := chainFixture(b, 1)
	o := getOp()
	now := time.Now()
	if s.verify(o, bodies[0], 7, now.Unix()) != resOpened {
		b.Fatal("verify failed")
	}
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		s.makeClaim(o, 7, now)
	}
}

// BenchmarkSession is the session check that precedes the chain.
func BenchmarkSession(b *testing.B) {
	f := newFixture(b, 1, 10)
	tok := f.bearer(7)[len("Bearer "):]
	now := time.Now().Unix()
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if _, err := f.sess.Verify(tok, now); err != nil {
			b.Fatal(err)
		}
	}
}

type openReq struct{ auth, body []byte }

// httpFixture serves a real verifier with the embedded broker in-process and returns
// its address and n distinct (user, ticket) open requests.
func httpFixture(b *testing.B, n int) (string, []openReq) {
	return httpFixtureKafka(b, n, broker.Security{}, nil)
}

// httpFixtureKafka is httpFixture with the broker's security bsec and the verifier's
// Kafka client security ksec (kafka_bench_test.go measures what TLS costs).
func httpFixtureKafka(b *testing.B, n int, bsec broker.Security, ksec *ikafka.Security) (string, []openReq) {
	f := newFixture(b, 2, uint64(n/2+1))
	br, err := broker.Start(broker.Config{Listen: "127.0.0.1:0", Partitions: 4, Security: bsec})
	must(b, err)
	b.Cleanup(br.Close)
	cfg := f.config([]string{br.Addr()})
	cfg.Kafka = ksec
	s, err := New(cfg)
	must(b, err)
	waitRebuilt(b, s)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	b.Cleanup(func() { cancel(); <-done })
	reqs := make([]openReq, n)
	for i := range reqs {
		uid := uint64(i + 1)
		reqs[i] = openReq{f.bearer(uid), body(f.tok(uint64(i+1), uid))}
	}
	return s.Addr(), reqs
}

func hammer(b *testing.B, addr string, reqs []openReq) {
	c := &fasthttp.HostClient{Addr: addr, MaxConns: 512}
	var next atomic.Int64
	var bad atomic.Int64
	b.SetParallelism(128)
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		defer fasthttp.ReleaseRequest(req)
		defer fasthttp.ReleaseResponse(resp)
		req.SetRequestURI("http://" + addr + "/v1/open")
		req.Header.SetMethod("POST")
		for pb.Next() {
			r := reqs[int(next.Add(1)-1)%len(reqs)]
			req.Header.SetBytesV("Authorization", r.auth)
			req.SetBody(r.body)
			if err := c.Do(req, resp); err != nil || resp.StatusCode() != 200 {
				bad.Add(1)
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "req/s")
	if bad.Load() > 0 {
		b.Fatalf("%d requests failed", bad.Load())
	}
}

// BenchmarkOpenHTTP is /v1/open over loopback with distinct tickets, each made durable
// in the embedded broker. Compare with BenchmarkBaselineHTTP in the same run.
func BenchmarkOpenHTTP(b *testing.B) {
	addr, reqs := httpFixture(b, 60000)
	hammer(b, addr, reqs)
}

// BenchmarkBaselineHTTP is a bare fasthttp server answering a constant 200 JSON body to
// the same client and requests: the ceiling of this machine's HTTP path.
func BenchmarkBaselineHTTP(b *testing.B) {
	f := newFixture(b, 1, 10)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(b, err)
	resp := []byte(`{"result":"opened","campaign":"cny-2026","ticket":"1","amount":1,"currency":"CNY"}`)
	srv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		ctx.SetContentType("application/json")
		ctx.SetBody(resp)
	}}
	go srv.Serve(ln)
	defer srv.Shutdown()
	reqs := []openReq{{f.bearer(1), body(f.tok(1, 1))}}
	hammer(b, ln.Addr().String(), reqs)
}

// BenchmarkOpenLatencyAtRate sends opens open-loop at SHAKE_OPEN_RATE per second
// (default 2000) for one second per b.N round and reports p50/p99/max latency.
func BenchmarkOpenLatencyAtRate(b *testing.B) {
	rate := openRate()
	addr, reqs := httpFixture(b, rate*3+10)
	openLatencyAtRate(b, addr, reqs, rate)
}

// openRate is SHAKE_OPEN_RATE, default 2000 opens per second.
func openRate() int {
	if v, err := strconv.Atoi(os.Getenv("SHAKE_OPEN_RATE")); err == nil && v > 0 {
		return v
	}
	return 2000
}

// openLatencyAtRate sends reqs open-loop at rate per second to addr, one second per b.N
// round (at most 3), and reports p50/p99/max latency.
func openLatencyAtRate(b *testing.B, addr string, reqs []openReq, rate int) {
	c := &fasthttp.HostClient{Addr: addr, MaxConns: 4096}
	var lat []time.Duration
	var mu sync.Mutex
	var bad atomic.Int64
	k := 0
	b.ResetTimer()
	for round := 0; round < b.N && round < 3; round++ {
		var wg sync.WaitGroup
		interval := time.Second / time.Duration(rate)
		t0 := time.Now()
		for i := 0; i < rate; i++ {
			if d := time.Until(t0.Add(time.Duration(i) * interval)); d > 0 {
				time.Sleep(d)
			}
			r := reqs[k%len(reqs)]
			k++
			wg.Add(1)
			go func() {
				defer wg.Done()
				req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
				req.SetRequestURI("http://" + addr + "/v1/open")
				req.Header.SetMethod("POST")
				req.Header.SetBytesV("Authorization", r.auth)
				req.SetBody(r.body)
				st := time.Now()
				err := c.Do(req, resp)
				d := time.Since(st)
				if err != nil || resp.StatusCode() != 200 {
					bad.Add(1)
				}
				fasthttp.ReleaseRequest(req)
				fasthttp.ReleaseResponse(resp)
				mu.Lock()
				lat = append(lat, d)
				mu.Unlock()
			}()
		}
		wg.Wait()
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	q := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) / 1000 }
	b.ReportMetric(q(0.5), "p50_ms")
	b.ReportMetric(q(0.99), "p99_ms")
	b.ReportMetric(q(1), "max_ms")
	if bad.Load() > 0 {
		b.Fatalf("%d opens failed", bad.Load())
	}
}
