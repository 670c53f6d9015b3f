package ticketgen

import (
	"context"
	"math"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"shake/ticket"
)

// The fairness promise: the amount a shaker gets does not depend on when they shake. An
// edge hands a shard's tickets out in ticket-id order, so a ticket's position inside its
// round is the order in which shakers get it. These tests generate real campaigns with
// Generate, read the shard files back, and check that every position of a round sees the
// same distribution of amounts.

// fairWindow is the number of tickets of one shard-round in the fairness campaigns: each
// round of each shard is one window of N = 10 consecutive tickets, the classic "100 yuan
// split ten ways" packet, repeated until the campaign holds fairnessTickets tickets.
const fairWindow = 10

// fairnessCampaign generates a campaign of n tickets in segments of fairWindow tickets
// (edges x rounds segments), each segment's budget fairWindow*mean, and returns the
// amounts of every segment in id order.
func fairnessCampaign(t *testing.T, n uint64, mean, minA, maxA int64, prizes []Prize) [][]uint32 {
	t.Helper()
	const rounds = 1000
	segments := n / fairWindow
	edges := int(segments / rounds)
	if uint64(edges)*rounds*fairWindow != n {
		t.Fatalf("BUG: %d tickets is not a whole number of %d-round, %d-ticket segments", n, rounds, fairWindow)
	}
	start := testNow.Add(time.Hour)
	ws := make([]ticket.RoundWindow, rounds)
	for i := range ws {
		ws[i] = ticket.RoundWindow{Start: start.Add(time.Duration(i) * time.Minute), End: start.Add(time.Duration(i+1) * time.Minute)}
	}
	cfg := Config{Campaign: "fair", CampaignKey: testKey(), Budget: int64(n) * mean, Count: n, Edges: edges,
		Min: minA, Max: maxA, Rounds: ws, Seed: 2026, OutDir: t.TempDir(), Now: testNow, Prizes: prizes}
	m, err := Generate(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	segs := make([][]uint32, 0, segments)
	for _, ms := range m.Shards {
		sh, err := ticket.LoadShard(filepath.Join(cfg.OutDir, ms.File))
		if err != nil {
			t.Fatal(err)
		}
		for _, rr := range ms.Rounds {
			if rr.Count != fairWindow {
				t.Fatalf("shard %d round %d holds %d tickets, want %d", ms.Index, rr.Round, rr.Count, fairWindow)
			}
			seg := make([]uint32, fairWindow)
			for k := range seg {
				seg[k] = sh.Records[rr.FirstTicket-ms.FirstTicket+uint64(k)].Amount
			}
			segs = append(segs, seg)
		}
	}
	return segs
}

// fairnessCases are the campaigns every fairness test runs on: the plain lucky split
// (100 yuan ten ways, no cap), a capped one (every amount at most 1500 for a mean of 1000:
// a cap below twice the mean is where a sequential draw drifts most), and one with prizes among lucky amounts.
var fairnessCases = []struct {
	name       string
	mean       int64
	minA, maxA int64
	prizes     func(n uint64) []Prize
}{
	{"plain", 1000, 1, 0, nil},
	{"capped", 1000, 1, 1500, nil},
	{"prizes", 1000, 1, 1500, func(n uint64) []Prize { return []Prize{{Amount: 8880, Count: n / 100}} }},
}

// tolerance scales a tolerance stated for 10^6 tickets to a campaign of fairnessTickets:
// the same number of standard errors (1 at full size).
var tolerance = math.Sqrt(1e6 / float64(fairnessTickets))

// fairnessCache holds each case's amounts, generated once for all the fairness tests.
var fairnessCache = map[string][][]uint32{}

func eachFairnessCase(t *testing.T, check func(t *testing.T, segs [][]uint32)) {
	for _, c := range fairnessCases {
		t.Run(c.name, func(t *testing.T) {
			segs, ok := fairnessCache[c.name]
			if !ok {
				var prizes []Prize
				if c.prizes != nil {
					prizes = c.prizes(fairnessTickets)
				}
				segs = fairnessCampaign(t, fairnessTickets, c.mean, c.minA, c.maxA, prizes)
				fairnessCache[c.name] = segs
			}
			check(t, segs)
		})
	}
}

// TestFairnessPositionMeans: every position of a round has the campaign's mean amount,
// within 1%.
func TestFairnessPositionMeans(t *testing.T) {
	eachFairnessCase(t, func(t *testing.T, segs [][]uint32) {
		var sums [fairWindow]float64
		var total float64
		for _, s := range segs {
			for k, a := range s {
				sums[k] += float64(a)
				total += float64(a)
			}
		}
		mean := total / float64(len(segs)*fairWindow)
		worst := 0.0
		for k := range sums {
			pm := sums[k] / float64(len(segs))
			worst = max(worst, math.Abs(pm-mean)/mean)
			if math.Abs(pm-mean) > 0.01*tolerance*mean {
				t.Errorf("position %d: mean %.2f, campaign mean %.2f (%+.2f%%, allowed ±%.2f%%)", k, pm, mean, 100*(pm-mean)/mean, tolerance)
			}
		}
		t.Logf("%d windows: mean %.2f, the furthest position mean is %.3f%% off it", len(segs), mean, 100*worst)
	})
}

// TestFairnessLargestOfWindow: in a window of N = 10 consecutive tickets, each position
// holds the largest amount with chance 1/N, within half a percentage point (a tie for the
// largest is shared among the tied positions).
func TestFairnessLargestOfWindow(t *testing.T) {
	eachFairnessCase(t, func(t *testing.T, segs [][]uint32) {
		var wins [fairWindow]float64
		for _, s := range segs {
			top := slices.Max(s)
			ties := 0
			for _, a := range s {
				if a == top {
					ties++
				}
			}
			for k, a := range s {
				if a == top {
					wins[k] += 1 / float64(ties)
				}
			}
		}
		lo, hi := 1.0, 0.0
		for k, w := range wins {
			p := w / float64(len(segs))
			lo, hi = min(lo, p), max(hi, p)
			if math.Abs(p-1.0/fairWindow) > 0.005*tolerance {
				t.Errorf("position %d holds the largest of its window %.2f%% of the time, want %.1f%% ± %.2f pp", k, 100*p, 100.0/fairWindow, 0.5*tolerance)
			}
		}
		t.Logf("%d windows: each position holds the largest %.2f%% to %.2f%% of the time", len(segs), 100*lo, 100*hi)
	})
}

// TestFairnessKS: the amounts of the first tenth of every round and of the last tenth are
// one distribution, by a two-sample Kolmogorov-Smirnov test at p > 0.01.
func TestFairnessKS(t *testing.T) {
	eachFairnessCase(t, func(t *testing.T, segs [][]uint32) {
		tenth := fairWindow / 10
		var first, last []uint32
		for _, s := range segs {
			first = append(first, s[:tenth]...)
			last = append(last, s[len(s)-tenth:]...)
		}
		d, p := ksTwoSample(first, last)
		if p <= 0.01 {
			t.Errorf("first tenth vs last tenth of a round: D = %.4f, p = %.3g (want p > 0.01)", d, p)
		}
		t.Logf("KS first vs last tenth: n = %d each, D = %.4f, p = %.3f", len(first), d, p)
	})
}

// ksTwoSample returns the two-sample Kolmogorov-Smirnov statistic D of a and b and its
// asymptotic p-value (Stephens' correction), for samples of a few hundred and more.
func ksTwoSample(a, b []uint32) (d, p float64) {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	i, j := 0, 0
	for i < len(a) && j < len(b) {
		x := min(a[i], b[j])
		for i < len(a) && a[i] == x {
			i++
		}
		for j < len(b) && b[j] == x {
			j++
		}
		d = max(d, math.Abs(float64(i)/float64(len(a))-float64(j)/float64(len(b))))
	}
	ne := float64(len(a)) * float64(len(b)) / float64(len(a)+len(b))
	lambda := (math.Sqrt(ne) + 0.12 + 0.11/math.Sqrt(ne)) * d
	return d, kolmogorovQ(lambda)
}

// kolmogorovQ is the Kolmogorov distribution's tail, 2 Σ (-1)^(j-1) exp(-2 j² λ²).
func kolmogorovQ(lambda float64) float64 {
	if lambda < 0.2 {
		return 1
	}
	var sum float64
	sign := 1.0
	for j := 1; j <= 100; j++ {
		term := sign * 2 * math.Exp(-2*float64(j*j)*lambda*lambda)
		sum += term
		if math.Abs(term) < 1e-12 {
			break
		}
		sign = -sign
	}
	return min(max(sum, 0), 1)
}

func TestKSSelfCheck(t *testing.T) {
	// Same distribution: p is large; shifted by a tenth of its range: p is tiny.
	var a, b, c []uint32
	for i := uint32(0); i < 20000; i++ {
		a = append(a, (i*7919)%1000)
		b = append(b, (i*104729+3)%1000)
		c = append(c, (i*104729+3)%1000+100)
	}
	if _, p := ksTwoSample(a, b); p < 0.5 {
		t.Errorf("same distribution: p = %g", p)
	}
	if _, p := ksTwoSample(a, c); p > 1e-6 {
		t.Errorf("shifted distribution: p = %g", p)
	}
	if q := kolmogorovQ(1.36); math.Abs(q-0.049) > 0.002 {
		t.Errorf("Q(1.36) = %g, want about 0.049", q)
	}
}
