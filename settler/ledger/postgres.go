package ledger

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// pgLedger is the PostgreSQL ledger over one connection. One connection is enough: the
// settler posts one batch at a time and each batch is one COPY plus two statements. It
// is re-dialled after any failure, so a ledger that went away is picked up again by the
// next attempt. (pgxpool would need github.com/jackc/puddle/v2, which go.mod lacks.)
type pgLedger struct {
	url  string
	mu   sync.Mutex
	conn *pgx.Conn
	// migrated is set once the embedded migrations have been applied by this process.
	migrated bool
	// moves is the fast path's scratch for the balances a batch moves (under mu).
	moves balanceMoves
}

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

func openPostgres(ctx context.Context, url string) (*pgLedger, error) {
	l := &pgLedger{url: url}
	// Dial now so that a bad URL or an unreachable server is reported at start.
	if err := l.withConn(ctx, func(*pgx.Conn) error { return nil }); err != nil {
		return nil, err
	}
	return l, nil
}

// withConn runs fn on the connection, dialling (and migrating) first if needed, and
// drops the connection after any error so that the next call starts clean.
func (l *pgLedger) withConn(ctx context.Context, fn func(*pgx.Conn) error) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.conn == nil || l.conn.IsClosed() {
		c, err := pgx.Connect(ctx, l.url)
		if err != nil {
			return fmt.Errorf("cannot connect to postgres ledger: %w", err)
		}
		if !l.migrated {
			if err := pgMigrate(ctx, c); err != nil {
				c.Close(context.Background())
				return fmt.Errorf("postgres ledger: %w", err)
			}
			l.migrated = true
		}
		if _, err := c.Exec(ctx, stagingDDL); err != nil {
			c.Close(context.Background())
			return fmt.Errorf("postgres ledger: cannot create staging table: %w", err)
		}
		l.conn = c
	}
	if err := fn(l.conn); err != nil {
		var keep bool
		keep = errors.Is(err, ErrNotFunded) || errors.Is(err, ErrConflict) || errors.Is(err, ErrOverBudget) ||
			errors.Is(err, ErrOtherGeneration) || errors.Is(err, ErrManifestChanged)
		if !keep {
			cctx, cancel := context.WithTimeout(context.Background(), time.Second)
			l.conn.Close(cctx)
			cancel()
			l.conn = nil
		}
		return err
	}
	return nil
}

