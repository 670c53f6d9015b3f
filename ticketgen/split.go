package ticketgen

import (
	"crypto/sha256"
	"encoding/binary"
	"math/bits"
	"math/rand/v2"
	"sort"
)

// apportion splits total into len(weights) integer parts proportional to weights by the
// largest-remainder method: part i is floor(total*w_i/W) or that plus one, the extra units
// going to the largest remainders (ties to the lower index), so the parts sum to total
// exactly and the result is deterministic. A part whose exact share is an integer never
// gets an extra unit, which is what keeps a proportional budget split inside every part's
// [count*min, count*max] bounds. Weights must be non-zero in sum and at most 2^32 each with
// at most 2^16 of them, so W fits in 48 bits.
func apportion(total uint64, weights []uint64) []uint64 {
	var sum uint64
	for _, w := range weights {
		sum += w
	}
	parts := make([]uint64, len(weights))
	rems := make([]uint64, len(weights))
	var given uint64
	for i, w := range weights {
		hi, lo := bits.Mul64(total, w)
		// hi < sum because w <= sum, so Div64 cannot overflow.
		q, r := bits.Div64(hi, lo, sum)
		parts[i], rems[i] = q, r
		given += q
	}
	left := total - given // < len(weights)
	if left == 0 {
		return parts
	}
	order := make([]int, len(weights))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool { return rems[order[a]] > rems[order[b]] })
	for _, i := range order[:left] {
		parts[i]++
	}
	return parts
}

// splitter draws the amounts of one segment (one round of one shard): count tickets that
// sum to exactly budget, each in [min, max]. See the package documentation for the
// distribution.
type splitter struct {
	rng      *rand.Rand
	rem      int64  // budget not yet handed out
	left     uint64 // tickets not yet drawn
	min, max int64
}

// next returns the next amount. The caller guarantees left*min <= rem <= left*max on
// entry (true for every segment the plan makes), and next keeps it true: the draw is
// clamped so that the remaining tickets can still be filled within [min, max].
func (s *splitter) next() int64 {
	k := s.left
	lo := s.min
	// lo = max(min, rem-(k-1)*max): the rest can carry at most (k-1)*max. When
	// (k-1) > rem/max that product exceeds rem, the bound is negative and min wins;
	// testing that first also keeps the multiplication from overflowing.
	if k-1 <= uint64(s.rem/s.max) {
		if t := s.rem - int64(k-1)*s.max; t > lo {
			lo = t
		}
	}
	// hi = min(max, rem-(k-1)*min, floor(2*rem/k)): the rest needs at least (k-1)*min,
	// and the "double mean" caps one ticket at twice the remaining average.
	hi := s.max
	if t := s.rem - int64(k-1)*s.min; t < hi {
		hi = t
	}
	if t := uint64(s.rem) * 2 / k; t < uint64(hi) {
		hi = int64(t)
	}
	a := lo
	if hi > lo {
		a = lo + int64(s.rng.Uint64N(uint64(hi-lo)+1))
	}
	s.rem -= a
	s.left--
	return a
}

// shardRand returns the random source of one shard: PCG seeded from SHA-256 of the run's
// 32-byte seed and the shard index, so shards are independent streams, any shard can be
// regenerated alone (the reveal does), and the output does not depend on how many workers
// ran.
func shardRand(seed *[SeedSize]byte, shard int) *rand.Rand {
	const label = "shake/ticketgen/v2"
	var in [len(label) + SeedSize + 8]byte
	n := copy(in[:], label)
	n += copy(in[n:], seed[:])
	binary.BigEndian.PutUint64(in[n:], uint64(shard))
	sum := sha256.Sum256(in[:])
	return rand.New(rand.NewPCG(binary.BigEndian.Uint64(sum[:8]), binary.BigEndian.Uint64(sum[8:16])))
}
