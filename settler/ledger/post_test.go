package ledger

import (
	"context"
	"testing"
)

// TestPostPartlyPostedBatch: a batch longer than one multi-row statement whose last
// part holds a ticket posted before (for the same user) and one posted for another
// user. The fast path posts a batch only when every posting is new; here it must undo
// what its first statements inserted and hand the whole batch to the careful path, so
// that the new postings are posted and paid once, the duplicate is not paid again and
// the conflict is recorded and not paid.
func TestPostPartlyPostedBatch(t *testing.T) {
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			l := open(t, b.url)
			if err := l.Fund(ctx, "pp", "CNY", 1_000_000); err != nil {
				t.Fatal(err)
			}
			if r, err := l.Post(ctx, []Posting{posting("pp", 1000, 5, 1), posting("pp", 1001, 6, 2)}); err != nil || r.Posted != 2 {
				t.Fatalf("first post: %+v %v", r, err)
			}
			var batch []Posting
			var want int64 = 11
			for id := uint64(1); id <= 3*sqliteChunk; id++ {
				batch = append(batch, posting("pp", id, int64(id%9+1), id%40))
				want += int64(id%9 + 1)
			}
			batch = append(batch, posting("pp", 1000, 5, 1), posting("pp", 1001, 6, 3))
			r, err := l.Post(ctx, batch)
			if err != nil {
				t.Fatal(err)
			}
			if r.Posted != 3*sqliteChunk || r.Duplicates != 1 || len(r.Conflicts) != 1 || r.Conflicts[0] != len(batch)-1 ||
				r.Amount != want-11 {
				t.Fatalf("mixed batch: posted %d duplicates %d conflicts %v amount %d, want %d 1 [%d] %d",
					r.Posted, r.Duplicates, r.Conflicts, r.Amount, 3*sqliteChunk, len(batch)-1, want-11)
			}
			s := checkBalanced(t, l, "pp", want, 0)
			if s.PostingRows != 3*sqliteChunk+2 || s.BudgetBalance != 1_000_000-want {
				t.Fatalf("stats %+v", s)
			}
			ch, err := l.Checks(ctx, "pp", 0)
			if err != nil || ch.Conflicts != 1 {
				t.Fatalf("checks %+v %v", ch, err)
			}
			// The same batch again: nothing new, nothing paid.
			if r, err := l.Post(ctx, batch); err != nil || r.Posted != 0 || r.Amount != 0 || r.Duplicates != len(batch)-1 {
				t.Fatalf("again: %+v %v", r, err)
			}
			checkBalanced(t, l, "pp", want, 0)
		})
	}
}
