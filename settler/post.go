package settler

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/segmentio/kafka-go"

	"shake/internal/obs"
	"shake/settler/ledger"
)

// moneyMetrics are the series of the settler's money checks beyond the dead-letter
// counters: conflicts (a ticket handed out twice) and over-budget postings.
type moneyMetrics struct {
	conflicts  *obs.Counter
	overBudget *obs.Counter
}

func newMoneyMetrics(r *obs.Registry) moneyMetrics {
	return moneyMetrics{
		conflicts: r.Counter("shake_settler_conflicts_total",
			"Claims for a ticket already posted to another user (a ticket handed out twice): dead-lettered, never paid."),
		overBudget: r.Counter("shake_settler_over_budget_total",
			"Claims the ledger refused because the campaign's budget cannot cover them: dead-lettered, never paid."),
	}
}

// post posts b.postings (whose messages are msgs[b.index[i]]), retrying while the
// ledger fails. Postings the ledger holds for another uid (conflicts) and postings the
// budget cannot cover join b.dead: neither is paid, neither can stall the settler.
func (s *Settler) post(ctx context.Context, msgs []kafka.Message, b *batch) error {
	if len(b.postings) == 0 {
		return nil
	}
	res, err := s.postOnce(ctx, b.postings)
	if errors.Is(err, ledger.ErrOverBudget) {
		// The ledger refuses the batch whole. That cannot happen while every claim is
		// signed, checked against its ticket and posted once, so it is logged as an
		// error, and the batch is posted one claim at a time: what fits is paid, the
		// rest is dead-lettered, and the settler moves on instead of retrying forever.
		s.log.Error("the ledger refused a batch that would take the campaign's budget below zero; posting it claim by claim",
			"claims", len(b.postings))
		return s.postEach(ctx, msgs, b)
	}
	if err != nil {
		return err
	}
	s.account(msgs, b, res, 0)
	return nil
}

// postOnce is one Post of batch through the retry loop and breaker.
func (s *Settler) postOnce(ctx context.Context, batch []ledger.Posting) (ledger.Result, error) {
	var res ledger.Result
	err := s.retry(ctx, "post", func(actx context.Context) error {
		start := time.Now()
		var err error
		res, err = s.cfg.Ledger.Post(actx, batch)
		if err == nil {
			s.mPostLatency.ObserveDuration(time.Since(start))
		}
		return err
	})
	return res, err
}

// postEach posts the batch one posting at a time, dead-lettering those over budget.
func (s *Settler) postEach(ctx context.Context, msgs []kafka.Message, b *batch) error {
	for i := range b.postings {
		res, err := s.postOnce(ctx, b.postings[i:i+1])
		if errors.Is(err, ledger.ErrOverBudget) {
			p := &b.postings[i]
			b.dead = append(b.dead, deadLetter(&msgs[b.index[i]], ReasonOverBudget,
				fmt.Sprintf("ticket %d: the campaign's budget cannot cover amount %d", p.Ticket, p.Amount)))
			s.money.overBudget.Inc()
			continue
		}
		if err != nil {
			return err
		}
		s.account(msgs, b, res, i)
	}
	return nil
}

// account counts what one Post did and dead-letters its conflicts; base is the index in
// b.postings of the Post's first posting.
func (s *Settler) account(msgs []kafka.Message, b *batch, res ledger.Result, base int) {
	s.mPosted.Add(uint64(res.Posted))
	s.mDup.Add(uint64(res.Duplicates))
	s.mAmount.Add(uint64(res.Amount))
	for _, i := range res.Conflicts {
		p := &b.postings[base+i]
		b.dead = append(b.dead, deadLetter(&msgs[b.index[base+i]], ReasonConflict,
			"ticket "+strconv.FormatUint(p.Ticket, 10)+" is already posted to another user"))
		s.money.conflicts.Inc()
	}
	if len(res.Conflicts) > 0 {
		s.log.Error("claims for tickets already posted to another user: a ticket was handed out twice (restored or copied edge state?)",
			"conflicts", len(res.Conflicts))
	}
}
