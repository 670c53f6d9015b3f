package ticketgen

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"shake/ticket"
)

// RevealReport is what Reveal found. The reveal holds when Problems is empty.
type RevealReport struct {
	Manifest   *ticket.Manifest
	SeedSHA256 string // SHA-256 of the seed file's bytes
	Committed  bool   // SeedSHA256 is the manifest's seed_sha256
	Shards     int    // shard files recomputed and found equal
	Tickets    uint64 // tickets recomputed and found equal
	Problems   []string
}

// OK reports whether the commitment and every shard file agree with the seed.
func (r *RevealReport) OK() bool { return r.Committed && len(r.Problems) == 0 }

func (r *RevealReport) problem(format string, args ...any) {
	r.Problems = append(r.Problems, fmt.Sprintf(format, args...))
}

// Reveal checks a campaign after its seed is published: that the seed file is the one
// the manifest committed to (its SHA-256 is seed_sha256), and that every ticket of every
// shard file listed by the manifest holds the amount the seed and the manifest's recorded
// parameters (shard and round counts and amounts, lucky bounds, prizes) give. It stops
// at the first ticket that differs and names it. It needs no key: a player or regulator
// can run it with the published manifest, seed and shard files. The error is non-nil only
// when a file cannot be read at all (wrapping ErrUnreadable).
func Reveal(manifestPath, seedPath string) (*RevealReport, error) {
	r := &RevealReport{}
	if err := checkRegular("manifest", manifestPath); err != nil {
		return nil, err
	}
	seed, sum, err := ReadSeedFile(seedPath)
	if err != nil {
		if errors.Is(err, ErrUnreadable) {
			return nil, err
		}
		r.problem("%v", err)
		return r, nil
	}
	r.SeedSHA256 = sum
	m, err := ticket.LoadManifest(manifestPath)
	if err != nil {
		r.problem("%v", err)
		return r, nil
	}
	r.Manifest = m
	switch {
	case m.SeedSHA256 == "":
		r.problem("the manifest has no seed_sha256 (written before commit and reveal): there is no commitment to check")
		return r, nil
	case sum != m.SeedSHA256:
		r.problem("the seed file's SHA-256 %s is not the manifest's seed_sha256 %s: not the committed seed", sum, m.SeedSHA256)
		return r, nil
	}
	r.Committed = true
	p, err := revealPlan(m, seed)
	if err != nil {
		r.problem("the manifest's prizes cannot be spread over its shards: %v", err)
		return r, nil
	}
	dir := filepath.Dir(manifestPath)
	for i := range m.Shards {
		ok, err := p.revealShard(r, dir, i)
		if err != nil {
			return nil, err
		}
		if !ok {
			return r, nil
		}
		r.Shards++
	}
	return r, nil
}

// revealPlan rebuilds the generator's plan from a manifest and a seed.
func revealPlan(m *ticket.Manifest, seed *[SeedSize]byte) (*plan, error) {
	p := &plan{cfg: Config{Campaign: m.Campaign, Count: m.Count, Budget: m.Budget, Prizes: m.Prizes},
		min: m.Min, max: m.Max, seed: *seed, shards: m.Shards}
	if len(m.Prizes) > 0 {
		p.min, p.max = m.LuckyMin, m.LuckyMax
	}
	alloc, err := allocatePrizes(m.Prizes, m.Shards, m.Count)
	p.alloc = alloc
	return p, err
}

// revealShard recomputes shard i and compares it with its file; false (with the problem
// recorded) at the first difference.
func (p *plan) revealShard(r *RevealReport, dir string, i int) (bool, error) {
	ms := &p.shards[i]
	path := filepath.Join(dir, ms.File)
	f, err := os.Open(path)
	if err != nil {
		return false, fmt.Errorf("%w shard %s: %v", ErrUnreadable, path, err)
	}
	defer f.Close()
	h := sha256.New()
	sh, err := ticket.ReadShard(bufio.NewReaderSize(io.TeeReader(f, h), 1<<20), path)
	if err != nil {
		r.problem("shard %d: %v", i, err)
		return false, nil
	}
	if _, err := io.Copy(h, f); err != nil {
		return false, fmt.Errorf("%w shard %s: %v", ErrUnreadable, path, err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != ms.SHA256 {
		r.problem("shard %d: %s has SHA-256 %s, the manifest says %s", i, path, got, ms.SHA256)
		return false, nil
	}
	if err := r.Manifest.CheckHeader(&sh.Header); err != nil {
		r.problem("shard %d: %v", i, err)
		return false, nil
	}
	rng := shardRand(&p.seed, i)
	amounts := prizeAmounts(p.cfg.Prizes)
	var buf []uint32
	for j, rr := range ms.Rounds {
		id := rr.FirstTicket
		seg := p.segment(i, j, rr.Amount-p.prizeMoney(p.segment(i, j, 0).prizes))
		var bad bool
		buf, err = drawSegment(rng, seg, amounts, p.min, p.max, buf, func(a uint32) error {
			if got := sh.Records[id-ms.FirstTicket].Amount; got != a {
				r.problem("ticket %d (shard %d, round %d): the shard file holds %d, the seed gives %d", id, i, rr.Round, got, a)
				bad = true
				return errStopReveal
			}
			id++
			r.Tickets++
			return nil
		})
		if bad {
			return false, nil
		}
		if err != nil {
			r.problem("shard %d round %d: the recorded parameters cannot be drawn: %v", i, rr.Round, err)
			return false, nil
		}
	}
	return true, nil
}

var errStopReveal = errors.New("reveal: stop at the first difference")