func pgMigrate(ctx context.Context, c *pgx.Conn) error {
	ms, err := loadMigrations("postgres")
	if err != nil {
		return err
	}
	// A ledger a newer shake migrated is not this binary's to write: refuse it before
	// any statement of this version runs on it.
	applied, err := pgSchemaVersion(ctx, c)
	if err != nil {
		return fmt.Errorf("schema version: %w", err)
	}
	if err := checkSchemaVersion(applied, len(ms)); err != nil {
		return err
	}
	for _, m := range ms {
		err := pgx.BeginFunc(ctx, c, func(tx pgx.Tx) error {
			// Serialise concurrent starters (several settlers, reconcile) on one lock.
			if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(7345617283)`); err != nil {
				return err
			}
			if _, err := tx.Exec(ctx, migrationTable); err != nil {
				return err
			}
			var n int
			if err := tx.QueryRow(ctx, `SELECT COUNT(*) FROM schema_migrations WHERE version = $1`, m.version).Scan(&n); err != nil {
				return err
			}
			if n > 0 {
				return nil
			}
			if _, err := tx.Exec(ctx, m.sql); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, `INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)`,
				m.version, m.name, time.Now().UnixMicro())
			return err
		})
		if err != nil {
			return fmt.Errorf("migration %s: %w", m.name, err)
		}
	}
	return nil
}

func pgTransfer(ctx context.Context, tx pgx.Tx, campaign, kind string) (amount int64, currency string, ok bool, err error) {
	err = tx.QueryRow(ctx, `SELECT amount, currency FROM transfers WHERE campaign = $1 AND kind = $2`, campaign, kind).Scan(&amount, &currency)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, "", false, nil
	}
	return amount, currency, err == nil, err
}

func pgAddBalance(ctx context.Context, tx pgx.Tx, name, currency string, delta int64) error {
	_, err := tx.Exec(ctx, `INSERT INTO accounts (name, currency, balance) VALUES ($1, $2, $3)
		ON CONFLICT (name) DO UPDATE SET balance = accounts.balance + excluded.balance`, name, currency, delta)
	return err
}

// pgLockBudget locks the campaign's budget account row. Every posting, fund and refund
// of a campaign takes this lock first, so a refund can never interleave with a batch.
func pgLockBudget(ctx context.Context, tx pgx.Tx, campaign string) (bal int64, exists bool, err error) {
	err = tx.QueryRow(ctx, `SELECT balance FROM accounts WHERE name = $1 FOR UPDATE`, BudgetAccount(campaign)).Scan(&bal)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, false, nil
	}
	return bal, err == nil, err
}

func pgFund(ctx context.Context, tx pgx.Tx, campaign, currency string, budget int64) error {
	// Two funders racing on a fresh campaign: the transfers primary key lets one win,
	// the other's insert waits and then fails; its retry then finds the transfer.
	amount, cur, ok, err := pgTransfer(ctx, tx, campaign, "fund")
	if err != nil {
		return err
	}
	if ok {
		if amount != budget || cur != currency {
			return fmt.Errorf("%w: campaign %s funded with %d %s, not %d %s", ErrConflict, campaign, amount, cur, budget, currency)
		}
		return nil
	}
	from, to := SponsorAccount(campaign), BudgetAccount(campaign)
	if _, err := tx.Exec(ctx, `INSERT INTO transfers (campaign, kind, amount, currency, debit, credit, posted_at)
		VALUES ($1, 'fund', $2, $3, $4, $5, $6)`, campaign, budget, currency, from, to, time.Now().UnixMicro()); err != nil {
		return err
	}
	if err := pgAddBalance(ctx, tx, to, currency, budget); err != nil {
		return err
	}
	return pgAddBalance(ctx, tx, from, currency, -budget)
}

func (l *pgLedger) Fund(ctx context.Context, campaign, currency string, budget int64) error {
	if err := checkCampaignTransfer(campaign, currency, budget); err != nil {
		return err
	}
	err := l.withConn(ctx, func(c *pgx.Conn) error {
		return pgx.BeginFunc(ctx, c, func(tx pgx.Tx) error {
			if _, _, err := pgLockBudget(ctx, tx, campaign); err != nil {
				return err
			}
			return pgFund(ctx, tx, campaign, currency, budget)
		})
	})
	if err != nil {
		return fmt.Errorf("fund %s: %w", campaign, err)
	}
	return nil
}

// stagingSource feeds a batch to CopyFrom without building a [][]any up front.
type stagingSource struct {
	batch    []Posting
	refunded map[string]bool // campaigns whose late claims the sponsor pays
	i        int
	row      [10]any
}

func (s *stagingSource) Next() bool { s.i++; return s.i <= len(s.batch) }
func (s *stagingSource) Err() error { return nil }
func (s *stagingSource) Values() ([]any, error) {
	p := &s.batch[s.i-1]
	s.row = [10]any{p.Campaign, int64(p.Ticket), int32(p.Shard), int32(p.Round), p.Amount, p.Currency,
		strconv.FormatUint(p.UID, 10), debitAccount(p.Campaign, s.refunded), WalletAccount(p.Currency, p.UID), micros(p.OpenedAt)}
	return s.row[:], nil
}

// postingColumns are the columns the fast path copies into postings (id is generated).
var postingColumns = []string{"campaign", "ticket", "shard", "round", "amount", "currency", "uid", "debit", "credit", "opened_at", "posted_at"}

// postingSource feeds a batch straight to the postings table.
type postingSource struct {
	batch    []Posting
	refunded map[string]bool
	postedAt int64
	i        int
	row      [11]any
}

func (s *postingSource) Next() bool { s.i++; return s.i <= len(s.batch) }
func (s *postingSource) Err() error { return nil }
func (s *postingSource) Values() ([]any, error) {
	p := &s.batch[s.i-1]
	s.row = [11]any{p.Campaign, int64(p.Ticket), int32(p.Shard), int32(p.Round), p.Amount, p.Currency,
		strconv.FormatUint(p.UID, 10), debitAccount(p.Campaign, s.refunded), WalletAccount(p.Currency, p.UID), micros(p.OpenedAt), s.postedAt}
	return s.row[:], nil
}

func (l *pgLedger) Post(ctx context.Context, batch []Posting) (Result, error) {
	var res Result
	for i := range batch {
		if err := checkPosting(&batch[i]); err != nil {
			return res, err
		}
	}
	if len(batch) == 0 {
		return res, nil
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

// pgLockCampaigns locks the budget account of every campaign of the batch, in sorted
// order (no deadlock between settlers), and returns the campaigns already refunded,
// whose late claims the sponsor pays. A campaign without a budget is ErrNotFunded.
func pgLockCampaigns(ctx context.Context, tx pgx.Tx, batch []Posting) (map[string]bool, error) {
	refunded := map[string]bool{}
	for _, camp := range campaignsOf(batch) {
		var done bool
		err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM transfers WHERE campaign = $1 AND kind = 'refund')
			FROM accounts WHERE name = $2 FOR UPDATE`, camp, BudgetAccount(camp)).Scan(&done)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil, fmt.Errorf("%w: %s", ErrNotFunded, camp)
		}
		if err != nil {
			return nil, err
		}
		refunded[camp] = done
	}
	return refunded, nil
}

