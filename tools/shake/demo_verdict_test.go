package main

import (
	"strings"
	"testing"
	"time"

	"shake/bench"
)

// TestDropRateCountsOnlyUnanswered: the drop rate counts the requests a user never got
// an answer to, over shakes and opens; error answers (401, 503) are answers.
func TestDropRateCountsOnlyUnanswered(t *testing.T) {
	res := &bench.Result{
		Shake: bench.EndpointResult{Requests: 900, Errors: map[string]int64{"dropped": 30, "timeout": 5, "unauthorized": 40}},
		Open:  &bench.EndpointResult{Requests: 100, Errors: map[string]int64{"queue_full": 2, "connect": 1, "transport": 2, "unavailable": 9}},
	}
	rate, lost, requests := dropRate(res)
	if lost != 40 || requests != 1000 || rate != 0.04 {
		t.Fatalf("drop rate %v (%d of %d), want 0.04 (40 of 1000)", rate, lost, requests)
	}
	if r, _, n := dropRate(&bench.Result{}); r != 0 || n != 0 {
		t.Fatalf("no request: rate %v of %d", r, n)
	}
}

// TestLatencyCheck: a target is held at or under its threshold, and an endpoint that
// answered nothing cannot hold it.
func TestLatencyCheck(t *testing.T) {
	ep := &bench.EndpointResult{Responses: 10, Latency: bench.Latency{P99: 5 * time.Millisecond}}
	if c := latencyCheck("shake p99", "--max-shake-p99", ep, 5*time.Millisecond); !c.OK || c.Measured != "5.00ms" || c.Threshold != "≤ 5ms" {
		t.Errorf("at the threshold: %+v", c)
	}
	if c := latencyCheck("shake p99", "--max-shake-p99", ep, 4*time.Millisecond); c.OK {
		t.Errorf("over the threshold: %+v", c)
	}
	if c := latencyCheck("open p99", "--max-open-p99", nil, time.Second); c.OK || c.Measured != "no answer" {
		t.Errorf("no open endpoint: %+v", c)
	}
	if c := latencyCheck("open p99", "--max-open-p99", &bench.EndpointResult{}, time.Second); c.OK {
		t.Errorf("no answer at all: %+v", c)
	}
	var b strings.Builder
	writeVerdict(&b, []bench.Check{{Target: "shake p99", Threshold: "≤ 5ms", Measured: "9ms", Flag: "--max-shake-p99"}, {Target: "money", OK: true}})
	if !strings.Contains(b.String(), "✗ shake p99 ...") || !strings.Contains(b.String(), "✓ money ...") {
		t.Errorf("verdict text:\n%s", b.String())
	}
}
