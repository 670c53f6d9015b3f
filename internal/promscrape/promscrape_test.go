package promscrape

import (
	"context"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"shake/internal/obs"
)

const sample = `# HELP shake_edge_shakes_total Shakes by result.
# TYPE shake_edge_shakes_total counter
shake_edge_shakes_total{result="won"} 12
shake_edge_shakes_total{result="miss"} 30
shake_edge_tickets_left 348
shake_build_info{goversion="go1.26",revision="",version="v1.2 \"x\""} 1
not a sample line
shake_lat_seconds_bucket{le="0.001"} 10
shake_lat_seconds_bucket{le="0.01"} 90
shake_lat_seconds_bucket{le="+Inf"} 100
shake_lat_seconds_sum 0.5
shake_lat_seconds_count 100
`

func TestParseAndQuery(t *testing.T) {
	ss, err := Parse(strings.NewReader(sample))
	if err != nil {
		t.Fatal(err)
	}
	if v, ok := ss.Get("shake_edge_shakes_total", "result", "miss"); !ok || v != 30 {
		t.Errorf("miss = %v %v, want 30", v, ok)
	}
	if v, ok := ss.Sum("shake_edge_shakes_total"); !ok || v != 42 {
		t.Errorf("sum = %v %v, want 42", v, ok)
	}
	if _, ok := ss.Get("shake_nope"); ok {
		t.Error("a missing metric was found")
	}
	by := ss.By("shake_edge_shakes_total", "result")
	if by["won"] != 12 || len(by) != 2 {
		t.Errorf("by result = %v", by)
	}
	bi := ss[3]
	if bi.Name != "shake_build_info" || bi.Labels["version"] != `v1.2 "x"` || bi.Labels["revision"] != "" {
		t.Errorf("labels read as %q", bi.Labels)
	}
	bs := ss.Buckets("shake_lat_seconds")
	if len(bs) != 3 || !math.IsInf(bs[2].LE, 1) {
		t.Fatalf("buckets %v", bs)
	}
	// rank 50 of 100 lies in (0.001, 0.01] with 10 below and 80 inside.
	if q := Quantile(0.5, bs); math.Abs(q-(0.001+0.009*40/80)) > 1e-12 {
		t.Errorf("p50 = %v", q)
	}
	if q := Quantile(0.99, bs); q != 0.01 {
		t.Errorf("p99 in the +Inf bucket = %v, want the highest finite bound", q)
	}
	if q := Quantile(0.5, Delta(bs, bs)); !math.IsNaN(q) {
		t.Errorf("quantile of no observation = %v, want NaN", q)
	}
	d := Delta(bs, []Bucket{{0.001, 10}, {0.01, 10}, {math.Inf(1), 10}})
	if d[0].Count != 0 || d[1].Count != 80 || d[2].Count != 90 {
		t.Errorf("delta %v", d)
	}
}

// TestScrapeObsRegistry reads what the servers' own registry writes, histogram included.
func TestScrapeObsRegistry(t *testing.T) {
	reg := obs.NewRegistry()
	h := reg.Histogram("shake_x_seconds", "x", obs.LatencyBuckets)
	for i := 0; i < 100; i++ {
		h.ObserveDuration(time.Duration(i) * time.Millisecond)
	}
	reg.Counter("shake_y_total", "y").Add(7)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/metrics" {
			http.NotFound(w, r)
			return
		}
		reg.WriteTo(w)
	}))
	defer srv.Close()
	ss, err := Scrape(context.Background(), srv.Client(), srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := ss.Get("shake_y_total"); v != 7 {
		t.Errorf("counter = %v", v)
	}
	if q := Quantile(0.99, ss.Buckets("shake_x_seconds")); q < 0.05 || q > 0.1 {
		t.Errorf("p99 of 0..99 ms = %vs, want within (0.05, 0.1]", q)
	}
	if _, err := Scrape(context.Background(), srv.Client(), srv.URL+"/nothing"); err == nil {
		t.Error("a 404 scrape did not fail")
	}
}
