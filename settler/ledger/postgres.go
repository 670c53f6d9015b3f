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
	// readOnly sessions (OpenReadOnly) never migrate nor create the staging table.
	readOnly bool
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
	if (l.conn == nil || l.conn.IsClosed()) && l.readOnly {
		c, err := dialReadOnly(ctx, l.url)
		if err != nil {
			return err
		}
		l.conn = c
	}
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

// pgTransfer sums the campaign's transfers of kind (one, or one per shard); ok is false
// when there is none.
func pgTransfer(ctx context.Context, tx pgx.Tx, campaign, kind string) (amount int64, currency string, ok bool, err error) {
	var n int64
	err = tx.QueryRow(ctx, transferSumQuery, campaign, kind).Scan(&amount, &currency, &n)
	return amount, currency, err == nil && n > 0, err
}

// pgShardTransfers returns the campaign's transfers of kind by shard (-1: the one
// budget account of a campaign funded whole) and their currency.
func pgShardTransfers(ctx context.Context, tx pgx.Tx, campaign, kind string) (map[int]int64, string, error) {
	rows, err := tx.Query(ctx, `SELECT shard, amount, currency FROM transfers WHERE campaign = $1 AND kind = $2`, campaign, kind)
	if err != nil {
		return nil, "", err
	}
	m := map[int]int64{}
	var k int32
	var a int64
	var cur string
	_, err = pgx.ForEachRow(rows, []any{&k, &a, &cur}, func() error { m[int(k)] = a; return nil })
	return m, cur, err
}

func pgAddBalance(ctx context.Context, tx pgx.Tx, name, currency string, delta int64) error {
	_, err := tx.Exec(ctx, `INSERT INTO accounts (name, currency, balance) VALUES ($1, $2, $3)
		ON CONFLICT (name) DO UPDATE SET balance = accounts.balance + excluded.balance`, name, currency, delta)
	return err
}

