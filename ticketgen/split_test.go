package ticketgen

import (
	"math"
	"math/bits"
	"math/rand/v2"
	"testing"
)

func TestApportion(t *testing.T) {
	for _, tc := range []struct {
		total   uint64
		weights []uint64
		want    []uint64
	}{
		{10, []uint64{1, 1, 1}, []uint64{4, 3, 3}},
		{10, []uint64{1, 2, 2}, []uint64{2, 4, 4}},
		{0, []uint64{5, 1}, []uint64{0, 0}},
		{7, []uint64{0, 1}, []uint64{0, 7}},
		{math.MaxInt64, []uint64{1 << 32, 1}, []uint64{9223372034707292160, 2147483647}},
		{100, []uint64{3, 3, 3}, []uint64{34, 33, 33}},
	} {
		got := apportion(tc.total, tc.weights)
		for i := range got {
			if got[i] != tc.want[i] {
				t.Fatalf("apportion(%d, %v) = %v, want %v", tc.total, tc.weights, got, tc.want)
			}
		}
	}
}

// Property: parts sum to the total, and each part is the floor or the ceiling of its
// exact share (never more than one away, and never above an integral share).
func TestApportionProperties(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for iter := 0; iter < 5000; iter++ {
		n := 1 + rng.IntN(20)
		ws := make([]uint64, n)
		var W uint64
		for i := range ws {
			ws[i] = 1 + rng.Uint64N(1000)
			W += ws[i]
		}
		total := rng.Uint64N(1 << 40)
		parts := apportion(total, ws)
		var sum uint64
		for i, p := range parts {
			sum += p
			hi, lo := bits.Mul64(total, ws[i])
			fl, rem := bits.Div64(hi, lo, W)
			if p != fl && (p != fl+1 || rem == 0) {
				t.Fatalf("part %d = %d, exact share %d + %d/%d", i, p, fl, rem, W)
			}
		}
		if sum != total {
			t.Fatalf("parts %v of %d sum to %d", parts, total, sum)
		}
	}
}

// Property: for any feasible (budget, count, min, max) the splitter's amounts stay in
// [min, max] and sum to the budget exactly.
func TestSplitterProperties(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for iter := 0; iter < 3000; iter++ {
		k := uint64(1 + rng.IntN(300))
		minA := int64(1 + rng.IntN(50))
		maxA := minA + int64(rng.IntN(500))
		if rng.IntN(10) == 0 {
			maxA = minA // every ticket forced to one amount
		}
		// budget anywhere in the feasible range, often at its edges
		lo, hi := int64(k)*minA, int64(k)*maxA
		budget := lo + rng.Int64N(hi-lo+1)
		switch rng.IntN(6) {
		case 0:
			budget = lo
		case 1:
			budget = hi
		}
		s := splitter{rng: rand.New(rand.NewPCG(uint64(iter), 0)), rem: budget, left: k, min: minA, max: maxA}
		var sum int64
		for i := uint64(0); i < k; i++ {
			a := s.next()
			if a < minA || a > maxA {
				t.Fatalf("k=%d min=%d max=%d budget=%d: amount %d out of bounds", k, minA, maxA, budget, a)
			}
			sum += a
		}
		if sum != budget || s.rem != 0 || s.left != 0 {
			t.Fatalf("k=%d min=%d max=%d: sum %d, budget %d", k, minA, maxA, sum, budget)
		}
	}
}

// The double-mean draw: no ticket exceeds twice the remaining mean, and the amounts are
// spread (not all equal) with a mean equal to budget/count.
func TestSplitterDistribution(t *testing.T) {
	const k, budget = 100000, 10000000 // mean 100
	s := splitter{rng: rand.New(rand.NewPCG(5, 6)), rem: budget, left: k, min: 1, max: 1<<31 - 1}
	var sum, sumSq float64
	var maxA int64
	for i := 0; i < k; i++ {
		rem, left := s.rem, s.left
		a := s.next()
		if uint64(a) > uint64(rem)*2/left {
			t.Fatalf("ticket %d: %d exceeds twice the remaining mean %d/%d", i, a, rem, left)
		}
		sum += float64(a)
		sumSq += float64(a) * float64(a)
		maxA = max(maxA, a)
	}
	mean := sum / k
	sd := math.Sqrt(sumSq/k - mean*mean)
	// Uniform on [1, 199] has sd about 57.
	if mean != 100 || sd < 40 || sd > 70 || maxA < 190 {
		t.Fatalf("mean %.2f sd %.2f max %d", mean, sd, maxA)
	}
}

func TestShardRandIndependent(t *testing.T) {
	s1, s2 := (*[SeedSize]byte)(SeedFromUint64(1)), (*[SeedSize]byte)(SeedFromUint64(2))
	a, b, c := shardRand(s1, 0), shardRand(s1, 1), shardRand(s1, 0)
	x, y, z := a.Uint64(), b.Uint64(), c.Uint64()
	if x == y || x != z {
		t.Fatalf("%x %x %x", x, y, z)
	}
	if shardRand(s2, 0).Uint64() == x {
		t.Fatal("seed ignored")
	}
}
