package fleet

import (
	"bytes"
	"context"
	"math"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"
)

// fakeServer answers an admin listener's paths with the given bodies.
func fakeServer(t *testing.T, health, ready string, readyCode int, metrics string) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/healthz":
			w.Write([]byte(health))
		case "/readyz":
			w.WriteHeader(readyCode)
			w.Write([]byte(ready))
		case "/metrics":
			w.Write([]byte(metrics))
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

func TestReadRoleReadinessAndRates(t *testing.T) {
	hc := &http.Client{Timeout: 2 * time.Second}
	ctx := context.Background()
	// /healthz names the role: it wins over the metric names.
	q := fakeServer(t, `{"status":"ok","role":"query"}`, `{"status":"ready"}`, 200, "shake_edge_tickets_left 3\n")
	if r := Read(ctx, hc, q); r.Err != nil || r.Role != "query" || !r.Ready {
		t.Fatalf("query: %+v", r)
	}
	// An older server's /healthz says nothing of its role: the metrics tell it.
	m1 := "shake_settler_posted_total 10\nshake_settler_consumer_lag 7\n"
	s := fakeServer(t, `{"status":"ok"}`, `{"status":"not_ready","reason":"kafka_unreachable"}`, 503, m1)
	r1 := Read(ctx, hc, s)
	if r1.Err != nil || r1.Role != "settler" || r1.Ready || r1.Reason != "kafka_unreachable" {
		t.Fatalf("settler: %+v", r1)
	}
	if r1.SwitchesErr == nil {
		t.Error("a settler without /admin/switches: no error said so")
	}
	r2 := r1
	r2.At = r1.At.Add(2 * time.Second)
	r2.Metrics = append(r2.Metrics[:0:0], r1.Metrics...)
	r2.Metrics[0].Value = 30
	row := Compare(r2, r1)
	if row.Rate != 10 || row.KafkaLag != 7 || row.Results["posted"] != 30 {
		t.Errorf("rate %v, lag %v, results %v; want 10/s, 7, posted 30", row.Rate, row.KafkaLag, row.Results)
	}
	if first := Compare(r1, Reading{}); !math.IsNaN(first.Rate) {
		t.Errorf("a first reading has a rate: %v", first.Rate)
	}
	// A reconcile watcher: its last result and how long ago it ran.
	last := time.Now().Add(-42 * time.Second).Unix()
	rec := fakeServer(t, `{"status":"ok","role":"reconcile"}`, `{"status":"ready"}`, 200,
		"shake_reconcile_ok{campaign=\"gala\"} 0\nshake_reconcile_last_run_timestamp_seconds "+strconv.FormatInt(last, 10)+"\n")
	recRow := Compare(Read(ctx, hc, rec), Reading{})
	if recRow.ReconcileOK != 0 || recRow.ReconcileAge < 41*time.Second || recRow.ReconcileAge > time.Minute {
		t.Errorf("reconcile row: ok %v, age %v", recRow.ReconcileOK, recRow.ReconcileAge)
	}
	var b bytes.Buffer
	Render(&b, &Frame{At: time.Now(), Rows: []Row{row, recRow, Compare(Read(ctx, hc, "127.0.0.1:1"), Reading{})}})
	for _, want := range []string{"SETTLER", "NOT READY: kafka_unreachable", "127.0.0.1:1 UNREACHABLE", "switches unreadable",
		"RECONCILE", "FAILED", "s ago"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("frame lacks %q:\n%s", want, b.String())
		}
	}
}