// postNew is the common case, a batch of postings none of which is in the ledger yet:
// the batch is copied straight into postings (the unique index on (campaign, ticket)
// refuses it whole if one is not new: errNotAllNew), and the balances it moves, summed
// here, go to the accounts in one statement. The budget trigger still refuses a
// balance below zero.
func (l *pgLedger) postNew(ctx context.Context, tx pgx.Tx, batch []Posting, res *Result) error {
	refunded, err := pgLockCampaigns(ctx, tx, batch)
	if err != nil {
		return err
	}
	now := time.Now().UnixMicro()
	src := &postingSource{batch: batch, refunded: refunded, postedAt: now}
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
		d.add(debitAccount(p.Campaign, refunded), p.Currency, -p.Amount)
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
	refunded, err := pgLockCampaigns(ctx, tx, batch)
	if err != nil {
		return err
	}
	if _, err := tx.CopyFrom(ctx, pgx.Identifier{"shake_staging"}, stagingColumns, &stagingSource{batch: batch, refunded: refunded}); err != nil {
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

func (l *pgLedger) Checks(ctx context.Context, campaign string, perUser int) (Checks, error) {
	var ch Checks
	err := l.withConn(ctx, func(c *pgx.Conn) error {
		return pgx.BeginTxFunc(ctx, c, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
			if err := tx.QueryRow(ctx, `SELECT COUNT(*) FROM conflicts WHERE campaign = $1`, campaign).Scan(&ch.Conflicts); err != nil {
				return err
			}
			if perUser <= 0 {
				return nil
			}
			return tx.QueryRow(ctx, overLimitQuery, campaign, perUser).Scan(&ch.OverLimitUsers)
		})
	})
	if err != nil {
		return Checks{}, fmt.Errorf("checks %s: %w", campaign, err)
	}
	return ch, nil
}

func (l *pgLedger) Refund(ctx context.Context, campaign, currency string, budget int64) (RefundResult, error) {
	var rr RefundResult
	if err := checkCampaignTransfer(campaign, currency, budget); err != nil {
		return rr, err
	}
	err := l.withConn(ctx, func(c *pgx.Conn) error {
		return pgx.BeginFunc(ctx, c, func(tx pgx.Tx) error {
			if _, _, err := pgLockBudget(ctx, tx, campaign); err != nil {
				return err
			}
			if err := pgFund(ctx, tx, campaign, currency, budget); err != nil {
				return err
			}
			bal, _, err := pgLockBudget(ctx, tx, campaign)
			if err != nil {
				return err
			}
			amount, _, ok, err := pgTransfer(ctx, tx, campaign, "refund")
			if err != nil {
				return err
			}
			if ok {
				rr = RefundResult{Amount: amount}
				return nil
			}
			if bal < 0 {
				return fmt.Errorf("%w: budget account of %s is negative (%d)", ErrConflict, campaign, bal)
			}
			from, to := BudgetAccount(campaign), SponsorAccount(campaign)
			if _, err := tx.Exec(ctx, `INSERT INTO transfers (campaign, kind, amount, currency, debit, credit, posted_at)
				VALUES ($1, 'refund', $2, $3, $4, $5, $6)`, campaign, bal, currency, from, to, time.Now().UnixMicro()); err != nil {
				return err
			}
			if err := pgAddBalance(ctx, tx, from, currency, -bal); err != nil {
				return err
			}
			rr = RefundResult{Amount: bal, Posted: true}
			return pgAddBalance(ctx, tx, to, currency, bal)
		})
	})
	if err != nil {
		return RefundResult{}, fmt.Errorf("refund %s: %w", campaign, err)
	}
	return rr, nil
}

func (l *pgLedger) Stats(ctx context.Context, campaign string) (Stats, error) {
	var s Stats
	err := l.withConn(ctx, func(c *pgx.Conn) error {
		// One REPEATABLE READ snapshot, so the figures agree with each other.
		return pgx.BeginTxFunc(ctx, c, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
			if err := tx.QueryRow(ctx, `SELECT COUNT(*), COUNT(DISTINCT ticket), COALESCE(SUM(amount), 0)::BIGINT
				FROM postings WHERE campaign = $1`, campaign).Scan(&s.PostingRows, &s.Tickets, &s.SettledAmount); err != nil {
				return err
			}
			var err error
			if s.FundedAmount, _, s.Funded, err = pgTransfer(ctx, tx, campaign, "fund"); err != nil {
				return err
			}
			if s.RefundedAmount, _, s.Refunded, err = pgTransfer(ctx, tx, campaign, "refund"); err != nil {
				return err
			}
			if err := tx.QueryRow(ctx, `SELECT COUNT(*), COALESCE(SUM(amount), 0)::BIGINT FROM postings
				WHERE campaign = $1 AND debit = $2`, campaign, SponsorAccount(campaign)).Scan(&s.LateTickets, &s.LateAmount); err != nil {
				return err
			}
			return tx.QueryRow(ctx, `SELECT COALESCE(SUM(balance), 0)::BIGINT FROM accounts WHERE name = $1`,
				BudgetAccount(campaign)).Scan(&s.BudgetBalance)
		})
	})
	if err != nil {
		return Stats{}, fmt.Errorf("stats %s: %w", campaign, err)
	}
	return s, nil
}

