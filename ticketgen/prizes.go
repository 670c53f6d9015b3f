package ticketgen

import (
	"fmt"
	"math/bits"
	"strconv"
	"strings"

	"shake/ticket"
)

// Prize is a fixed prize: exactly Count tickets of exactly Amount (`--prize AMOUNTxCOUNT`).
type Prize = ticket.Prize

// ParsePrize parses AMOUNTxCOUNT ("88800x8"): a positive amount in minor units and a
// positive count.
func ParsePrize(s string) (Prize, error) {
	a, c, ok := strings.Cut(strings.ToLower(s), "x")
	if !ok {
		return Prize{}, fmt.Errorf("want AMOUNTxCOUNT (e.g. 88800x8), got %q", s)
	}
	amount, err := strconv.ParseInt(a, 10, 64)
	if err != nil || amount < 1 || amount > ticket.MaxTicketAmount {
		return Prize{}, fmt.Errorf("amount %q is not an integer between 1 and %d", a, ticket.MaxTicketAmount)
	}
	count, err := strconv.ParseUint(c, 10, 64)
	if err != nil || count < 1 || count > ticket.MaxTickets {
		return Prize{}, fmt.Errorf("count %q is not an integer between 1 and %d", c, uint64(ticket.MaxTickets))
	}
	return Prize{Amount: amount, Count: count}, nil
}

// checkPrizes validates cfg.Prizes and sets the lucky count and budget: what is left of
// Count and Budget for the lucky amounts once every prize is taken out.
func (p *plan) checkPrizes() error {
	cfg := &p.cfg
	p.luckyCount, p.luckyBudget = cfg.Count, cfg.Budget
	if len(cfg.Prizes) > ticket.MaxPrizes {
		return configErr("prize", "at most %d prizes, have %d", ticket.MaxPrizes, len(cfg.Prizes))
	}
	for _, pr := range cfg.Prizes {
		if pr.Amount < 1 || pr.Amount > ticket.MaxTicketAmount || pr.Count < 1 {
			return configErr("prize", "%dx%d: the amount must be between 1 and %d and the count at least 1", pr.Amount, pr.Count, ticket.MaxTicketAmount)
		}
		if pr.Count > p.luckyCount {
			return configErr("prize", "the prizes take more than the %d tickets of --count", cfg.Count)
		}
		if hi, lo := bits.Mul64(pr.Count, uint64(pr.Amount)); hi != 0 || lo > uint64(p.luckyBudget) {
			return configErr("prize", "the prizes take more than the %d of --budget", cfg.Budget)
		}
		p.luckyCount -= pr.Count
		p.luckyBudget -= int64(pr.Count) * pr.Amount
	}
	if p.luckyCount == 0 && p.luckyBudget != 0 {
		return configErr("prize", "the prizes take every ticket but leave %d of --budget for no ticket", p.luckyBudget)
	}
	return nil
}

// luckyBoundsFlag names the flag to blame when the lucky tickets cannot carry what is
// left of the budget: --prize when prizes took part of it, else --budget.
func (p *plan) luckyBoundsFlag() string {
	if len(p.cfg.Prizes) > 0 {
		return "prize"
	}
	return "budget"
}

// split fills p.shards from the per-shard ticket counts: each shard's rounds, the prize
// tickets of every shard-round (allocatePrizes), and the lucky budget, apportioned by
// lucky tickets to shards and then to rounds, so every shard-round can carry its lucky
// budget within [min, max]. A round's amount is its lucky budget plus its prizes.
func (p *plan) split(counts []uint64) error {
	next := uint64(1)
	p.shards = make([]ticket.ManifestShard, len(counts))
	for i, n := range counts {
		rc := apportion(n, ones(uint64(len(p.rounds))))
		s := ticket.ManifestShard{Index: i, File: shardFile(i), KeyFile: keyFile(i), FirstTicket: next, Count: n,
			Rounds: make([]ticket.RoundRange, len(p.rounds))}
		rn := next
		for j := range rc {
			s.Rounds[j] = ticket.RoundRange{Round: j, FirstTicket: rn, Count: rc[j]}
			rn += rc[j]
		}
		p.shards[i] = s
		next += n
	}
	alloc, err := allocatePrizes(p.cfg.Prizes, p.shards, p.cfg.Count)
	if err != nil {
		return err
	}
	p.alloc = alloc
	lucky := make([]uint64, len(counts))
	for i := range p.shards {
		for j := range p.shards[i].Rounds {
			lucky[i] += p.segment(i, j, 0).luckyCount()
		}
	}
	var shardLucky []uint64
	if p.luckyCount > 0 {
		shardLucky = apportion(uint64(p.luckyBudget), lucky)
	}
	for i := range p.shards {
		s := &p.shards[i]
		rl := make([]uint64, len(s.Rounds))
		for j := range rl {
			rl[j] = p.segment(i, j, 0).luckyCount()
		}
		var rb []uint64
		if lucky[i] > 0 {
			rb = apportion(shardLucky[i], rl)
		}
		for j := range s.Rounds {
			seg := p.segment(i, j, 0)
			var b int64
			if rb != nil {
				b = int64(rb[j])
			}
			// Second check of the plan where it is made: every segment must be feasible.
			if lc := seg.luckyCount(); !feasible(lc, b, p.min, p.max) {
				return fmt.Errorf("BUG: shard %d round %d: %d lucky tickets cannot carry %d", i, j, lc, b)
			}
			s.Rounds[j].Amount = b + p.prizeMoney(seg.prizes)
			s.Amount += s.Rounds[j].Amount
		}
	}
	return nil
}

// segment returns shard i round j's segment, with lucky as its lucky budget.
func (p *plan) segment(i, j int, lucky int64) segment {
	s := segment{count: p.shards[i].Rounds[j].Count, lucky: lucky}
	if p.alloc != nil {
		s.prizes = p.alloc[i][j]
	}
	return s
}

// prizeMoney is the money of counts[k] tickets of prize k, for every k.
func (p *plan) prizeMoney(counts []uint64) int64 {
	var m int64
	for k, c := range counts {
		m += int64(c) * p.cfg.Prizes[k].Amount
	}
	return m
}

// prizeAmounts lists the prizes' amounts in order.
func prizeAmounts(prizes []Prize) []int64 {
	a := make([]int64, len(prizes))
	for i, pr := range prizes {
		a[i] = pr.Amount
	}
	return a
}

// maxRisk is the manifest's max_risk: always written, so a reader need not know the
// default.
func (p *plan) maxRisk() *int {
	r := ticket.RiskLimit(p.cfg.MaxRisk)
	return &r
}

// checkRules checks the campaign's rules: per-user, verifiers, per-device, max-risk.
func checkRules(cfg *Config) error {
	if cfg.PerUser < 0 || cfg.PerUser > ticket.MaxPerUser {
		return configErr("per-user", "must be between 0 (no limit) and %d, have %d", ticket.MaxPerUser, cfg.PerUser)
	}
	if cfg.Verifiers < 0 || cfg.Verifiers > ticket.MaxVerifiers {
		return configErr("verifiers", "must be between 1 and %d, have %d", ticket.MaxVerifiers, cfg.Verifiers)
	}
	if cfg.PerDevice < 0 || cfg.PerDevice > ticket.MaxPerUser {
		return configErr("per-device", "must be between 0 (no rule) and %d, have %d", ticket.MaxPerUser, cfg.PerDevice)
	}
	if r := ticket.RiskLimit(cfg.MaxRisk); r < 0 || r > ticket.MaxRisk {
		return configErr("max-risk", "must be between 0 and %d, have %d", ticket.MaxRisk, r)
	}
	return nil
}
