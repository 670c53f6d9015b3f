package settler

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"shake/internal/testpg"
	"shake/settler/ledger"
)

// BenchmarkSettle measures the whole settler's posting rate: claims already waiting in
// the topic (four partitions) are fetched, checked against the manifest and the shard
// files' amounts, posted to the ledger in batches of 2,000 and their offsets committed.
// One op drains every claim into a fresh ledger under a fresh consumer group, from the
// settler's start (group join included) to the last posting; postings/s is the figure.
// SHAKE_BENCH_SETTLE_CLAIMS sets the claims per op (default 50,000).
func BenchmarkSettle(b *testing.B) {
	claims := 50_000
	if v, err := strconv.Atoi(os.Getenv("SHAKE_BENCH_SETTLE_CLAIMS")); err == nil && v > 0 {
		claims = v
	}
	addr := startBroker(b)
	half := uint64(claims / 2)
	c := makeCampaign(b, b.TempDir(), "bset", []uint64{half, uint64(claims) - half}, time.Now().Add(time.Hour))
	amounts, err := LoadAmounts(c.manifest, c.dir)
	if err != nil {
		b.Fatal(err)
	}
	values := make([][]byte, claims)
	for i := range values {
		id := uint64(i + 1)
		values[i] = claimJSON(c.claim(id, id*7919%100_000+1))
	}
	produce(b, addr, values...)
	backends := map[string]func() string{"sqlite": func() string { return "sqlite://" + filepath.Join(b.TempDir(), "ledger.db") }}
	if testpg.URL(b) != "" {
		backends["postgres"] = func() string { return testpg.URL(b) }
	}
	for _, name := range []string{"sqlite", "postgres"} {
		fresh, ok := backends[name]
		if !ok {
			continue
		}
		b.Run(name, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				l, err := ledger.Open(context.Background(), fresh())
				if err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				r := startSettler(b, addr, c, l, func(cfg *Config) {
					cfg.Group = fmt.Sprintf("bench-%s-%d-%d", name, i, time.Now().UnixNano())
					cfg.Batch, cfg.Linger = 2000, 50*time.Millisecond
					cfg.Validator = c.validator(b, amounts)
				})
				// Not waitSeen's minute: on a busy machine a run may take longer.
				for deadline := time.Now().Add(15 * time.Minute); r.s.mPosted.Value() < uint64(claims) && time.Now().Before(deadline); {
					time.Sleep(10 * time.Millisecond)
				}
				b.StopTimer()
				r.stop()
				if err := <-r.done; err != nil {
					b.Fatal(err)
				}
				r.done <- nil // for the cleanup
				if got := r.s.mPosted.Value(); got != uint64(claims) {
					b.Fatalf("posted %d of %d claims", got, claims)
				}
				l.Close()
				b.StartTimer()
			}
			b.ReportMetric(float64(b.N*claims)/b.Elapsed().Seconds(), "postings/s")
		})
	}
}
