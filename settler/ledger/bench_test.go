package ledger

import (
	"context"
	"path/filepath"
	"testing"

	"shake/internal/testpg"
)

// BenchmarkPost measures postings/s in batches of 2000 (the settler's default batch),
// every posting new, wallets spread over 100,000 users.
func BenchmarkPost(b *testing.B) {
	bs := []backend{{"sqlite", "sqlite://" + filepath.Join(b.TempDir(), "ledger.db")}}
	if u := testpg.URL(b); u != "" {
		bs = append(bs, backend{"postgres", u})
	}
	for _, be := range bs {
		// Ticket ids continue across the benchmark's repeated runs on the same ledger.
		next := uint64(1)
		b.Run(be.name, func(b *testing.B) {
			ctx := context.Background()
			l, err := Open(ctx, be.url)
			if err != nil {
				b.Fatal(err)
			}
			defer l.Close()
			if err := l.Fund(ctx, "bench", "CNY", 1<<60); err != nil {
				b.Fatal(err)
			}
			const batch = 2000
			ps := make([]Posting, batch)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				for j := range ps {
					ps[j] = posting("bench", next, int64(next%500+1), next*7919%100000)
					next++
				}
				r, err := l.Post(ctx, ps)
				if err != nil || r.Posted != batch {
					b.Fatalf("%+v %v", r, err)
				}
			}
			b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "postings/s")
		})
	}
}
