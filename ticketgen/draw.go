package ticketgen

import (
	"fmt"
	"math/bits"
	"math/rand/v2"

	"shake/ticket"
)

// maxChunk bounds the tickets drawn and shuffled at once: each worker holds at most one
// chunk of amounts, 4 bytes a ticket (16 MiB). A shard-round larger than this is drawn as
// several chunks of near-equal size, each with its proportional share of the round's
// lucky budget and prizes. A variable so tests can exercise the chunking.
var maxChunk uint64 = 1 << 22

// segment is what one shard-round holds: count tickets, of which prizes[p] carry prize
// p's amount exactly and the rest share lucky, the lucky budget, in [min, max].
type segment struct {
	count  uint64
	lucky  int64
	prizes []uint64 // per prize of the campaign, in manifest order; nil without prizes
}

// luckyCount is the number of lucky tickets of s.
func (s segment) luckyCount() uint64 {
	n := s.count
	for _, c := range s.prizes {
		n -= c
	}
	return n
}

// chunks splits s into pieces of at most maxChunk tickets, near-equal in size, each with
// its share of every prize (largest remainder by size) and of the lucky budget (by lucky
// tickets), so every piece is as feasible as s and has the same distribution.
func (s segment) chunks() ([]segment, error) {
	if s.count <= maxChunk {
		return []segment{s}, nil
	}
	n := (s.count + maxChunk - 1) / maxChunk
	counts := apportion(s.count, ones(n))
	out := make([]segment, n)
	for c := range out {
		out[c] = segment{count: counts[c], prizes: make([]uint64, len(s.prizes))}
	}
	for p, pc := range s.prizes {
		for c, k := range apportion(pc, counts) {
			out[c].prizes[p] = k
		}
	}
	lc := make([]uint64, n)
	var totalLucky uint64
	for c := range out {
		var pn uint64
		for _, k := range out[c].prizes {
			pn += k
		}
		if pn > out[c].count {
			return nil, fmt.Errorf("a round of %d tickets holds too many prizes to draw in chunks of %d", s.count, maxChunk)
		}
		lc[c] = out[c].count - pn
		totalLucky += lc[c]
	}
	if totalLucky > 0 {
		for c, b := range apportion(uint64(s.lucky), lc) {
			out[c].lucky = int64(b)
		}
	}
	return out, nil
}

// checkChunks checks, before anything is drawn, that every shard-round larger than
// maxChunk splits into feasible chunks (prizes crowded into one round might not).
func (p *plan) checkChunks() error {
	for i := range p.shards {
		for j, rr := range p.shards[i].Rounds {
			if rr.Count <= maxChunk || p.alloc == nil {
				continue
			}
			if _, err := p.segment(i, j, 0).chunks(); err != nil {
				return configErr("prize", "shard %d round %d: %v", i, j, err)
			}
		}
	}
	return nil
}

// feasible reports whether n lucky tickets can carry exactly lucky in [minA, maxA]:
// n*minA <= lucky <= n*maxA, in 128 bits, with 1 <= minA <= maxA (what the splitter
// needs to terminate exactly).
func feasible(n uint64, lucky, minA, maxA int64) bool {
	if minA < 1 || maxA < minA || lucky < 0 {
		return false
	}
	hi, lo := bits.Mul64(n, uint64(minA))
	if hi != 0 || lo > uint64(lucky) {
		return false
	}
	hi, lo = bits.Mul64(n, uint64(maxA))
	return hi != 0 || lo >= uint64(lucky)
}

func ones(n uint64) []uint64 {
	w := make([]uint64, n)
	for i := range w {
		w[i] = 1
	}
	return w
}

