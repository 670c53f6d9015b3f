package ledger

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

func open(t *testing.T, url string) Ledger {
	t.Helper()
	l, err := Open(context.Background(), url)
	if err != nil {
		t.Fatalf("Open(%s): %v", url, err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func posting(campaign string, id uint64, amount int64, uid uint64) Posting {
	return Posting{Campaign: campaign, Ticket: id, Shard: 0, Round: 0, Amount: amount, Currency: "CNY", UID: uid,
		OpenedAt: time.Unix(1700000000, 0)}
}

func checkBalanced(t *testing.T, l Ledger, campaign string, wantSettled, wantRefunded int64) Stats {
	t.Helper()
	s, err := l.Stats(context.Background(), campaign)
	if err != nil {
		t.Fatal(err)
	}
	a, err := l.Audit(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if a.BalanceSum != 0 || a.DriftedAccounts != 0 {
		t.Fatalf("ledger unbalanced: sum %d, drifted %d", a.BalanceSum, a.DriftedAccounts)
	}
	if s.SettledAmount != wantSettled || s.RefundedAmount != wantRefunded {
		t.Fatalf("settled %d refunded %d, want %d %d", s.SettledAmount, s.RefundedAmount, wantSettled, wantRefunded)
	}
	// Late claims (paid by the sponsor after the refund) never touch the budget account.
	if s.Funded && s.BudgetBalance != s.FundedAmount-(s.SettledAmount-s.LateAmount)-s.RefundedAmount {
		t.Fatalf("budget balance %d != %d - (%d - %d) - %d", s.BudgetBalance, s.FundedAmount, s.SettledAmount, s.LateAmount, s.RefundedAmount)
	}
	return s
}

func TestLedgerContract(t *testing.T) {
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			l := open(t, b.url)
			// Migrations are idempotent: a second open of the same ledger applies nothing.
			open(t, b.url).Close()

			if _, err := l.Post(ctx, []Posting{posting("c1", 1, 10, 7)}); !errors.Is(err, ErrNotFunded) {
				t.Fatalf("post before fund: %v, want ErrNotFunded", err)
			}
			if err := l.Fund(ctx, "c1", "CNY", 1000); err != nil {
				t.Fatal(err)
			}
			if err := l.Fund(ctx, "c1", "CNY", 1000); err != nil {
				t.Fatalf("second identical fund: %v", err)
			}
			if err := l.Fund(ctx, "c1", "CNY", 999); !errors.Is(err, ErrConflict) {
				t.Fatalf("fund with another budget: %v, want ErrConflict", err)
			}
			checkBalanced(t, l, "c1", 0, 0)

			// The same claim three times in one batch and once more later: posted once.
			batch := []Posting{posting("c1", 1, 10, 7), posting("c1", 2, 20, 8), posting("c1", 1, 10, 7), posting("c1", 1, 10, 7)}
			r, err := l.Post(ctx, batch)
			if err != nil {
				t.Fatal(err)
			}
			if r.Posted != 2 || r.Duplicates != 2 || r.Amount != 30 {
				t.Fatalf("first post: %+v", r)
			}
			r, err = l.Post(ctx, []Posting{posting("c1", 2, 20, 8), posting("c1", 3, 30, 7)})
			if err != nil || r.Posted != 1 || r.Duplicates != 1 || r.Amount != 30 {
				t.Fatalf("second post: %+v %v", r, err)
			}
			s := checkBalanced(t, l, "c1", 60, 0)
			if s.PostingRows != 3 || s.Tickets != 3 || s.BudgetBalance != 940 {
				t.Fatalf("stats %+v", s)
			}
			var got []uint64
			if err := l.Scan(ctx, "c1", func(id uint64, amount int64, cur string) error {
				if amount != int64(id)*10 || cur != "CNY" {
					t.Errorf("ticket %d amount %d %s", id, amount, cur)
				}
				got = append(got, id)
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			if len(got) != 3 || got[0] != 1 || got[1] != 2 || got[2] != 3 {
				t.Fatalf("scan order %v", got)
			}

			// Invalid postings never reach the ledger.
			for _, p := range []Posting{posting("c1", 4, -1, 1), posting("c1", 0, 1, 1), posting("BAD", 5, 1, 1),
				{Campaign: "c1", Ticket: 6, Amount: 1, Currency: "cny"}, posting("c1", 1<<63, 1, 1)} {
				if _, err := l.Post(ctx, []Posting{p}); !errors.Is(err, ErrInvalid) {
					t.Fatalf("post %+v: %v, want ErrInvalid", p, err)
				}
			}

			// Refund moves the remainder once; a second refund posts nothing; a claim that
			// arrives after it (opened before expiry, late from a spool) is still paid, by
			// the sponsor who got its money back, and still only once.
			rr, err := l.Refund(ctx, "c1", "CNY", 1000)
			if err != nil || !rr.Posted || rr.Amount != 940 {
				t.Fatalf("refund: %+v %v", rr, err)
			}
			rr, err = l.Refund(ctx, "c1", "CNY", 1000)
			if err != nil || rr.Posted || rr.Amount != 940 {
				t.Fatalf("second refund: %+v %v", rr, err)
			}
			for range 2 {
				if res, err := l.Post(ctx, []Posting{posting("c1", 9, 7, 1)}); err != nil || res.Posted+res.Duplicates != 1 {
					t.Fatalf("late claim after refund: %+v %v", res, err)
				}
			}
			s = checkBalanced(t, l, "c1", 67, 940)
			if s.BudgetBalance != 0 || s.LateTickets != 1 || s.LateAmount != 7 {
				t.Fatalf("after the late claim: budget %d, late %d tickets / %d, want 0, 1 / 7", s.BudgetBalance, s.LateTickets, s.LateAmount)
			}
			// The connection stays usable after the expected errors above.
			if err := l.Fund(ctx, "c2", "CNY", 5); err != nil {
				t.Fatal(err)
			}
			// Refund of a never-funded campaign funds it first: the whole budget goes back.
			rr, err = l.Refund(ctx, "c3", "CNY", 77)
			if err != nil || !rr.Posted || rr.Amount != 77 {
				t.Fatalf("refund of unfunded campaign: %+v %v", rr, err)
			}
			checkBalanced(t, l, "c3", 0, 77)
		})
	}
}

// TestLedgerConcurrentPosters posts overlapping batches from two ledger handles (two
// settlers of one group after a rebalance): each ticket is posted exactly once.
func TestLedgerConcurrentPosters(t *testing.T) {
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			l1, l2 := open(t, b.url), open(t, b.url)
			if err := l1.Fund(ctx, "cc", "CNY", 1_000_000); err != nil {
				t.Fatal(err)
			}
			const n, batch = 3000, 500
			var wg sync.WaitGroup
			var posted [2]int
			for w, l := range []Ledger{l1, l2} {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for start := 1; start <= n; start += batch {
						var ps []Posting
						for id := start; id < start+batch; id++ {
							ps = append(ps, posting("cc", uint64(id), int64(id%7), uint64(id%50)))
						}
						r, err := l.Post(ctx, ps)
						if err != nil {
							t.Error(err)
							return
						}
						posted[w] += r.Posted
					}
				}()
			}
			wg.Wait()
			if posted[0]+posted[1] != n {
				t.Fatalf("posted %d + %d, want %d", posted[0], posted[1], n)
			}
			var want int64
			for id := 1; id <= n; id++ {
				want += int64(id % 7)
			}
			s := checkBalanced(t, l1, "cc", want, 0)
			if s.Tickets != n || s.PostingRows != n {
				t.Fatalf("stats %+v", s)
			}
		})
	}
}

func TestOpenBadURL(t *testing.T) {
	for _, u := range []string{"", "mysql://x", "sqlite://", "sqlite:///"} {
		if _, err := Open(context.Background(), u); !errors.Is(err, ErrBadURL) {
			t.Errorf("Open(%q): %v, want ErrBadURL", u, err)
		}
	}
}
