package settler

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"shake/settler/ledger"

	"shake/internal/testpg"
)

// TestEndToEndLag produces claims at a fixed rate and reports the p50/p99 from a claim's
// Kafka timestamp to its batch being committed (shake_settler_claim_to_commit_seconds).
// It is a measurement, not a unit test: set SHAKE_TEST_LAG=1 to run it (ledger: SQLite,
// or PostgreSQL when SHAKE_TEST_POSTGRES is set).
func TestEndToEndLag(t *testing.T) {
	if os.Getenv("SHAKE_TEST_LAG") == "" {
		t.Skip("measurement; set SHAKE_TEST_LAG=1 to run")
	}
	const rate, seconds = 10_000, 5
	addr := startBroker(t)
	dir := t.TempDir()
	c := makeCampaign(t, dir, "lag", []uint64{rate * seconds}, time.Now().Add(time.Hour))
	url := "sqlite://" + filepath.Join(dir, "ledger.db")
	if u := testpg.URL(t); u != "" {
		url = u
	}
	l, err := ledger.Open(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	r := startSettler(t, addr, c, l, func(cfg *Config) { cfg.Batch, cfg.Linger = 2000, 50*time.Millisecond })
	w := &kafka.Writer{Addr: kafka.TCP(addr), Topic: topic, Balancer: &kafka.Hash{}, RequiredAcks: kafka.RequireAll,
		BatchTimeout: time.Millisecond, BatchSize: 1000}
	defer w.Close()
	// Every 10 ms, the claims due by then: an open-loop schedule at `rate` per second.
	start := time.Now()
	next := uint64(1)
	var msgs []kafka.Message
	for next <= rate*seconds {
		due := uint64(time.Since(start).Seconds()*rate) + 1
		msgs = msgs[:0]
		now := time.Now()
		for ; next <= due && next <= rate*seconds; next++ {
			cl := c.claim(next, next)
			msgs = append(msgs, kafka.Message{Key: cl.AppendKey(nil), Value: cl.AppendJSON(nil), Time: now})
		}
		if len(msgs) > 0 {
			if err := w.WriteMessages(context.Background(), msgs...); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	produced := time.Since(start)
	r.waitSeen(t, rate*seconds)
	h := r.s.mE2E
	t.Logf("%d claims produced in %v (%.0f/s), settled; claim->commit p50 %.3fs p99 %.3fs (histogram bucket bounds), ledger %s",
		rate*seconds, produced, float64(rate*seconds)/produced.Seconds(), h.Quantile(0.5), h.Quantile(0.99), url[:6])
}
