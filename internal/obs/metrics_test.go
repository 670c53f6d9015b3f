package obs

import (
	"bytes"
	"math"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestExposition(t *testing.T) {
	r := NewRegistry()
	r.Counter("shake_results_total", "Shake results.", "result", "won").Add(3)
	r.Counter("shake_results_total", "Shake results.", "result", "miss").Inc()
	r.Gauge("shake_pool_remaining", "Tickets left.\nIn the pool.").Set(-5)
	r.GaugeFunc("shake_ready", "Readiness.", func() float64 { return 1 })
	r.CounterFunc("shake_bytes_total", "Bytes.", func() float64 { return 1.5 }, "dir", `in"\`+"\n")
	h := r.Histogram("shake_latency_seconds", "Latency.", []float64{0.001, 0.01}, "route", "shake")
	h.Observe(0.0005)
	h.Observe(0.001) // le is inclusive
	h.Observe(0.005)
	h.Observe(3)
	// Label order does not matter for identity.
	r.Counter("shake_multi_total", "Multi.", "b", "2", "a", "1").Inc()
	r.Counter("shake_multi_total", "Multi.", "a", "1", "b", "2").Inc()

	var buf bytes.Buffer
	if _, err := r.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	want := `# HELP shake_bytes_total Bytes.
# TYPE shake_bytes_total counter
shake_bytes_total{dir="in\"\\\n"} 1.5
# HELP shake_latency_seconds Latency.
# TYPE shake_latency_seconds histogram
shake_latency_seconds_bucket{route="shake",le="0.001"} 2
shake_latency_seconds_bucket{route="shake",le="0.01"} 3
shake_latency_seconds_bucket{route="shake",le="+Inf"} 4
shake_latency_seconds_sum{route="shake"} 3.0065
shake_latency_seconds_count{route="shake"} 4
# HELP shake_multi_total Multi.
# TYPE shake_multi_total counter
shake_multi_total{a="1",b="2"} 2
# HELP shake_pool_remaining Tickets left.\nIn the pool.
# TYPE shake_pool_remaining gauge
shake_pool_remaining -5
# HELP shake_ready Readiness.
# TYPE shake_ready gauge
shake_ready 1
# HELP shake_results_total Shake results.
# TYPE shake_results_total counter
shake_results_total{result="miss"} 1
shake_results_total{result="won"} 3
`
	if got := buf.String(); got != want {
		t.Fatalf("exposition mismatch\n--- got\n%s\n--- want\n%s", got, want)
	}
	// Deterministic: a second write is identical.
	var buf2 bytes.Buffer
	r.WriteTo(&buf2)
	if buf2.String() != want {
		t.Fatal("second exposition differs")
	}
}

func TestSameMetricReturned(t *testing.T) {
	r := NewRegistry()
	a := r.Counter("x_total", "x", "k", "v")
	b := r.Counter("x_total", "x", "k", "v")
	if a != b {
		t.Fatal("same name+labels must return the same counter")
	}
	if r.Counter("x_total", "x", "k", "w") == a {
		t.Fatal("other labels must be another counter")
	}
	if r.Histogram("h", "h", LatencyBuckets) != r.Histogram("h", "h", LatencyBuckets) {
		t.Fatal("same histogram expected")
	}
}

func TestRegistrationBugsPanic(t *testing.T) {
	r := NewRegistry()
	r.Counter("c_total", "c")
	cases := map[string]func(){
		"odd labels":     func() { r.Counter("a_total", "a", "k") },
		"bad name":       func() { r.Counter("1bad", "a") },
		"bad name dash":  func() { r.Gauge("bad-name", "a") },
		"bad label":      func() { r.Counter("a_total", "a", "bad-label", "v") },
		"reserved label": func() { r.Counter("a_total", "a", "__x", "v") },
		"dup label":      func() { r.Counter("a_total", "a", "k", "1", "k", "2") },
		"type clash":     func() { r.Gauge("c_total", "c") },
		"le label":       func() { r.Histogram("h", "h", LatencyBuckets, "le", "1") },
		"no buckets":     func() { r.Histogram("h", "h", nil) },
		"unsorted":       func() { r.Histogram("h", "h", []float64{2, 1}) },
		"inf bucket":     func() { r.Histogram("h", "h", []float64{1, math.Inf(1)}) },
		"nil func":       func() { r.GaugeFunc("g", "g", nil) },
	}
	for name, f := range cases {
		t.Run(name, func(t *testing.T) {
			defer func() {
				v := recover()
				s, _ := v.(string)
				if !strings.HasPrefix(s, "BUG: ") {
					t.Fatalf("want BUG panic, got %v", v)
				}
			}()
			f()
		})
	}
}

func TestConcurrentUpdates(t *testing.T) {
	r := NewRegistry()
	const workers, per = 8, 10000
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := r.Counter("c_total", "c", "k", "v")
			g := r.Gauge("g", "g")
			h := r.Histogram("h_seconds", "h", LatencyBuckets)
			for i := 0; i < per; i++ {
				c.Inc()
				g.Add(1)
				h.Observe(0.001)
				if i%1000 == 0 {
					var buf bytes.Buffer
					r.WriteTo(&buf)
				}
			}
		}()
	}
	wg.Wait()
	if got := r.Counter("c_total", "c", "k", "v").Value(); got != workers*per {
		t.Fatalf("counter = %d", got)
	}
	if got := r.Gauge("g", "g").Value(); got != workers*per {
		t.Fatalf("gauge = %d", got)
	}
	h := r.Histogram("h_seconds", "h", LatencyBuckets)
	if h.Count() != workers*per {
		t.Fatalf("histogram count = %d", h.Count())
	}
	if s := h.Sum(); math.Abs(s-workers*per*0.001) > 1e-6 {
		t.Fatalf("histogram sum = %v", s)
	}
}

func TestHistogramQuantile(t *testing.T) {
	r := NewRegistry()
	h := r.Histogram("q_seconds", "q", []float64{1, 2, 4})
	if h.Quantile(0.5) != 0 {
		t.Fatal("empty histogram quantile should be 0")
	}
	// 10 observations in (0,1], 10 in (1,2], none in (2,4], 0 in +Inf.
	for i := 0; i < 10; i++ {
		h.Observe(0.5)
		h.Observe(1.5)
	}
	checks := []struct{ q, want float64 }{
		{0, 0},
		{0.25, 0.5}, // rank 5 of 10 in [0,1]
		{0.5, 1},
		{0.75, 1.5},
		{1, 2},
	}
	for _, c := range checks {
		if got := h.Quantile(c.q); math.Abs(got-c.want) > 1e-9 {
			t.Errorf("Quantile(%v) = %v, want %v", c.q, got, c.want)
		}
	}
	h.Observe(100) // +Inf bucket
	if got := h.Quantile(1); got != 4 {
		t.Errorf("quantile in +Inf bucket = %v, want highest bound 4", got)
	}
	h.ObserveDuration(1500 * time.Millisecond)
	if h.Count() != 22 {
		t.Fatalf("count = %d", h.Count())
	}
	var buf bytes.Buffer
	r.WriteTo(&buf)
	for _, line := range []string{
		`q_seconds_bucket{le="1"} 10`,
		`q_seconds_bucket{le="2"} 21`,
		`q_seconds_bucket{le="4"} 21`,
		`q_seconds_bucket{le="+Inf"} 22`,
		`q_seconds_count 22`,
	} {
		if !strings.Contains(buf.String(), line+"\n") {
			t.Errorf("missing %q in\n%s", line, buf.String())
		}
	}
}

func TestLatencyBuckets(t *testing.T) {
	checkBuckets("latency", LatencyBuckets)
	if LatencyBuckets[0] != 50e-6 || LatencyBuckets[len(LatencyBuckets)-1] != 10 {
		t.Fatal("LatencyBuckets must span 50µs..10s")
	}
}

func TestMetricsZeroAllocs(t *testing.T) {
	r := NewRegistry()
	c := r.Counter("c_total", "c")
	g := r.Gauge("g", "g")
	h := r.Histogram("h_seconds", "h", LatencyBuckets)
	if n := testing.AllocsPerRun(1000, func() { c.Inc(); c.Add(2) }); n != 0 {
		t.Errorf("Counter: %v allocs", n)
	}
	if n := testing.AllocsPerRun(1000, func() { g.Add(1); g.Set(3) }); n != 0 {
		t.Errorf("Gauge: %v allocs", n)
	}
	if n := testing.AllocsPerRun(1000, func() { h.Observe(0.003); h.ObserveDuration(time.Millisecond) }); n != 0 {
		t.Errorf("Histogram.Observe: %v allocs", n)
	}
	if n := testing.AllocsPerRun(1000, func() { _ = h.Quantile(0.99) }); n != 0 {
		t.Errorf("Histogram.Quantile: %v allocs", n)
	}
}

func BenchmarkHistogramObserve(b *testing.B) {
	h := NewRegistry().Histogram("h_seconds", "h", LatencyBuckets)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		h.Observe(float64(i%1000) * 1e-5)
	}
}

func BenchmarkHistogramObserveParallel(b *testing.B) {
	h := NewRegistry().Histogram("h_seconds", "h", LatencyBuckets)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			h.Observe(float64(i%1000) * 1e-5)
			i++
		}
	})
}

func BenchmarkCounterInc(b *testing.B) {
	c := NewRegistry().Counter("c_total", "c")
	b.ReportAllocs()
	for b.Loop() {
		c.Inc()
	}
}

func TestProcessMetrics(t *testing.T) {
	r := NewRegistry()
	RegisterProcessMetrics(r)
	RegisterProcessMetrics(r) // idempotent
	var b strings.Builder
	if _, err := r.WriteTo(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, name := range []string{"go_goroutines ", "process_open_fds ", "go_heap_live_bytes "} {
		if strings.Count(out, "\n"+name) != 1 {
			t.Errorf("%q appears %d times in:\n%s", name, strings.Count(out, "\n"+name), out)
		}
	}
	if strings.Contains(out, "go_goroutines 0\n") || strings.Contains(out, "process_open_fds 0\n") {
		t.Errorf("implausible zero values:\n%s", out)
	}
}