// drawSegment draws the amounts of one shard-round in ticket-id order and hands each to
// emit. Per chunk: the lucky amounts by the double-mean method, then every prize ticket,
// then a Fisher-Yates shuffle of the whole chunk with the shard's generator, so the
// amounts are in a uniformly random order over the ids: the amount a shaker gets does not
// depend on when in the round they shake. buf is reused across calls and returned.
func drawSegment(rng *rand.Rand, s segment, prizeAmounts []int64, minA, maxA int64, buf []uint32, emit func(uint32) error) ([]uint32, error) {
	if !feasible(s.luckyCount(), s.lucky, minA, maxA) {
		return buf, fmt.Errorf("%d lucky tickets cannot carry %d in [%d, %d]", s.luckyCount(), s.lucky, minA, maxA)
	}
	parts, err := s.chunks()
	if err != nil {
		return buf, err
	}
	for _, c := range parts {
		buf = buf[:0]
		if lc := c.luckyCount(); lc > 0 {
			sp := splitter{rng: rng, rem: c.lucky, left: lc, min: minA, max: maxA}
			for range lc {
				a := sp.next()
				// First check of the amount invariant, where the amount is made.
				if a < minA || a > maxA {
					return buf, fmt.Errorf("BUG: lucky amount %d outside [%d, %d]", a, minA, maxA)
				}
				buf = append(buf, uint32(a))
			}
			if sp.rem != 0 || sp.left != 0 {
				return buf, fmt.Errorf("BUG: %d left over after the split", sp.rem)
			}
		} else if c.lucky != 0 {
			return buf, fmt.Errorf("BUG: lucky budget %d without lucky tickets", c.lucky)
		}
		for p, k := range c.prizes {
			for range k {
				buf = append(buf, uint32(prizeAmounts[p]))
			}
		}
		if uint64(len(buf)) != c.count {
			return buf, fmt.Errorf("BUG: drew %d amounts for %d tickets", len(buf), c.count)
		}
		for i := len(buf) - 1; i > 0; i-- {
			j := rng.IntN(i + 1)
			buf[i], buf[j] = buf[j], buf[i]
		}
		for _, a := range buf {
			if err := emit(a); err != nil {
				return buf, err
			}
		}
	}
	return buf, nil
}

// allocatePrizes spreads every prize over the shards and rounds: [shard][round][prize]
// counts. A prize's tickets go to shards in proportion to their ticket counts (largest
// remainder, so a shard gets its share rounded down or up); inside a shard, to its rounds
// in proportion to their counts, rounded down, and the shard's leftover units to the
// rounds furthest behind their campaign-wide share so far, so no round runs ahead of its
// share by a whole prize either. It depends only on the shard and round counts, which the
// manifest records, so the reveal recomputes it. Errors name --prize.
func allocatePrizes(prizes []ticket.Prize, shards []ticket.ManifestShard, total uint64) ([][][]uint64, error) {
	if len(prizes) == 0 {
		return nil, nil
	}
	rounds := len(shards[0].Rounds)
	alloc := make([][][]uint64, len(shards))
	used := make([][]uint64, len(shards)) // prize tickets placed per shard-round
	for i := range shards {
		alloc[i] = make([][]uint64, rounds)
		used[i] = make([]uint64, rounds)
		for j := range alloc[i] {
			alloc[i][j] = make([]uint64, len(prizes))
		}
	}
	counts := make([]uint64, len(shards))
	for i, s := range shards {
		counts[i] = s.Count
	}
	for p, pr := range prizes {
		perShard := apportion(pr.Count, counts)
		exact := make([]float64, rounds) // campaign-wide share of each round so far
		given := make([]uint64, rounds)
		for i, s := range shards {
			g := perShard[i]
			var placed uint64
			frac := make([]float64, rounds)
			for j, rr := range s.Rounds {
				hi, lo := bits.Mul64(g, rr.Count)
				q, r := bits.Div64(hi, lo, s.Count)
				alloc[i][j][p] = q
				placed += q
				frac[j] = float64(r) / float64(s.Count)
				exact[j] += float64(float64(pr.Count) * float64(float64(rr.Count)/float64(total)))
			}
			for ; placed < g; placed++ {
				best := bestRound(frac, func(j int) bool { return alloc[i][j][p]+used[i][j] < s.Rounds[j].Count },
					func(j int) float64 { return exact[j] - float64(given[j]+alloc[i][j][p]) })
				if best < 0 {
					return nil, &ConfigError{Field: "prize", Msg: fmt.Sprintf("%d x %d: shard %d has no room left for its share of this prize", pr.Amount, pr.Count, i)}
				}
				alloc[i][best][p]++
				frac[best] = -1
			}
			for j := range frac {
				used[i][j] += alloc[i][j][p]
				given[j] += alloc[i][j][p]
				if used[i][j] > s.Rounds[j].Count {
					return nil, &ConfigError{Field: "prize", Msg: fmt.Sprintf("shard %d round %d: %d prize tickets for %d tickets", i, j, used[i][j], s.Rounds[j].Count)}
				}
			}
		}
	}
	return alloc, nil
}

// bestRound picks the round that takes a shard's next leftover prize unit: among the
// rounds with room that have not had one yet, those with a fractional share first (so a
// round's count stays its share rounded down or up), then the one furthest behind its
// campaign-wide share (deficit), ties to the lower index. -1 when no round has room.
func bestRound(frac []float64, room func(int) bool, deficit func(int) float64) int {
	best, bestFrac := -1, false
	for j, f := range frac {
		if f < 0 || !room(j) {
			continue
		}
		hasFrac := f > 0
		switch {
		case best < 0, hasFrac && !bestFrac:
			best, bestFrac = j, hasFrac
		case hasFrac == bestFrac && deficit(j) > deficit(best):
			best = j
		}
	}
	return best
}
