// Package fleet reads a running event's servers through their admin listeners
// (/healthz, /readyz, /metrics, /admin/switches) and turns two readings into what an
// operator watches: per server its role, readiness and why not, request rate, p99,
// results by class, tickets left, switches in force, lags and the last reconcile.
// `shake top` draws it.
package fleet

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"strings"
	"sync"
	"time"

	"shake/internal/control"
	"shake/internal/promscrape"
	"shake/ticket"
)

// MaxServers bounds the servers one view watches.
const MaxServers = 256

// maxSmallBody bounds what is read of /healthz, /readyz and /admin/switches.
const maxSmallBody = 64 << 10

// Reading is one server read once.
type Reading struct {
	URL  string
	At   time.Time
	Err  error  // the server could not be reached or read; the rest is empty
	Role string // from /healthz, or inferred from the metric names
	// Ready is /readyz's answer: ready when 200; Status and Reason come from its body.
	Ready       bool
	ReadyStatus string
	Reason      string
	Metrics     promscrape.Samples
	// Switches is the document in force (nil when the server has none, as reconcile).
	Switches    *ticket.Switches
	SwitchesErr error
}

// Read reads one server's admin listener; base is http://host:port.
func Read(ctx context.Context, hc *http.Client, base string) Reading {
	base = control.NormalizeServer(base)
	r := Reading{URL: base, At: time.Now()}
	var health struct {
		Status string `json:"status"`
		Role   string `json:"role"`
	}
	if _, err := getJSON(ctx, hc, base+"/healthz", &health); err != nil {
		r.Err = err
		return r
	}
	ms, err := promscrape.Scrape(ctx, hc, base)
	if err != nil {
		r.Err = err
		return r
	}
	r.Metrics = ms
	r.Role = health.Role
	if r.Role == "" {
		r.Role = InferRole(ms)
	}
	var ready struct {
		Status string `json:"status"`
		Reason string `json:"reason"`
	}
	code, err := getJSON(ctx, hc, base+"/readyz", &ready)
	switch {
	case err != nil && code == 0:
		r.Err = err
		return r
	default:
		r.Ready, r.ReadyStatus, r.Reason = code == http.StatusOK, ready.Status, ready.Reason
	}
	if r.Role == "edge" || r.Role == "verifier" || r.Role == "settler" {
		r.Switches, r.SwitchesErr = readSwitches(ctx, hc, base)
	}
	return r
}

// getBody GETs url and returns the status and at most maxSmallBody of the body.
func getBody(ctx context.Context, hc *http.Client, url string) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxSmallBody))
	return resp.StatusCode, body, err
}

// getJSON GETs url and decodes its JSON body into v; it returns the status (0 when
// there was no answer). A non-2xx answer with a JSON body is decoded too, with an error.
func getJSON(ctx context.Context, hc *http.Client, url string, v any) (int, error) {
	code, body, err := getBody(ctx, hc, url)
	if err != nil {
		return code, err
	}
	if err := json.Unmarshal(body, v); err != nil {
		return code, fmt.Errorf("%s: %d, not JSON: %.80q", url, code, body)
	}
	if code/100 != 2 {
		return code, fmt.Errorf("%s: %d", url, code)
	}
	return code, nil
}

func readSwitches(ctx context.Context, hc *http.Client, base string) (*ticket.Switches, error) {
	code, body, err := getBody(ctx, hc, base+control.SwitchesPath)
	if err != nil {
		return nil, err
	}
	if code != http.StatusOK {
		return nil, fmt.Errorf("%s answered %d", control.SwitchesPath, code)
	}
	return ticket.ParseSwitches(body)
}

// InferRole names a server's role from its metric names, for a server whose /healthz
// does not say: the first role whose metrics it exports, "?" when none.
func InferRole(ms promscrape.Samples) string {
	for _, role := range []string{"edge", "verifier", "settler", "query", "reconcile"} {
		if ms.Has("shake_" + role + "_") {
			return role
		}
	}
	return "?"
}

// ReadAll reads every server in parallel, each within timeout.
func ReadAll(ctx context.Context, hc *http.Client, servers []string, timeout time.Duration) []Reading {
	out := make([]Reading, len(servers))
	var wg sync.WaitGroup
	for i, s := range servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			out[i] = Read(c, hc, s)
		}()
	}
	wg.Wait()
	return out
}