// pgLockBudget locks every budget account row of the campaign (the one account, or one
// per shard) in name order and returns their balances in that order. Fund and refund
// take these locks first, and a batch takes those of its shards, so a refund can never
// interleave with a batch while batches of different shards do not wait for each other.
func pgLockBudget(ctx context.Context, tx pgx.Tx, campaign string) ([]accountBalance, error) {
	lo, hi := shardBudgetRange(campaign)
	rows, err := tx.Query(ctx, `SELECT name, balance FROM accounts WHERE name = $1 OR (name >= $2 AND name < $3)
		ORDER BY name FOR UPDATE`, BudgetAccount(campaign), lo, hi)
	if err != nil {
		return nil, err
	}
	var bs []accountBalance
	var b accountBalance
	_, err = pgx.ForEachRow(rows, []any{&b.name, &b.balance}, func() error { bs = append(bs, b); return nil })
	return bs, err
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

func (l *pgLedger) FundShards(ctx context.Context, campaign, currency string, amounts []int64) error {
	total, err := checkShardAmounts(campaign, currency, amounts)
	if err != nil {
		return err
	}
	err = l.withConn(ctx, func(c *pgx.Conn) error {
		return pgx.BeginFunc(ctx, c, func(tx pgx.Tx) error {
			if _, err := pgLockBudget(ctx, tx, campaign); err != nil {
				return err
			}
			have, cur, err := pgShardTransfers(ctx, tx, campaign, "fund")
			if err != nil || len(have) > 0 {
				return errors.Join(err, sameShardFunding(campaign, currency, cur, have, amounts, total))
			}
			// Two funders racing on a fresh campaign: the transfers primary key lets one
			// win, the other's insert waits and then fails; its retry finds the transfers.
			now, from := time.Now().UnixMicro(), SponsorAccount(campaign)
			for k, a := range amounts {
				to := ShardBudgetAccount(campaign, k)
				if _, err := tx.Exec(ctx, `INSERT INTO transfers (campaign, kind, shard, amount, currency, debit, credit, posted_at)
					VALUES ($1, 'fund', $2, $3, $4, $5, $6, $7)`, campaign, k, a, currency, from, to, now); err != nil {
					return err
				}
				if err := pgAddBalance(ctx, tx, to, currency, a); err != nil {
					return err
				}
			}
			return pgAddBalance(ctx, tx, from, currency, -total)
		})
	})
	if err != nil {
		return fmt.Errorf("fund %s per shard: %w", campaign, err)
	}
	return nil
}

func (l *pgLedger) Fund(ctx context.Context, campaign, currency string, budget int64) error {
	if err := checkCampaignTransfer(campaign, currency, budget); err != nil {
		return err
	}
	err := l.withConn(ctx, func(c *pgx.Conn) error {
		return pgx.BeginFunc(ctx, c, func(tx pgx.Tx) error {
			if _, err := pgLockBudget(ctx, tx, campaign); err != nil {
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
	batch  []Posting
	debits *debits
	i      int
	row    [10]any
}

func (s *stagingSource) Next() bool { s.i++; return s.i <= len(s.batch) }
func (s *stagingSource) Err() error { return nil }
func (s *stagingSource) Values() ([]any, error) {
	p := &s.batch[s.i-1]
	s.row = [10]any{p.Campaign, int64(p.Ticket), int32(p.Shard), int32(p.Round), p.Amount, p.Currency,
		strconv.FormatUint(p.UID, 10), s.debits.account(p), WalletAccount(p.Currency, p.UID), micros(p.OpenedAt)}
	return s.row[:], nil
}

// postingColumns are the columns the fast path copies into postings (id is generated).
var postingColumns = []string{"campaign", "ticket", "shard", "round", "amount", "currency", "uid", "debit", "credit", "opened_at", "posted_at"}

// postingSource feeds a batch straight to the postings table.
type postingSource struct {
	batch    []Posting
	debits   *debits
	postedAt int64
	i        int
	row      [11]any
}

func (s *postingSource) Next() bool { s.i++; return s.i <= len(s.batch) }
func (s *postingSource) Err() error { return nil }
func (s *postingSource) Values() ([]any, error) {
	p := &s.batch[s.i-1]
	s.row = [11]any{p.Campaign, int64(p.Ticket), int32(p.Shard), int32(p.Round), p.Amount, p.Currency,
		strconv.FormatUint(p.UID, 10), s.debits.account(p), WalletAccount(p.Currency, p.UID), micros(p.OpenedAt), s.postedAt}
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
	src := &postingSource{batch: batch, debits: debits, postedAt: now}
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
	if _, err := tx.CopyFrom(ctx, pgx.Identifier{"shake_staging"}, stagingColumns, &stagingSource{batch: batch, debits: debits}); err != nil {
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
			if _, err := pgLockBudget(ctx, tx, campaign); err != nil {
				return err
			}
			if err := pgFund(ctx, tx, campaign, currency, budget); err != nil {
				return err
			}
			bs, err := pgLockBudget(ctx, tx, campaign)
			if err != nil {
				return err
			}
			amount, _, ok, err := pgTransfer(ctx, tx, campaign, "refund")
			if err != nil || ok {
				rr = RefundResult{Amount: amount}
				return err
			}
			now, to := time.Now().UnixMicro(), SponsorAccount(campaign)
			rr.Posted = true
			rr.Amount, err = refundAccounts(campaign, bs, func(k int, from string, amount int64) error {
				_, err := tx.Exec(ctx, `INSERT INTO transfers (campaign, kind, shard, amount, currency, debit, credit, posted_at)
					VALUES ($1, 'refund', $2, $3, $4, $5, $6, $7)`, campaign, k, amount, currency, from, to, now)
				return err
			}, func(name string, delta int64) error { return pgAddBalance(ctx, tx, name, currency, delta) })
			return err
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
			lo, hi := shardBudgetRange(campaign)
			if err := tx.QueryRow(ctx, budgetBalanceQuery, BudgetAccount(campaign), lo, hi).Scan(&s.BudgetBalance); err != nil {
				return err
			}
			rows, err := tx.Query(ctx, shardStatsQuery, campaign, SponsorAccount(campaign), lo)
			if err != nil {
				return err
			}
			var sh ShardStats
			var k int32
			_, err = pgx.ForEachRow(rows, []any{&k, &sh.Funded, &sh.Refunded, &sh.Settled, &sh.Balance}, func() error {
				sh.Shard = int(k)
				s.Shards = append(s.Shards, sh)
				return nil
			})
			return err
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
