package ticketgen

import (
	"context"
	"math/rand/v2"
	"slices"

	"shake/ticket"
)

// statsSample bounds the amounts AmountStats keeps for its percentiles (256 KiB).
const statsSample = 1 << 16

// AmountStats summarizes a stream of amounts in bounded memory: count, sum, smallest,
// largest, and percentiles from a uniform sample (reservoir) of at most 2^16 amounts,
// exact when the stream is no longer than that.
type AmountStats struct {
	Count             uint64
	Sum               int64
	Smallest, Largest uint32
	sample            []uint32
	rng               *rand.Rand
	sorted            bool
}

// Add counts one amount.
func (s *AmountStats) Add(a uint32) {
	if s.Count == 0 || a < s.Smallest {
		s.Smallest = a
	}
	s.Largest = max(s.Largest, a)
	s.Count++
	s.Sum += int64(a)
	s.sorted = false
	if len(s.sample) < statsSample {
		s.sample = append(s.sample, a)
		return
	}
	if s.rng == nil {
		s.rng = rand.New(rand.NewPCG(1, 2)) // deterministic: the same files print the same
	}
	if j := s.rng.Uint64N(s.Count); j < statsSample {
		s.sample[j] = a
	}
}

// Exact reports whether the percentiles are exact (every amount is in the sample).
func (s *AmountStats) Exact() bool { return s.Count <= statsSample }

// Percentile returns the q-th percentile (0 < q <= 100) of the amounts, nearest rank.
func (s *AmountStats) Percentile(q float64) uint32 {
	if len(s.sample) == 0 {
		return 0
	}
	if !s.sorted {
		slices.Sort(s.sample)
		s.sorted = true
	}
	i := int(q/100*float64(len(s.sample))+0.999999) - 1
	return s.sample[min(max(i, 0), len(s.sample)-1)]
}

// Distribution is how a campaign's amounts are spread: every prize's tickets per shard
// and round, the lucky amounts (or, read back from files, every amount), and the largest
// amount of each shard-round.
type Distribution struct {
	Prizes []ticket.Prize
	// PrizeTickets[shard][round][prize] counts prize tickets: planned (Preview), or found
	// in the files (tickets holding the prize's amount, InspectManifest).
	PrizeTickets [][][]uint64
	// Largest[shard][round] is the largest amount of a shard-round (lucky amounts only
	// in a preview).
	Largest [][]uint32
	// Amounts are the lucky amounts of a preview, or every amount in the files.
	Amounts AmountStats
}

func newDistribution(prizes []ticket.Prize, shards []ticket.ManifestShard) *Distribution {
	d := &Distribution{Prizes: prizes, PrizeTickets: make([][][]uint64, len(shards)), Largest: make([][]uint32, len(shards))}
	for i, s := range shards {
		d.PrizeTickets[i] = make([][]uint64, len(s.Rounds))
		d.Largest[i] = make([]uint32, len(s.Rounds))
		for j := range s.Rounds {
			d.PrizeTickets[i][j] = make([]uint64, len(prizes))
		}
	}
	return d
}

// visitor returns what counts shard i's records as a shard file is inspected: every
// amount, each round's largest, and the tickets holding each prize's amount.
func (d *Distribution) visitor(i int) func(ticket.RoundRange, []ticket.Record) {
	return func(rr ticket.RoundRange, recs []ticket.Record) {
		if rr.Round < 0 || rr.Round >= len(d.Largest[i]) {
			return // the header's ranges disagree with the manifest: reported apart
		}
		for _, rec := range recs {
			d.Amounts.Add(rec.Amount)
			d.Largest[i][rr.Round] = max(d.Largest[i][rr.Round], rec.Amount)
			for k, pr := range d.Prizes {
				if int64(rec.Amount) == pr.Amount {
					d.PrizeTickets[i][rr.Round][k]++
				}
			}
		}
	}
}

// PerShard returns the prize's tickets in each shard.
func (d *Distribution) PerShard(prize int) []uint64 {
	out := make([]uint64, len(d.PrizeTickets))
	for i, rs := range d.PrizeTickets {
		for _, c := range rs {
			out[i] += c[prize]
		}
	}
	return out
}

// PerRound returns the prize's tickets in each round, over every shard.
func (d *Distribution) PerRound(prize int) []uint64 {
	var out []uint64
	for _, rs := range d.PrizeTickets {
		if out == nil {
			out = make([]uint64, len(rs))
		}
		for j, c := range rs {
			out[j] += c[prize]
		}
	}
	return out
}

// Preview checks cfg and draws every amount exactly as Generate would (the same seed
// gives the same amounts), writing nothing, and returns the manifest and how the amounts
// are spread: `shake gen --dry-run`. It takes time in proportion to Count (no MACs, no
// compression, no files) and memory bounded as Generate's.
func Preview(ctx context.Context, cfg Config) (*ticket.Manifest, *Distribution, error) {
	p, err := check(cfg)
	if err != nil {
		return nil, nil, err
	}
	m := p.manifest()
	d := newDistribution(p.cfg.Prizes, p.shards)
	amounts := prizeAmounts(p.cfg.Prizes)
	var buf []uint32
	for i := range p.shards {
		rng := shardRand(&p.seed, i)
		for j, rr := range p.shards[i].Rounds {
			if err := ctx.Err(); err != nil {
				return nil, nil, err
			}
			seg := p.segment(i, j, rr.Amount-p.prizeMoney(p.segment(i, j, 0).prizes))
			if seg.prizes != nil {
				copy(d.PrizeTickets[i][j], seg.prizes)
			}
			largest := &d.Largest[i][j]
			buf, err = drawSegmentLucky(rng, seg, amounts, p.min, p.max, buf, func(a uint32) {
				d.Amounts.Add(a)
				*largest = max(*largest, a)
			}, func(uint32) error { return nil })
			if err != nil {
				return nil, nil, err
			}
		}
	}
	return m, d, nil
}
