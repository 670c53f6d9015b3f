package ledger

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// The PostgreSQL ledger's posting path: a batch of new postings is copied straight into
// postings; a batch holding a posted ticket goes through the staging table.

// stagingDDL is the per-connection staging table the batch is copied into before the
// idempotent INSERT ... SELECT; ON COMMIT DELETE ROWS empties it after every batch.
const stagingDDL = `CREATE TEMP TABLE IF NOT EXISTS shake_staging (
    campaign TEXT, ticket BIGINT, shard INTEGER, round INTEGER, amount BIGINT,
    currency TEXT, uid TEXT, debit TEXT, credit TEXT, opened_at BIGINT
) ON COMMIT DELETE ROWS`

var stagingColumns = []string{"campaign", "ticket", "shard", "round", "amount", "currency", "uid", "debit", "credit", "opened_at"}

// postFromStaging inserts the staged postings that are new, then moves the balances of
// exactly the rows it inserted: duplicates (already posted, or repeated in the batch)
// never touch a balance.
const postFromStaging = `
WITH ins AS (
    INSERT INTO postings (campaign, ticket, shard, round, amount, currency, uid, debit, credit, opened_at, posted_at)
    SELECT DISTINCT ON (campaign, ticket) campaign, ticket, shard, round, amount, currency, uid, debit, credit, opened_at, $1
    FROM shake_staging ORDER BY campaign, ticket
    ON CONFLICT (campaign, ticket) DO NOTHING
    RETURNING debit, credit, amount, currency
), moves AS (
    SELECT debit AS acct, currency, -amount AS d FROM ins
    UNION ALL SELECT credit, currency, amount FROM ins
), upd AS (
    INSERT INTO accounts (name, currency, balance)
    SELECT acct, MIN(currency), SUM(d) FROM moves GROUP BY acct ORDER BY acct
    ON CONFLICT (name) DO UPDATE SET balance = accounts.balance + excluded.balance
    RETURNING 1
)
SELECT (SELECT COUNT(*) FROM ins), (SELECT COALESCE(SUM(amount), 0) FROM ins)::BIGINT, (SELECT COUNT(*) FROM upd)`

// postingSource feeds a batch to CopyFrom row by row, without building a [][]any up
// front: into the staging table (the careful path, stagingColumns) or, with
// withPostedAt, straight into postings (the fast path, postingColumns).
type postingSource struct {
	batch        []Posting
	debits       *debits
	withPostedAt bool
	postedAt     int64
	i            int
	row          [11]any
}

func (s *postingSource) Next() bool { s.i++; return s.i <= len(s.batch) }
func (s *postingSource) Err() error { return nil }
func (s *postingSource) Values() ([]any, error) {
	p := &s.batch[s.i-1]
	s.row = [11]any{p.Campaign, int64(p.Ticket), int32(p.Shard), int32(p.Round), p.Amount, p.Currency,
		strconv.FormatUint(p.UID, 10), s.debits.account(p), WalletAccount(p.Currency, p.UID), micros(p.OpenedAt), s.postedAt}
	if !s.withPostedAt {
		return s.row[:10], nil
	}
	return s.row[:], nil
}

// postingColumns are the columns the fast path copies into postings (id is generated).
var postingColumns = []string{"campaign", "ticket", "shard", "round", "amount", "currency", "uid", "debit", "credit", "opened_at", "posted_at"}

func (l *pgLedger) Post(ctx context.Context, batch []Posting) (Result, error) {
	var res Result
	if err := checkBatch(batch); err != nil || len(batch) == 0 {
		return res, err
	}
	err := l.withConn(ctx, func(c *pgx.Conn) error {
		err := pgx.BeginFunc(ctx, c, func(tx pgx.Tx) error { return l.postNew(ctx, tx, batch, &res) })
		if !errors.Is(err, errNotAllNew) {
			return err
		}
		// Some posting of the batch is in the ledger already (a redelivery) or repeated
		// in it: the copy rolled back whole, and the staged path sorts out which are new.
		res = Result{}
		return pgx.BeginFunc(ctx, c, func(tx pgx.Tx) error { return pgPostStaged(ctx, tx, batch, &res) })
	})
	if err != nil {
		return Result{}, fmt.Errorf("post %d postings: %w", len(batch), err)
	}
	return res, nil
}

// errNotAllNew reports a batch the fast path cannot post whole because one of its
// tickets is posted already (or appears twice in it).
var errNotAllNew = errors.New("a posting of the batch is not new")

// pgLockCampaigns locks the budget accounts the batch is paid from (its shards' accounts,
// or a campaign's one account) in sorted order, so that settlers never deadlock and
// batches of different shards never wait for each other, and says which account pays
// each posting. A campaign or shard without a budget account is ErrNotFunded.
func pgLockCampaigns(ctx context.Context, tx pgx.Tx, batch []Posting) (*debits, error) {
	d := newDebits()
	for _, camp := range campaignsOf(batch) {
		rows, err := tx.Query(ctx, `SELECT a.name, EXISTS (SELECT 1 FROM transfers WHERE campaign = $1 AND kind = 'refund')
			FROM accounts a WHERE a.name = ANY($2) ORDER BY a.name FOR UPDATE`, camp, budgetNames(batch, camp))
		if err != nil {
			return nil, err
		}
		have := map[string]bool{}
		var name string
		var refunded bool
		if _, err := pgx.ForEachRow(rows, []any{&name, &refunded}, func() error { have[name] = true; return nil }); err != nil {
			return nil, err
		}
		if err := d.resolve(batch, camp, have, refunded); err != nil {
			return nil, err
		}
	}
	return d, nil
}