// Row is what the view shows of one server: now's reading against the previous one.
type Row struct {
	Reading
	Rate    float64 // requests (or postings) per second since the previous reading; NaN unknown
	P99     float64 // seconds, of the interval (or since start on a first reading); NaN none
	Results map[string]float64
	Left    float64 // an edge's tickets left (NaN otherwise)
	Shard   float64 // an edge's shard size
	// KafkaLag is a settler's consumer lag; SettleLagP99 its claim-to-commit p99 (s).
	KafkaLag float64
	// ReconcileOK is 1 or 0 for a reconcile server (NaN otherwise), ReconcileAge the
	// time since its last run.
	ReconcileOK  float64
	ReconcileAge time.Duration
}

// roleMetrics names, per role, the counter of its work and the histogram of its latency.
var roleMetrics = map[string]struct{ counter, label, hist string }{
	"edge":     {"shake_edge_shakes_total", "result", "shake_edge_shake_duration_seconds"},
	"verifier": {"shake_verifier_opens_total", "result", "shake_verifier_open_seconds"},
	"settler":  {"shake_settler_posted_total", "", "shake_settler_claim_to_commit_seconds"},
	"query":    {"shake_query_requests_total", "", "shake_query_request_seconds"},
}

// Compare builds the row of now, with rates over the interval since prev (the same
// server's previous reading, or a zero Reading).
func Compare(now, prev Reading) Row {
	r := Row{Reading: now, Rate: math.NaN(), P99: math.NaN(), Left: math.NaN(), Shard: math.NaN(),
		KafkaLag: math.NaN(), ReconcileOK: math.NaN()}
	if now.Err != nil {
		return r
	}
	ms := now.Metrics
	rm, ok := roleMetrics[now.Role]
	if ok {
		total, _ := ms.Sum(rm.counter)
		if prev.Err == nil && prev.Metrics != nil {
			before, _ := prev.Metrics.Sum(rm.counter)
			if dt := now.At.Sub(prev.At).Seconds(); dt > 0 && total >= before {
				r.Rate = (total - before) / dt
			}
			r.P99 = promscrape.Quantile(0.99, promscrape.Delta(ms.Buckets(rm.hist), prev.Metrics.Buckets(rm.hist)))
		} else {
			r.P99 = promscrape.Quantile(0.99, ms.Buckets(rm.hist))
		}
		if rm.label != "" {
			r.Results = ms.By(rm.counter, rm.label)
		}
	}
	get := func(name string) float64 {
		if v, ok := ms.Get(name); ok {
			return v
		}
		return math.NaN()
	}
	switch now.Role {
	case "edge":
		r.Left, r.Shard = get("shake_edge_tickets_left"), get("shake_edge_shard_tickets")
	case "settler":
		r.KafkaLag = get("shake_settler_consumer_lag")
		r.Results = map[string]float64{}
		if v, ok := ms.Sum("shake_settler_dlq_total"); ok {
			r.Results["dead-lettered"] = v
		}
		if v, ok := ms.Get("shake_settler_posted_total"); ok {
			r.Results["posted"] = v
		}
	case "reconcile":
		r.ReconcileOK = get("shake_reconcile_ok")
		if ts := get("shake_reconcile_last_run_timestamp_seconds"); ts > 0 {
			r.ReconcileAge = now.At.Sub(time.Unix(0, int64(ts*float64(time.Second))))
		}
	}
	return r
}

// Frame is one view of the fleet.
type Frame struct {
	At   time.Time
	Rows []Row
}

// Unreachable counts the servers that could not be read.
func (f *Frame) Unreachable() int {
	n := 0
	for _, r := range f.Rows {
		if r.Err != nil {
			n++
		}
	}
	return n
}

// SwitchVersions returns the distinct switches versions in force, as text.
func (f *Frame) SwitchVersions() []string {
	seen := map[uint64]bool{}
	var out []string
	for _, r := range f.Rows {
		if r.Switches != nil && !seen[r.Switches.Version] {
			seen[r.Switches.Version] = true
			out = append(out, fmt.Sprint(r.Switches.Version))
		}
	}
	return out
}

// hostOf strips the scheme of a server URL, for the view.
func hostOf(u string) string {
	if i := strings.Index(u, "://"); i >= 0 {
		return u[i+3:]
	}
	return u
}
