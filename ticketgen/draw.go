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
	return drawSegmentLucky(rng, s, prizeAmounts, minA, maxA, buf, nil, emit)
}

// drawSegmentLucky is drawSegment that also hands every lucky amount, as drawn, to lucky
// (when not nil): the dry run's statistics of the lucky amounts.
func drawSegmentLucky(rng *rand.Rand, s segment, prizeAmounts []int64, minA, maxA int64, buf []uint32,
	lucky func(uint32), emit func(uint32) error) ([]uint32, error) {
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
				if lucky != nil {
					lucky(uint32(a))
				}
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
// counts. For each prize, the shards' totals are its count apportioned by their ticket
// counts, and the rounds' totals its count apportioned by the rounds' ticket counts
// (largest remainder: each is its share rounded down or up, so never more than its
// share plus one). placePrize then fills a matrix with exactly those totals inside each
// shard-round's room. It depends only on the shard and round counts, which the manifest
// records, so the reveal recomputes it. Errors name --prize.
func allocatePrizes(prizes []ticket.Prize, shards []ticket.ManifestShard, total uint64) ([][][]uint64, error) {
	if len(prizes) == 0 {
		return nil, nil
	}
	rounds := len(shards[0].Rounds)
	alloc := make([][][]uint64, len(shards))
	room := make([][]uint64, len(shards)) // tickets of a shard-round not yet a prize
	shardN := make([]uint64, len(shards))
	roundN := make([]uint64, rounds)
	for i, s := range shards {
		alloc[i] = make([][]uint64, rounds)
		room[i] = make([]uint64, rounds)
		shardN[i] = s.Count
		for j, rr := range s.Rounds {
			alloc[i][j] = make([]uint64, len(prizes))
			room[i][j] = rr.Count
			roundN[j] += rr.Count
		}
	}
	for p, pr := range prizes {
		caps := make([]uint64, rounds)
		for j, n := range roundN {
			// ceil(share): at most the round's share plus one, less than that when the
			// share is whole.
			hi, lo := bits.Mul64(pr.Count, n)
			q, r := bits.Div64(hi, lo, total)
			caps[j] = q
			if r > 0 {
				caps[j]++
			}
		}
		a, err := placePrize(apportion(pr.Count, shardN), apportion(pr.Count, roundN), caps, room)
		if err != nil {
			return nil, &ConfigError{Field: "prize", Msg: fmt.Sprintf("%dx%d: %v", pr.Amount, pr.Count, err)}
		}
		for i := range a {
			for j, k := range a[i] {
				alloc[i][j][p] = k
				room[i][j] -= k
			}
		}
	}
	return alloc, nil
}

// placePrize returns a[i][j] <= room[i][j] with row sums rowSum, column sums at most
// colCap, and aiming at column sums colSum (which have the row sums' total). Shard by
// shard, a shard's total is first apportioned over the rounds in proportion to what each
// round still has to reach colSum (capped by the room), which spreads a shard's prizes
// like the rounds' sizes; what that leaves unplaced is then placed one unit at a time
// along augmenting paths (a unit moved from shard i' to shard i in one round makes room
// for i' in another) ending at a round below colCap: a transportation problem's max-flow
// repair, which finds a place whenever one exists.
func placePrize(rowSum, colSum, colCap []uint64, room [][]uint64) ([][]uint64, error) {
	a := make([][]uint64, len(rowSum))
	colTotal := make([]uint64, len(colSum))
	short := make([]uint64, len(rowSum))
	w := make([]uint64, len(colSum))
	for i := range a {
		a[i] = make([]uint64, len(colSum))
		var sum uint64
		for j := range w {
			w[j] = min(colSum[j]-min(colTotal[j], colSum[j]), room[i][j])
			sum += w[j]
		}
		var placed uint64
		if sum > 0 && rowSum[i] > 0 {
			for j, k := range apportion(rowSum[i], w) {
				k = min(k, w[j])
				a[i][j] = k
				colTotal[j] += k
				placed += k
			}
		}
		short[i] = rowSum[i] - placed
	}
	for i := range short {
		for ; short[i] > 0; short[i]-- {
			if !augment(a, room, colTotal, colCap, i) {
				return nil, fmt.Errorf("too many prizes for the tickets of shard %d's rounds", i)
			}
		}
	}
	return a, nil
}

// augment places one more unit in row start: a breadth-first search from start over
// "row i may take a unit in column j" (a[i][j] < room[i][j]) and "column j may give a
// unit back to row i'" (a[i'][j] > 0), ending at a column below its cap; the path's
// units shift along it. False when no path exists.
func augment(a, room [][]uint64, colTotal, colCap []uint64, start int) bool {
	rows, cols := len(a), len(colTotal)
	const none = -1
	fromRow := make([]int, cols) // the row that reached column j
	fromCol := make([]int, rows) // the column that reached row i
	for j := range fromRow {
		fromRow[j] = none
	}
	for i := range fromCol {
		fromCol[i] = none
	}
	seenRow := make([]bool, rows)
	seenRow[start] = true
	queue := []int{start}
	for len(queue) > 0 {
		i := queue[0]
		queue = queue[1:]
		for j := range cols {
			if fromRow[j] != none || a[i][j] >= room[i][j] {
				continue
			}
			fromRow[j] = i
			if colTotal[j] < colCap[j] {
				// Shift the units back along the path: row -> column -> row ... -> start.
				colTotal[j]++
				for {
					r := fromRow[j]
					a[r][j]++
					if r == start {
						return true
					}
					j = fromCol[r]
					a[r][j]--
				}
			}
			for r := 0; r < rows; r++ {
				if !seenRow[r] && a[r][j] > 0 {
					seenRow[r] = true
					fromCol[r] = j
					queue = append(queue, r)
				}
			}
		}
	}
	return false
}
