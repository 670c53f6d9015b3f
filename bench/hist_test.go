package bench

import (
	"encoding/json"
	"testing"
	"time"
)

func TestHistogramPercentiles(t *testing.T) {
	h := NewHistogram()
	if s := h.Summary(); s != (Latency{}) {
		t.Fatalf("empty summary %+v", s)
	}
	for i := 1; i <= 10000; i++ {
		h.Record(time.Duration(i) * time.Microsecond)
	}
	s := h.Summary()
	near := func(name string, got, want time.Duration) {
		t.Helper()
		// HDR with 3 significant digits: within 0.1% (plus one unit of rounding).
		tol := want/1000 + time.Microsecond
		if got < want-tol || got > want+tol {
			t.Errorf("%s = %v, want %v ± %v", name, got, want, tol)
		}
	}
	if s.Count != 10000 {
		t.Fatalf("count %d", s.Count)
	}
	near("min", s.Min, time.Microsecond)
	near("p50", s.P50, 5000*time.Microsecond)
	near("p90", s.P90, 9000*time.Microsecond)
	near("p99", s.P99, 9900*time.Microsecond)
	near("p99.9", s.P999, 9990*time.Microsecond)
	near("max", s.Max, 10000*time.Microsecond)
	near("mean", s.Mean, 5000*time.Microsecond)
}

func TestHistogramClampsAndMerges(t *testing.T) {
	h := NewHistogram()
	h.Record(-time.Second)    // counts as the lowest value
	h.Record(10 * time.Hour)  // clamped to MaxLatency
	h.Record(time.Nanosecond) // below the resolution
	if h.Count() != 3 {
		t.Fatalf("count %d", h.Count())
	}
	if mx := h.Summary().Max; mx < MaxLatency-MaxLatency/1000 {
		t.Fatalf("max %v, want about %v", mx, MaxLatency)
	}
	o := NewHistogram()
	o.Record(time.Millisecond)
	h.Merge(o)
	if h.Count() != 4 {
		t.Fatalf("merged count %d", h.Count())
	}
	h.Reset()
	if h.Count() != 0 || h.Quantile(0.99) != 0 {
		t.Fatal("reset histogram not empty")
	}
}

func TestLatencyJSON(t *testing.T) {
	l := Latency{Count: 3, Min: 100 * time.Microsecond, Mean: 1500 * time.Microsecond, P50: time.Millisecond,
		P90: 2 * time.Millisecond, P99: 3 * time.Millisecond, P999: 4 * time.Millisecond, Max: 5250 * time.Microsecond}
	b, err := json.Marshal(l)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"count":3,"min":0.1,"mean":1.5,"p50":1,"p90":2,"p99":3,"p99.9":4,"max":5.25}`
	if string(b) != want {
		t.Fatalf("got %s\nwant %s", b, want)
	}
	var back Latency
	if err := json.Unmarshal(b, &back); err != nil || back != l {
		t.Fatalf("round trip: %+v %v", back, err)
	}
}

func TestHistogramRecordAllocatesNothing(t *testing.T) {
	h := NewHistogram()
	if n := testing.AllocsPerRun(1000, func() { h.Record(1234 * time.Microsecond) }); n != 0 {
		t.Fatalf("Record allocates %v", n)
	}
}

func BenchmarkHistogramRecord(b *testing.B) {
	h := NewHistogram()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		h.Record(time.Duration(i&0xffff) * time.Microsecond)
	}
}
