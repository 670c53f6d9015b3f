package ledger

import (
	"context"
	"path/filepath"
	"sync"
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

// BenchmarkPostTwoShards measures two connections posting at once (two settlers), one
// shard each, batches of 2,000: with one budget account per shard ("per-shard") they
// lock different rows; with the campaign funded whole ("one-account", every ledger
// before per-shard accounts) every batch waits for the other's budget row.
func BenchmarkPostTwoShards(b *testing.B) {
	u := testpg.URL(b)
	if u == "" {
		b.Skip(testpg.Env + " is unset: the row locks measured are PostgreSQL's")
	}
	for _, mode := range []string{"one-account", "per-shard"} {
		next := [2]uint64{1, 1 << 40}
		b.Run(mode, func(b *testing.B) {
			ctx := context.Background()
			var ls [2]Ledger
			for i := range ls {
				l, err := Open(ctx, u)
				if err != nil {
					b.Fatal(err)
				}
				defer l.Close()
				ls[i] = l
			}
			var err error
			if mode == "per-shard" {
				err = ls[0].FundShards(ctx, "two-"+mode, "CNY", []int64{1 << 59, 1 << 59})
			} else {
				err = ls[0].Fund(ctx, "two-"+mode, "CNY", 1<<60)
			}
			if err != nil {
				b.Fatal(err)
			}
			const batch = 2000
			b.ReportAllocs()
			b.ResetTimer()
			var wg sync.WaitGroup
			for w := range ls {
				wg.Add(1)
				go func() {
					defer wg.Done()
					ps := make([]Posting, batch)
					for i := 0; i < b.N; i++ {
						for j := range ps {
							ps[j] = posting("two-"+mode, next[w], int64(next[w]%500+1), next[w]*7919%100000)
							ps[j].Shard = w
							next[w]++
						}
						if r, err := ls[w].Post(ctx, ps); err != nil || r.Posted != batch {
							b.Errorf("%+v %v", r, err)
							return
						}
					}
				}()
			}
			wg.Wait()
			b.ReportMetric(float64(2*b.N*batch)/b.Elapsed().Seconds(), "postings/s")
		})
	}
}