func (l *pgLedger) Audit(ctx context.Context) (Audit, error) {
	var a Audit
	err := l.withConn(ctx, func(c *pgx.Conn) error {
		return pgx.BeginTxFunc(ctx, c, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
			if err := tx.QueryRow(ctx, `SELECT COALESCE(SUM(balance), 0)::BIGINT FROM accounts`).Scan(&a.BalanceSum); err != nil {
				return err
			}
			return tx.QueryRow(ctx, driftQuery).Scan(&a.DriftedAccounts)
		})
	})
	if err != nil {
		return Audit{}, fmt.Errorf("audit: %w", err)
	}
	return a, nil
}

func (l *pgLedger) Scan(ctx context.Context, campaign string, fn func(uint64, int64, string) error) error {
	err := l.withConn(ctx, func(c *pgx.Conn) error {
		rows, err := c.Query(ctx, `SELECT ticket, amount, currency FROM postings WHERE campaign = $1 ORDER BY ticket, id`, campaign)
		if err != nil {
			return err
		}
		defer rows.Close()
		var t, a int64
		var cur string
		for rows.Next() {
			if err := rows.Scan(&t, &a, &cur); err != nil {
				return err
			}
			if err := fn(uint64(t), a, cur); err != nil {
				return err
			}
		}
		return rows.Err()
	})
	if err != nil {
		return fmt.Errorf("scan %s: %w", campaign, err)
	}
	return nil
}

func (l *pgLedger) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.conn != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		err := l.conn.Close(ctx)
		l.conn = nil
		return err
	}
	return nil
}
