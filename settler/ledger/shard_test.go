package ledger

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"shake/internal/testpg"
)

func shardPosting(campaign string, id uint64, shard int, amount int64, uid uint64) Posting {
	p := posting(campaign, id, amount, uid)
	p.Shard = shard
	return p
}

// TestShardBudgets: a campaign funded per shard keeps one budget account per shard,
// each with its own floor (a shard cannot spend another's money even when the campaign
// as a whole has room), the campaign's budget is their sum, and refund returns what is
// left in each.
func TestShardBudgets(t *testing.T) {
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			l := open(t, b.url)
			amounts := []int64{100, 200, 300}
			for range 2 {
				if err := l.FundShards(ctx, "sh", "CNY", amounts); err != nil {
					t.Fatal(err)
				}
			}
			for _, bad := range [][]int64{{100, 200, 301}, {100, 200}, {100, 200, 300, 0}} {
				if err := l.FundShards(ctx, "sh", "CNY", bad); !errors.Is(err, ErrConflict) {
					t.Fatalf("FundShards(%v) again: %v, want ErrConflict", bad, err)
				}
			}
			if err := l.Fund(ctx, "sh", "CNY", 600); err != nil {
				t.Fatalf("Fund with the same total: %v", err)
			}
			if err := l.Fund(ctx, "sh", "CNY", 599); !errors.Is(err, ErrConflict) {
				t.Fatalf("Fund with another total: %v, want ErrConflict", err)
			}
			for _, bad := range [][]int64{nil, {-1}, {1 << 62, 1 << 62}} {
				if err := l.FundShards(ctx, "sh2", "CNY", bad); !errors.Is(err, ErrInvalid) {
					t.Fatalf("FundShards(%v): %v, want ErrInvalid", bad, err)
				}
			}
			r, err := l.Post(ctx, []Posting{shardPosting("sh", 1, 0, 60, 1), shardPosting("sh", 2, 1, 150, 2), shardPosting("sh", 3, 2, 10, 1)})
			if err != nil || r.Posted != 3 || r.Amount != 220 {
				t.Fatalf("post: %+v %v", r, err)
			}
			// Shard 0 has 40 left: 50 more is over its budget though the campaign has 380.
			if _, err := l.Post(ctx, []Posting{shardPosting("sh", 4, 0, 50, 3)}); !errors.Is(err, ErrOverBudget) {
				t.Fatalf("over shard 0's budget: %v, want ErrOverBudget", err)
			}
			if _, err := l.Post(ctx, []Posting{shardPosting("sh", 5, 3, 1, 3)}); !errors.Is(err, ErrNotFunded) {
				t.Fatalf("unfunded shard: %v, want ErrNotFunded", err)
			}
			s := checkBalanced(t, l, "sh", 220, 0)
			want := []ShardStats{{0, 100, 60, 0, 40}, {1, 200, 150, 0, 50}, {2, 300, 10, 0, 290}}
			if s.FundedAmount != 600 || s.BudgetBalance != 380 || !sameShards(s.Shards, want) {
				t.Fatalf("stats %+v, want funded 600 balance 380 shards %+v", s, want)
			}
			rr, err := l.Refund(ctx, "sh", "CNY", 600)
			if err != nil || !rr.Posted || rr.Amount != 380 {
				t.Fatalf("refund: %+v %v", rr, err)
			}
			if rr, err := l.Refund(ctx, "sh", "CNY", 600); err != nil || rr.Posted || rr.Amount != 380 {
				t.Fatalf("second refund: %+v %v", rr, err)
			}
			// A late claim is the sponsor's, whatever its shard.
			if r, err := l.Post(ctx, []Posting{shardPosting("sh", 6, 0, 70, 4)}); err != nil || r.Posted != 1 {
				t.Fatalf("late claim: %+v %v", r, err)
			}
			s = checkBalanced(t, l, "sh", 290, 380)
			want = []ShardStats{{0, 100, 60, 40, 0}, {1, 200, 150, 50, 0}, {2, 300, 10, 290, 0}}
			if s.BudgetBalance != 0 || s.LateAmount != 70 || !sameShards(s.Shards, want) {
				t.Fatalf("after refund %+v, want shards %+v", s, want)
			}
		})
	}
}

// TestShardBudgetsOfCampaignFundedWhole: a campaign funded whole (by Fund, or by a
// ledger before shard accounts) keeps its one account when the settler funds it per
// shard with the same total.
func TestShardBudgetsOfCampaignFundedWhole(t *testing.T) {
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			l := open(t, b.url)
			if err := l.Fund(ctx, "whole", "CNY", 500); err != nil {
				t.Fatal(err)
			}
			if err := l.FundShards(ctx, "whole", "CNY", []int64{200, 300}); err != nil {
				t.Fatalf("FundShards of a campaign funded whole: %v", err)
			}
			if r, err := l.Post(ctx, []Posting{shardPosting("whole", 1, 1, 250, 1)}); err != nil || r.Posted != 1 {
				t.Fatalf("post to a campaign funded whole: %+v %v", r, err)
			}
			if s := checkBalanced(t, l, "whole", 250, 0); s.BudgetBalance != 250 || s.Shards != nil {
				t.Fatalf("whole: %+v", s)
			}
		})
	}
}

