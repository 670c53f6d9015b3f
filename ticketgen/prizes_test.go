package ticketgen

import (
	"context"
	"math/rand/v2"
	"path/filepath"
	"testing"

	"shake/ticket"
)

// Property: for random campaigns with prizes, every prize has exactly its count of
// tickets (counted where no lucky amount can equal it), no shard and no round holds more
// than its share plus one of any prize, every total is exact, inspect finds the plan in
// the files, and the reveal holds.
func TestGeneratePrizesProperties(t *testing.T) {
	rng := rand.New(rand.NewPCG(25, 8))
	iters := 20
	if testing.Short() || raceEnabled {
		iters = 8
	}
	for iter := 0; iter < iters; iter++ {
		cfg := baseConfig(t)
		cfg.OutDir = filepath.Join(t.TempDir(), "out")
		cfg.Count = uint64(50 + rng.IntN(5000))
		cfg.Edges = 1 + rng.IntN(min(int(cfg.Count)/10, 9))
		cfg.Min, cfg.Max = 1, int64(50+rng.IntN(200))
		lucky, money := cfg.Count, int64(0)
		for k := 0; k < 1+rng.IntN(3); k++ {
			c := uint64(1 + rng.IntN(int(cfg.Count)/20+1))
			pr := Prize{Amount: cfg.Max + 1 + int64(k)*1000 + int64(rng.IntN(500)), Count: c}
			cfg.Prizes = append(cfg.Prizes, pr)
			lucky -= c
			money += int64(c) * pr.Amount
		}
		cfg.Budget = money + int64(lucky)*(1+rng.Int64N(cfg.Max))
		m := generateRandomShape(t, rng, &cfg, 5, 6)
		r, err := InspectManifest(filepath.Join(cfg.OutDir, ManifestFile), cfg.CampaignKey)
		if err != nil || !r.OK() {
			t.Fatalf("inspect: %v %v", err, r.Problems)
		}
		d := r.Distribution
		for k, pr := range cfg.Prizes {
			var total uint64
			for i, got := range d.PerShard(k) {
				share := float64(pr.Count) * float64(m.Shards[i].Count) / float64(m.Count)
				if float64(got) > share+1 {
					t.Fatalf("prize %d x %d: shard %d holds %d, share %.2f", pr.Amount, pr.Count, i, got, share)
				}
				total += got
			}
			for j, got := range d.PerRound(k) {
				var n uint64
				for _, s := range m.Shards {
					n += s.Rounds[j].Count
				}
				share := float64(pr.Count) * float64(n) / float64(m.Count)
				if float64(got) > share+1 {
					t.Fatalf("prize %d x %d: round %d holds %d, share %.2f (%+v)", pr.Amount, pr.Count, j, got, share, d.PrizeTickets)
				}
			}
			if total != pr.Count {
				t.Fatalf("prize %d x %d: %d tickets in the files", pr.Amount, pr.Count, total)
			}
		}
		if d.Amounts.Count != cfg.Count || d.Amounts.Sum != cfg.Budget {
			t.Fatalf("files hold %d tickets / %d", d.Amounts.Count, d.Amounts.Sum)
		}
		rv, err := Reveal(filepath.Join(cfg.OutDir, ManifestFile), filepath.Join(cfg.OutDir, SeedFile))
		if err != nil || !rv.OK() {
			t.Fatalf("reveal: %v %v", err, rv.Problems)
		}
	}
}

