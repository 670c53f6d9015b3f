package ticketgen

import (
	"context"
	"testing"
)

// A shard-round larger than maxChunk is drawn in chunks: the output still sums exactly,
// holds every prize exactly, and each chunk is shuffled (prizes are not all at its end).
func TestGenerateChunked(t *testing.T) {
	old := maxChunk
	maxChunk = 1000
	defer func() { maxChunk = old }()
	cfg := baseConfig(t)
	cfg.Count, cfg.Edges, cfg.Budget, cfg.Max = 10_007, 1, 10_007*100, 150
	cfg.Prizes = []Prize{{Amount: 5000, Count: 20}, {Amount: 800, Count: 301}}
	cfg.Budget += 20*5000 + 301*800 - 321*100
	m, err := Generate(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	recs := checkOutput(t, cfg, m)[0]
	got := map[uint32]int{}
	lastHalf := 0
	for i, r := range recs {
		got[r.Amount]++
		if r.Amount == 5000 && i%1000 >= 500 {
			lastHalf++
		}
	}
	if got[5000] != 20 || got[800] != 301 {
		t.Fatalf("prizes: %d of 5000, %d of 800", got[5000], got[800])
	}
	if lastHalf == 0 || lastHalf == 20 {
		t.Fatalf("%d of 20 top prizes in the second half of their chunks: not shuffled", lastHalf)
	}
	if m.Max != 5000 || m.LuckyMax != 150 || m.Min != 1 || m.LuckyMin != 1 {
		t.Fatalf("bounds: [%d, %d], lucky [%d, %d]", m.Min, m.Max, m.LuckyMin, m.LuckyMax)
	}
}