func sameShards(a, b []ShardStats) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestShardBudgetsNoHotRow: while one transaction holds shard 0's budget account (a
// batch of shard 0 being posted by another settler), a batch of shard 1 posts at once
// and a second batch of shard 0 waits. With one budget account per campaign every
// batch waited for every other.
func TestShardBudgetsNoHotRow(t *testing.T) {
	u := testpg.URL(t)
	if u == "" {
		t.Skip(testpg.Env + " is unset: the row locks under test are PostgreSQL's")
	}
	ctx := context.Background()
	l := open(t, u)
	if err := l.FundShards(ctx, "hot", "CNY", []int64{1000, 1000}); err != nil {
		t.Fatal(err)
	}
	c, err := pgx.Connect(ctx, u)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	tx, err := c.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(ctx)
	if _, err := tx.Exec(ctx, `SELECT balance FROM accounts WHERE name = $1 FOR UPDATE`, ShardBudgetAccount("hot", 0)); err != nil {
		t.Fatal(err)
	}
	other := open(t, u)
	pctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	start := time.Now()
	if r, err := other.Post(pctx, []Posting{shardPosting("hot", 2, 1, 5, 1), shardPosting("hot", 4, 1, 5, 2)}); err != nil || r.Posted != 2 {
		t.Fatalf("shard 1 while shard 0 is held: %+v %v after %v", r, err, time.Since(start))
	}
	wctx, wcancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer wcancel()
	if _, err := other.Post(wctx, []Posting{shardPosting("hot", 1, 0, 5, 1)}); err == nil {
		t.Fatal("shard 0 posted while its budget account was held by another transaction")
	}
	if err := tx.Rollback(ctx); err != nil {
		t.Fatal(err)
	}
	if r, err := other.Post(ctx, []Posting{shardPosting("hot", 1, 0, 5, 1)}); err != nil || r.Posted != 1 {
		t.Fatalf("shard 0 after release: %+v %v", r, err)
	}
	checkBalanced(t, l, "hot", 15, 0)
}

// TestUpgradeFrom0004 builds a ledger at schema version 4 holding a campaign funded
// whole, with postings and an outstanding budget, then opens it with this version:
// migration 0005 keeps its transfers, the campaign keeps settling from its one budget
// account, refunds from it, and a new campaign is funded per shard beside it.
func TestUpgradeFrom0004(t *testing.T) {
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			exec := schemaAt(t, b, 4)
			// What the version-4 ledger wrote: fund 1000, one posting of 30.
			exec(t, `INSERT INTO transfers (campaign, kind, amount, currency, debit, credit, posted_at)
				VALUES ('old', 'fund', 1000, 'CNY', 'sponsor:old', 'budget:old', 1)`)
			exec(t, `INSERT INTO accounts (name, currency, balance) VALUES ('sponsor:old', 'CNY', -1000), ('budget:old', 'CNY', 970), ('wallet:CNY:7', 'CNY', 30)`)
			exec(t, `INSERT INTO postings (campaign, ticket, shard, round, amount, currency, uid, debit, credit, opened_at, posted_at)
				VALUES ('old', 1, 0, 0, 30, 'CNY', '7', 'budget:old', 'wallet:CNY:7', 1, 1)`)

			l := open(t, b.url)
			checkBalanced(t, l, "old", 30, 0)
			if err := l.FundShards(ctx, "old", "CNY", []int64{400, 600}); err != nil {
				t.Fatalf("the settler's per-shard funding of the upgraded campaign: %v", err)
			}
			if r, err := l.Post(ctx, []Posting{shardPosting("old", 1, 0, 30, 7), shardPosting("old", 2, 1, 70, 8)}); err != nil ||
				r.Posted != 1 || r.Duplicates != 1 {
				t.Fatalf("post after the upgrade: %+v %v", r, err)
			}
			if s := checkBalanced(t, l, "old", 100, 0); s.BudgetBalance != 900 || s.Shards != nil {
				t.Fatalf("old campaign after the upgrade: %+v", s)
			}
			if rr, err := l.Refund(ctx, "old", "CNY", 1000); err != nil || !rr.Posted || rr.Amount != 900 {
				t.Fatalf("refund of the upgraded campaign: %+v %v", rr, err)
			}
			checkBalanced(t, l, "old", 100, 900)
			if err := l.FundShards(ctx, "new", "CNY", []int64{5, 6}); err != nil {
				t.Fatal(err)
			}
			if r, err := l.Post(ctx, []Posting{shardPosting("new", 1, 1, 6, 7)}); err != nil || r.Posted != 1 {
				t.Fatalf("new campaign: %+v %v", r, err)
			}
			if s := checkBalanced(t, l, "new", 6, 0); len(s.Shards) != 2 || s.Shards[1].Balance != 0 {
				t.Fatalf("new campaign: %+v", s)
			}
		})
	}
}
