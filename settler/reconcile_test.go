package settler

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"shake/internal/testpg"
	"shake/settler/ledger"
	"shake/ticket"
)

// ledgerURLs returns a fresh SQLite ledger URL always and a fresh PostgreSQL schema when
// SHAKE_TEST_POSTGRES is set.
func ledgerURLs(t testing.TB) map[string]string {
	t.Helper()
	urls := map[string]string{"sqlite": "sqlite://" + filepath.Join(t.TempDir(), "ledger.db")}
	if u := testpg.URL(t); u != "" {
		urls["postgres"] = u
	} else {
		t.Log("SHAKE_TEST_POSTGRES not set: PostgreSQL not tested")
	}
	return urls
}

// execSQL runs statements directly against a ledger's database, behind its back.
func execSQL(t testing.TB, url string, stmts ...string) {
	t.Helper()
	ctx := context.Background()
	if strings.HasPrefix(url, "sqlite://") {
		db, err := sql.Open("sqlite", "file:"+strings.TrimPrefix(url, "sqlite://")+"?_pragma=busy_timeout(5000)")
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		for _, s := range stmts {
			if _, err := db.ExecContext(ctx, s); err != nil {
				t.Fatalf("%s: %v", s, err)
			}
		}
		return
	}
	c, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	for _, s := range stmts {
		if _, err := c.Exec(ctx, s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
}

// handPost inserts a posting row and moves the balances, as a careless operator would:
// double entry stays intact, only reconcile's ticket checks can catch it.
func handPost(campaign string, id uint64, amount int64) []string {
	return []string{
		fmt.Sprintf(`INSERT INTO postings (campaign, ticket, shard, round, amount, currency, uid, debit, credit, opened_at, posted_at)
			VALUES ('%s', %d, 0, 0, %d, 'CNY', '1', 'budget:%s', 'wallet:CNY:1', 0, 0)`, campaign, id, amount, campaign),
		fmt.Sprintf(`UPDATE accounts SET balance = balance - %d WHERE name = 'budget:%s'`, amount, campaign),
		fmt.Sprintf(`UPDATE accounts SET balance = balance + %d WHERE name = 'wallet:CNY:1'`, amount),
	}
}

// settle funds the campaign and posts the claims of ids, each by its own user (uid = id).
func settle(t *testing.T, l ledger.Ledger, c *testCampaign, ids ...uint64) {
	t.Helper()
	settleAs(t, l, c, 0, ids...)
}

// settleAs is settle with every claim by uid (0: uid = id).
func settleAs(t *testing.T, l ledger.Ledger, c *testCampaign, uid uint64, ids ...uint64) {
	t.Helper()
	ctx := context.Background()
	m := c.manifest
	// As the settler does at its start: register, then fund.
	if err := Register(ctx, m, l); err != nil {
		t.Fatal(err)
	}
	if err := l.Fund(ctx, m.Campaign, m.Currency, m.Budget); err != nil {
		t.Fatal(err)
	}
	v := c.validator(t, nil)
	var ps []ledger.Posting
	for _, id := range ids {
		u := uid
		if u == 0 {
			u = id
		}
		p, reason, detail := v.Check(claimJSON(c.claim(id, u)))
		if reason != "" {
			t.Fatalf("%s: %s", reason, detail)
		}
		ps = append(ps, p)
	}
	if _, err := l.Post(ctx, ps); err != nil {
		t.Fatal(err)
	}
}

func TestReconcileCatchesTampering(t *testing.T) {
	t.Parallel()
	c := makeCampaign(t, t.TempDir(), "rec", []uint64{100, 50}, time.Now().Add(time.Hour))
	var ids []uint64
	for id := uint64(1); id <= 150; id += 3 {
		ids = append(ids, id)
	}
	var settled int64
	for _, id := range ids {
		settled += amountOf(id)
	}
	tamper := []struct {
		name  string
		stmts []string
		check func(r *Report) bool
	}{
		{"clean", nil, func(r *Report) bool {
			return r.OK && r.SettledTickets == int64(len(ids)) && r.SettledAmount == settled &&
				r.OutstandingAmount == c.manifest.Budget-settled && len(r.Problems) == 0
		}},
		{"duplicate", append([]string{"DROP INDEX postings_campaign_ticket"}, handPost("rec", 4, amountOf(4))...),
			func(r *Report) bool { return !r.OK && r.Duplicates == 1 && r.Mismatches == 0 && r.UnknownTickets == 0 }},
		{"wrong amount", handPost("rec", 5, amountOf(5)+1),
			func(r *Report) bool { return !r.OK && r.Mismatches == 1 && r.Duplicates == 0 && r.UnknownTickets == 0 }},
		{"unknown ticket", handPost("rec", 151, 3),
			func(r *Report) bool { return !r.OK && r.UnknownTickets == 1 && r.Mismatches == 0 && r.Duplicates == 0 }},
		{"balance drift", []string{`UPDATE accounts SET balance = balance + 1 WHERE name = 'wallet:CNY:1'`},
			func(r *Report) bool { return !r.OK && r.BalanceSum == 1 && r.DriftedAccounts == 1 }},
		{"posting without balance move", []string{handPost("rec", 2, amountOf(2))[0]},
			func(r *Report) bool { return !r.OK && r.Mismatches == 0 && r.DriftedAccounts == 2 }},
	}
	for _, tt := range tamper {
		for backend, url := range ledgerURLs(t) {
			t.Run(tt.name+"/"+backend, func(t *testing.T) {
				l, err := ledger.Open(context.Background(), url)
				if err != nil {
					t.Fatal(err)
				}
				defer l.Close()
				settle(t, l, c, ids...)
				execSQL(t, url, tt.stmts...)
				r, err := Reconcile(context.Background(), c.manifest, c.dir, l)
				if err != nil {
					t.Fatal(err)
				}
				if !tt.check(r) {
					t.Fatalf("report %+v", r)
				}
			})
		}
	}
}

func TestReconcileMissingShardFile(t *testing.T) {
	c := makeCampaign(t, t.TempDir(), "miss", []uint64{10}, time.Now().Add(time.Hour))
	l, err := ledger.Open(context.Background(), "sqlite://"+filepath.Join(t.TempDir(), "l.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	settle(t, l, c, 1, 2)
	os.Remove(filepath.Join(c.dir, "edge-000.tickets"))
	if _, err := Reconcile(context.Background(), c.manifest, c.dir, l); !errors.Is(err, ErrShardFile) {
		t.Fatalf("err %v, want ErrShardFile", err)
	}
}

func TestRefundOnceAfterExpiry(t *testing.T) {
	t.Parallel()
	for backend, url := range ledgerURLs(t) {
		t.Run(backend, func(t *testing.T) {
			ctx := context.Background()
			c := makeCampaign(t, t.TempDir(), "ref", []uint64{20}, time.Now().Add(time.Hour))
			l, err := ledger.Open(ctx, url)
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			settle(t, l, c, 1, 2, 3)
			if _, err := Refund(ctx, c.manifest, l, time.Now()); !errors.Is(err, ErrNotExpired) {
				t.Fatalf("refund before expiry: %v", err)
			}
			later := c.manifest.ExpiresAt.Add(time.Second)
			rr, err := Refund(ctx, c.manifest, l, later)
			settled := amountOf(1) + amountOf(2) + amountOf(3)
			if err != nil || !rr.Posted || rr.Amount != c.manifest.Budget-settled {
				t.Fatalf("refund %+v %v", rr, err)
			}
			rr, err = Refund(ctx, c.manifest, l, later)
			if err != nil || rr.Posted {
				t.Fatalf("second refund %+v %v", rr, err)
			}
			r, err := Reconcile(ctx, c.manifest, c.dir, l)
			if err != nil || !r.OK || r.OutstandingAmount != 0 || r.RefundedAmount != c.manifest.Budget-settled {
				t.Fatalf("after refund %+v %v", r, err)
			}

			// Ticket 4 was opened before expiry but its claim arrives only now (it sat in a
			// verifier's spool while Kafka was down): it is paid, by the sponsor, and the
			// refund is reported net of it, so the budget identity still holds.
			settle(t, l, c, 4)
			r, err = Reconcile(ctx, c.manifest, c.dir, l)
			late := amountOf(4)
			if err != nil || !r.OK || r.LateTickets != 1 || r.LateAmount != late ||
				r.SettledAmount != settled+late || r.RefundedAmount != c.manifest.Budget-settled-late || r.OutstandingAmount != 0 {
				t.Fatalf("after a late claim %+v %v", r, err)
			}
			if r.Budget != r.SettledAmount+r.RefundedAmount+r.OutstandingAmount {
				t.Fatalf("budget identity broken: %+v", r)
			}
		})
	}
}

// TestReconcilePerUserAndConflicts: reconcile's second check of the per-user rule
// (over_limit_users) and of tickets handed out twice (conflicting_claims); either makes
// ok false.
func TestReconcilePerUserAndConflicts(t *testing.T) {
	for backend, url := range ledgerURLs(t) {
		t.Run(backend, func(t *testing.T) {
			ctx := context.Background()
			c := makeCampaignRule(t, t.TempDir(), "rule", []uint64{30}, time.Now().Add(time.Hour), 1)
			l, err := ledger.Open(ctx, url)
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			settleAs(t, l, c, 1, 1) // uid 1 holds one ticket: within the rule
			r, err := Reconcile(ctx, c.manifest, c.dir, l)
			if err != nil || !r.OK || r.OverLimitUsers != 0 || r.ConflictingClaims != 0 {
				t.Fatalf("clean: %+v %v", r, err)
			}
			settleAs(t, l, c, 1, 2) // uid 1 now holds two in round 0
			r, err = Reconcile(ctx, c.manifest, c.dir, l)
			if err != nil || r.OK || r.OverLimitUsers != 1 {
				t.Fatalf("two for one user under per_user 1: %+v %v", r, err)
			}
			// A ticket posted to uid 1 claimed by uid 2.
			v := c.validator(t, nil)
			p, reason, _ := v.Check(claimJSON(c.claim(1, 2)))
			if reason != "" {
				t.Fatal(reason)
			}
			if res, err := l.Post(ctx, []ledger.Posting{p}); err != nil || len(res.Conflicts) != 1 {
				t.Fatalf("%+v %v", res, err)
			}
			r, err = Reconcile(ctx, c.manifest, c.dir, l)
			if err != nil || r.OK || r.ConflictingClaims != 1 {
				t.Fatalf("conflict: %+v %v", r, err)
			}
		})
	}
}

// TestAttackTamperedManifestRefused: moving expires_at to refund early. An operator (or an
// intruder) moves expires_at into the past in a live campaign's manifest to refund what
// is still openable. The old reconcile refunded it. The ledger recorded the funded
// manifest's digest, so reconcile and refund refuse the changed one, without any key.
// A campaign id generated again (another generation) is refused the same way.
func TestAttackTamperedManifestRefused(t *testing.T) {
	t.Parallel()
	for backend, url := range ledgerURLs(t) {
		t.Run(backend, func(t *testing.T) {
			ctx := context.Background()
			c := makeCampaign(t, t.TempDir(), "tamper", []uint64{30}, time.Now().Add(time.Hour))
			l, err := ledger.Open(ctx, url)
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			if err := Register(ctx, c.manifest, l); err != nil { // as the settler does at start
				t.Fatal(err)
			}
			settle(t, l, c, 1, 2)
			moved := *c.manifest
			moved.ExpiresAt, moved.IssueUntil = time.Now().Add(-time.Minute), time.Now().Add(-2*time.Minute)
			if r, err := Reconcile(ctx, &moved, c.dir, l); err != nil || r.OK || r.Reason != ReasonManifestChanged {
				t.Fatalf("reconcile of a moved expires_at: %+v %v", r, err)
			}
			if _, err := Refund(ctx, &moved, l, time.Now()); !errors.Is(err, ledger.ErrManifestChanged) {
				t.Fatalf("refund with a moved expires_at: %v", err)
			}
			again := *c.manifest
			again.Generation = ticket.NewGeneration()
			if r, err := Reconcile(ctx, &again, c.dir, l); err != nil || r.OK || r.Reason != ReasonOtherGeneration {
				t.Fatalf("reconcile of another generation: %+v %v", r, err)
			}
			if err := Register(ctx, &again, l); !errors.Is(err, ledger.ErrOtherGeneration) {
				t.Fatalf("settler start with another generation: %v", err)
			}
			st, _ := l.Stats(ctx, "tamper")
			if st.Refunded {
				t.Fatal("refunded with the tampered manifest")
			}
			if r, err := Reconcile(ctx, c.manifest, c.dir, l); err != nil || !r.OK {
				t.Fatalf("the funded manifest: %+v %v", r, err)
			}
			// The registered figures (what shake query shows) changed behind the
			// settler's back: reconcile checks them against the manifest too.
			execSQL(t, url, `UPDATE campaigns SET budget = budget + 1 WHERE campaign = 'tamper'`)
			if r, err := Reconcile(ctx, c.manifest, c.dir, l); err != nil || r.OK || r.Reason != ReasonManifestChanged {
				t.Fatalf("reconcile with a tampered registered budget: %+v %v", r, err)
			}
			if err := Register(ctx, c.manifest, l); !errors.Is(err, ledger.ErrManifestChanged) {
				t.Fatalf("settler start with a tampered registered budget: %v", err)
			}
		})
	}
}

// TestReconcileShardBudgets: a campaign funded per shard, as the settler funds it, is
// proved account by account: budget money moved from one shard's account to another's,
// with transfers and balances kept consistent (so double entry, the drift check and
// the campaign's sum all still hold), is caught by the per-shard check.
func TestReconcileShardBudgets(t *testing.T) {
	t.Parallel()
	c := makeCampaign(t, t.TempDir(), "rsh", []uint64{100, 50}, time.Now().Add(time.Hour))
	ids := []uint64{1, 2, 3, 101, 102}
	moved := []string{
		`UPDATE transfers SET amount = amount - 5 WHERE campaign = 'rsh' AND kind = 'fund' AND shard = 0`,
		`UPDATE transfers SET amount = amount + 5 WHERE campaign = 'rsh' AND kind = 'fund' AND shard = 1`,
		`UPDATE accounts SET balance = balance - 5 WHERE name = 'budget:rsh:0'`,
		`UPDATE accounts SET balance = balance + 5 WHERE name = 'budget:rsh:1'`,
	}
	for backend, url := range ledgerURLs(t) {
		for _, tamper := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/tampered=%v", backend, tamper), func(t *testing.T) {
				ctx := context.Background()
				l, err := ledger.Open(ctx, url)
				if err != nil {
					t.Fatal(err)
				}
				defer l.Close()
				if err := l.FundShards(ctx, "rsh", c.manifest.Currency, ShardAmounts(c.manifest)); err != nil {
					t.Fatal(err)
				}
				settle(t, l, c, ids...)
				if tamper {
					execSQL(t, url, moved...)
				}
				r, err := Reconcile(ctx, c.manifest, c.dir, l)
				if err != nil {
					t.Fatal(err)
				}
				if r.OK == tamper || r.DriftedAccounts != 0 || r.BalanceSum != 0 {
					t.Fatalf("tampered %v: report %+v", tamper, r)
				}
				if tamper && !strings.Contains(strings.Join(r.Problems, "; "), "shard 0 budget account funded with") {
					t.Fatalf("problems %q do not name shard 0", r.Problems)
				}
			})
		}
	}
}
