package ledger

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Attacks and operator mistakes the ledger itself must stop, on every backend.

// TestAttackBudgetNeverNegative: postings worth more than the funded budget (forged
// claims, or a manifest that lies). The old ledger posted them all and the budget
// account went to -50; the ledger itself now refuses a batch that would take it below
// zero, posting nothing of it, and stays usable.
func TestAttackBudgetNeverNegative(t *testing.T) {
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			l := open(t, b.url)
			if err := l.Fund(ctx, "c1", "CNY", 100); err != nil {
				t.Fatal(err)
			}
			_, err := l.Post(ctx, []Posting{posting("c1", 1, 50, 7), posting("c1", 2, 50, 8), posting("c1", 3, 50, 9)})
			if !errors.Is(err, ErrOverBudget) {
				t.Fatalf("over-budget batch: %v, want ErrOverBudget", err)
			}
			s := checkBalanced(t, l, "c1", 0, 0)
			if s.BudgetBalance != 100 || s.PostingRows != 0 {
				t.Fatalf("after the refused batch: %+v", s)
			}
			// What fits is posted; the budget may reach exactly zero, never below.
			if r, err := l.Post(ctx, []Posting{posting("c1", 1, 50, 7), posting("c1", 2, 50, 8)}); err != nil || r.Posted != 2 {
				t.Fatalf("exact budget: %+v %v", r, err)
			}
			if _, err := l.Post(ctx, []Posting{posting("c1", 3, 1, 9)}); !errors.Is(err, ErrOverBudget) {
				t.Fatalf("one unit over: %v", err)
			}
			if s := checkBalanced(t, l, "c1", 100, 0); s.BudgetBalance != 0 {
				t.Fatalf("budget %d", s.BudgetBalance)
			}
			// A redelivered posting of an exhausted campaign is still a duplicate, not an error.
			if r, err := l.Post(ctx, []Posting{posting("c1", 2, 50, 8)}); err != nil || r.Duplicates != 1 {
				t.Fatalf("duplicate at zero budget: %+v %v", r, err)
			}
		})
	}
}

// TestAttackConflictRecorded: a ticket handed out twice (a copied edge state file) is
// claimed by a second user. The old ledger counted it as a silent duplicate; now it is a
// conflict, recorded once per claiming user, and never paid. The same user's claim
// again stays a duplicate.
func TestAttackConflictRecorded(t *testing.T) {
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			l := open(t, b.url)
			if err := l.Fund(ctx, "c1", "CNY", 1000); err != nil {
				t.Fatal(err)
			}
			if r, err := l.Post(ctx, []Posting{posting("c1", 1, 10, 7), posting("c1", 2, 20, 7)}); err != nil || r.Posted != 2 {
				t.Fatalf("%+v %v", r, err)
			}
			// In one batch: a redelivery (dup), a conflict with the ledger, a new posting,
			// and a conflict inside the batch itself.
			batch := []Posting{posting("c1", 1, 10, 7), posting("c1", 1, 10, 99), posting("c1", 3, 30, 5), posting("c1", 3, 30, 6)}
			r, err := l.Post(ctx, batch)
			if err != nil {
				t.Fatal(err)
			}
			if r.Posted != 1 || r.Duplicates != 1 || len(r.Conflicts) != 2 || r.Amount != 30 {
				t.Fatalf("mixed batch: %+v", r)
			}
			if r.Conflicts[0] != 1 || (r.Conflicts[1] != 2 && r.Conflicts[1] != 3) {
				t.Fatalf("conflict indexes %v", r.Conflicts)
			}
			// The same conflicting claim redelivered is reported again but recorded once.
			if r, err := l.Post(ctx, []Posting{posting("c1", 1, 10, 99)}); err != nil || len(r.Conflicts) != 1 || r.Duplicates != 0 {
				t.Fatalf("redelivered conflict: %+v %v", r, err)
			}
			ch, err := l.Checks(ctx, "c1", 0)
			if err != nil || ch.Conflicts != 2 {
				t.Fatalf("checks %+v %v", ch, err)
			}
			checkBalanced(t, l, "c1", 60, 0)
		})
	}
}

// TestLedgerOverLimitUsers: reconcile's second check of the per-user rule.
func TestLedgerOverLimitUsers(t *testing.T) {
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			l := open(t, b.url)
			if err := l.Fund(ctx, "c1", "CNY", 1000); err != nil {
				t.Fatal(err)
			}
			ps := []Posting{posting("c1", 1, 1, 7), posting("c1", 2, 1, 7), posting("c1", 3, 1, 8), posting("c1", 4, 1, 9), posting("c1", 5, 1, 9), posting("c1", 6, 1, 9)}
			ps[1].Round = 1 // user 7: one per round
			if _, err := l.Post(ctx, ps); err != nil {
				t.Fatal(err)
			}
			for perUser, want := range map[int]int64{0: 0, 1: 1, 2: 1, 3: 0} {
				ch, err := l.Checks(ctx, "c1", perUser)
				if err != nil || ch.OverLimitUsers != want {
					t.Errorf("per_user %d: %+v %v, want %d over the limit", perUser, ch, err, want)
				}
			}
		})
	}
}

// TestLedgerRegistry: one ledger settles one generation of a campaign id, funded with one
// manifest.
func TestLedgerRegistry(t *testing.T) {
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			l := open(t, b.url)
			d1, d2 := strings.Repeat("a", 64), strings.Repeat("b", 64)
			g1, g2 := strings.Repeat("1", 32), strings.Repeat("2", 32)
			if _, ok, err := l.Registered(ctx, "c1"); ok || err != nil {
				t.Fatalf("fresh ledger: %v %v", ok, err)
			}
			info := CampaignInfo{Campaign: "c1", Generation: g1, ManifestDigest: d1, Currency: "CNY", Budget: 100, Tickets: 10}
			for range 2 {
				if err := l.Register(ctx, info); err != nil {
					t.Fatal(err)
				}
			}
			if err := l.Register(ctx, CampaignInfo{Campaign: "c1", Generation: g2, ManifestDigest: d2, Currency: "CNY", Budget: 100, Tickets: 10}); !errors.Is(err, ErrOtherGeneration) {
				t.Fatalf("second generation: %v", err)
			}
			if err := l.Register(ctx, CampaignInfo{Campaign: "c1", Generation: g1, ManifestDigest: d2, Currency: "CNY", Budget: 100, Tickets: 10}); !errors.Is(err, ErrManifestChanged) {
				t.Fatalf("changed manifest: %v", err)
			}
			if err := l.Register(ctx, CampaignInfo{Campaign: "c1", Generation: "x", ManifestDigest: d1, Currency: "CNY", Budget: 100, Tickets: 10}); !errors.Is(err, ErrInvalid) {
				t.Fatalf("bad generation: %v", err)
			}
			if got, ok, err := l.Registered(ctx, "c1"); !ok || err != nil || got != info {
				t.Fatalf("registered %+v %v %v", got, ok, err)
			}
			if err := l.Register(ctx, CampaignInfo{Campaign: "c2", Generation: g2, ManifestDigest: d2, Currency: "CNY", Budget: 100, Tickets: 10}); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestSQLiteLedgerFileMode: ledger.db (and its WAL) is created 0600.
func TestSQLiteLedgerFileMode(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "ledger.db")
	l := open(t, "sqlite://"+p)
	if err := l.Fund(context.Background(), "c1", "CNY", 5); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{p, p + "-wal"} {
		st, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %04o, want 0600", f, st.Mode().Perm())
		}
	}
}