// postNew is the common case, a batch of postings none of which is in the ledger yet:
// the batch is copied straight into postings (the unique index on (campaign, ticket)
// refuses it whole if one is not new: errNotAllNew), and the balances it moves, summed
// here, go to the accounts in one statement. The budget trigger still refuses a
// balance below zero.
func (l *pgLedger) postNew(ctx context.Context, tx pgx.Tx, batch []Posting, res *Result) error {
	debits, err := pgLockCampaigns(ctx, tx, batch)
	if err != nil {
		return err
	}
	now := time.Now().UnixMicro()
	src := &postingSource{batch: batch, debits: debits, withPostedAt: true, postedAt: now}
	if _, err := tx.CopyFrom(ctx, pgx.Identifier{"postings"}, postingColumns, src); err != nil {
		var pe *pgconn.PgError
		if errors.As(err, &pe) && pe.Code == "23505" {
			return errNotAllNew
		}
		return fmt.Errorf("copy postings: %w", err)
	}
	d := &l.moves
	d.reset()
	for i := range batch {
		p := &batch[i]
		d.add(debits.account(p), p.Currency, -p.Amount)
		d.add(WalletAccount(p.Currency, p.UID), p.Currency, p.Amount)
		res.Amount += p.Amount
	}
	d.sort()
	if _, err := tx.Exec(ctx, `INSERT INTO accounts (name, currency, balance)
		SELECT * FROM unnest($1::TEXT[], $2::TEXT[], $3::BIGINT[])
		ON CONFLICT (name) DO UPDATE SET balance = accounts.balance + excluded.balance`, d.names, d.currencies, d.deltas); err != nil {
		return pgOverBudget(err)
	}
	res.Posted = len(batch)
	return nil
}

// pgPostStaged posts a batch that may hold postings already in the ledger: it is
// copied into the staging table, the new ones are inserted, exactly their amounts move,
// and the ones that claim a ticket held for another uid are recorded as conflicts.
func pgPostStaged(ctx context.Context, tx pgx.Tx, batch []Posting, res *Result) error {
	debits, err := pgLockCampaigns(ctx, tx, batch)
	if err != nil {
		return err
	}
	if _, err := tx.CopyFrom(ctx, pgx.Identifier{"shake_staging"}, stagingColumns, &postingSource{batch: batch, debits: debits}); err != nil {
		return fmt.Errorf("copy to staging: %w", err)
	}
	var n, upd int64
	now := time.Now().UnixMicro()
	if err := tx.QueryRow(ctx, postFromStaging, now).Scan(&n, &res.Amount, &upd); err != nil {
		return pgOverBudget(err)
	}
	res.Posted, res.Duplicates = int(n), len(batch)-int(n)
	if res.Posted == len(batch) {
		return nil // every posting new: no duplicate, no conflict
	}
	return pgConflicts(ctx, tx, batch, res, now)
}

// pgOverBudget maps the budget trigger's violation to ErrOverBudget.
func pgOverBudget(err error) error {
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == "23514" && pe.ConstraintName == "budget_nonnegative" {
		return fmt.Errorf("%w: %s", ErrOverBudget, pe.Message)
	}
	return err
}

// pgConflicts looks up who holds the tickets of a batch that were not all new, records
// the postings that claim a ticket held for another uid in the conflicts table, and
// sets res.Conflicts and res.Duplicates.
func pgConflicts(ctx context.Context, tx pgx.Tx, batch []Posting, res *Result, now int64) error {
	posted := map[string]map[uint64]string{}
	for _, camp := range campaignsOf(batch) {
		var ids []int64
		for i := range batch {
			if batch[i].Campaign == camp {
				ids = append(ids, int64(batch[i].Ticket))
			}
		}
		rows, err := tx.Query(ctx, `SELECT ticket, uid FROM postings WHERE campaign = $1 AND ticket = ANY($2)`, camp, ids)
		if err != nil {
			return err
		}
		m := map[uint64]string{}
		var t int64
		var uid string
		_, err = pgx.ForEachRow(rows, []any{&t, &uid}, func() error { m[uint64(t)] = uid; return nil })
		if err != nil {
			return err
		}
		posted[camp] = m
	}
	classify(batch, posted, res)
	for _, i := range res.Conflicts {
		p := &batch[i]
		if _, err := tx.Exec(ctx, `INSERT INTO conflicts (campaign, ticket, uid, posted_uid, amount, opened_at, seen_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING`, p.Campaign, int64(p.Ticket),
			strconv.FormatUint(p.UID, 10), posted[p.Campaign][p.Ticket], p.Amount, micros(p.OpenedAt), now); err != nil {
			return err
		}
	}
	return nil
}