// The dry run draws what Generate writes: the same lucky amounts' largest per
// shard-round and the same prize spread.
func TestPreviewMatchesGenerate(t *testing.T) {
	cfg := baseConfig(t)
	cfg.Max = 150
	cfg.Prizes = []Prize{{Amount: 8888, Count: 5}}
	cfg.Budget = 5*8888 + 995*100
	_, pd, err := Preview(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	m, err := Generate(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	r, err := InspectManifest(filepath.Join(cfg.OutDir, ManifestFile), nil)
	if err != nil || !r.OK() {
		t.Fatalf("inspect: %v %v", err, r.Problems)
	}
	for i := range m.Shards {
		for j := range m.Shards[i].Rounds {
			fd := r.Distribution
			if pd.PrizeTickets[i][j][0] != fd.PrizeTickets[i][j][0] {
				t.Fatalf("shard %d round %d: preview %d prizes, files %d", i, j, pd.PrizeTickets[i][j][0], fd.PrizeTickets[i][j][0])
			}
			// The files' largest is a prize where there is one; else the lucky largest.
			if fd.PrizeTickets[i][j][0] == 0 && pd.Largest[i][j] != fd.Largest[i][j] {
				t.Fatalf("shard %d round %d: preview largest %d, files %d", i, j, pd.Largest[i][j], fd.Largest[i][j])
			}
		}
	}
	if pd.Amounts.Count != 995 || pd.Amounts.Sum != 995*100 || pd.Amounts.Largest > 150 {
		t.Fatalf("preview lucky amounts: %d tickets, sum %d, largest %d", pd.Amounts.Count, pd.Amounts.Sum, pd.Amounts.Largest)
	}
}

func TestAmountStatsPercentiles(t *testing.T) {
	var s AmountStats
	for a := uint32(1); a <= 1000; a++ {
		s.Add(a)
	}
	if !s.Exact() || s.Percentile(50) != 500 || s.Percentile(99) != 990 || s.Percentile(100) != 1000 || s.Smallest != 1 || s.Largest != 1000 {
		t.Fatalf("p50 %d p99 %d p100 %d", s.Percentile(50), s.Percentile(99), s.Percentile(100))
	}
	var big AmountStats
	for i := uint32(0); i < 10*statsSample; i++ {
		big.Add(i % 1000)
	}
	if big.Exact() || big.Percentile(50) < 480 || big.Percentile(50) > 520 {
		t.Fatalf("sampled p50 %d", big.Percentile(50))
	}
}

// allocatePrizes alone, on many shapes (up to 40 shards of 10 to 409 tickets, up to 30
// rounds, prizes on up to a third and a tenth of the tickets):
// every prize is placed exactly, within every shard-round's room, and no shard or round
// gets more than its share plus one.
func TestAllocatePrizesShares(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 25))
	iters := 3000
	if raceEnabled {
		iters = 500
	}
	for iter := 0; iter < iters; iter++ {
		shards := make([]ticket.ManifestShard, 1+rng.IntN(40))
		rounds := 1 + rng.IntN(30)
		var total uint64
		for i := range shards {
			n := uint64(10 + rng.IntN(400))
			rc := apportion(n, ones(uint64(rounds)))
			shards[i] = ticket.ManifestShard{Count: n, Rounds: make([]ticket.RoundRange, rounds)}
			for j := range rc {
				shards[i].Rounds[j].Count = rc[j]
			}
			total += n
		}
		prizes := []ticket.Prize{{Amount: 9, Count: 1 + rng.Uint64N(total/3)}, {Amount: 8, Count: 1 + rng.Uint64N(total/10)}}
		alloc, err := allocatePrizes(prizes, shards, total)
		if err != nil {
			t.Fatalf("iter %d: %v", iter, err)
		}
		for p, pr := range prizes {
			roundGot := make([]uint64, rounds)
			roundN := make([]uint64, rounds)
			var placed uint64
			for i, s := range shards {
				var got uint64
				for j, rr := range s.Rounds {
					got += alloc[i][j][p]
					roundGot[j] += alloc[i][j][p]
					roundN[j] += rr.Count
					if alloc[i][j][0]+alloc[i][j][1] > rr.Count {
						t.Fatalf("iter %d: shard %d round %d: %d prizes in %d tickets", iter, i, j, alloc[i][j][0]+alloc[i][j][1], rr.Count)
					}
				}
				if share := float64(pr.Count) * float64(s.Count) / float64(total); float64(got) > share+1 {
					t.Fatalf("iter %d prize %d: shard %d got %d, share %.3f", iter, p, i, got, share)
				}
				placed += got
			}
			for j := range roundGot {
				if share := float64(pr.Count) * float64(roundN[j]) / float64(total); float64(roundGot[j]) > share+1 {
					t.Fatalf("iter %d prize %d (%d over %d shards, %d rounds): round %d got %d, share %.3f", iter, p, pr.Count, len(shards), rounds, j, roundGot[j], share)
				}
			}
			if placed != pr.Count {
				t.Fatalf("iter %d: placed %d of %d", iter, placed, pr.Count)
			}
		}
	}
}
