package ledger

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" database/sql driver
)

// sqliteLedger is the embedded ledger: one SQLite file in WAL mode with a single
// connection, so every transaction is a writer and they never interleave inside the
// process; busy_timeout covers other processes (reconcile) on the same file.
type sqliteLedger struct {
	db *sql.DB
	// moves is Post's scratch for the balances a batch moves (Post runs in the one
	// connection's transaction, so never twice at once).
	moves balanceMoves
}

func openSQLite(ctx context.Context, path string) (*sqliteLedger, error) {
	// The ledger holds every user's wallet: create it 0600 (SQLite gives its -wal and
	// -shm files the database file's mode), rather than with the umask's 0644.
	if f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600); err == nil {
		f.Close()
	} else if !errors.Is(err, fs.ErrExist) {
		return nil, fmt.Errorf("cannot create sqlite ledger %s: %w", path, err)
	}
	q := url.Values{}
	q.Add("_pragma", "busy_timeout(10000)")
	q.Add("_pragma", "journal_mode(WAL)")
	// FULL, not NORMAL: in WAL mode NORMAL may lose the last commits on power loss, and a
	// committed batch is what lets the settler commit its Kafka offsets.
	q.Add("_pragma", "synchronous(FULL)")
	// A batch touches a few thousand pages at random (the wallets, the query indexes):
	// with SQLite's default 2 MiB page cache the transaction spilled its dirty pages to
	// the WAL before it committed and read them back, most of a batch's time. 64 MiB
	// holds a 2,000-posting batch's pages; memory is taken only as pages are used.
	q.Add("_pragma", "cache_size(-65536)")
	// Such a batch also writes thousands of pages to the WAL, more than the default
	// checkpoint threshold (1,000 pages), so every commit was followed by a checkpoint
	// copying them all into the database file. At 16,384 pages (64 MiB of WAL) a
	// checkpoint comes every few batches and a page dirtied by several is copied once.
	q.Add("_pragma", "wal_autocheckpoint(16384)")
	// Post's savepoint and multi-row statements keep a statement journal of the pages
	// they change, to undo them if they fail; in memory it costs no write (on disk it
	// was one more write per changed page).
	q.Add("_pragma", "temp_store(MEMORY)")
	q.Set("_txlock", "immediate")
	db, err := sql.Open("sqlite", "file:"+path+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("cannot open sqlite ledger %s: %w", path, err)
	}
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)
	db.SetConnMaxLifetime(0)
	l := &sqliteLedger{db: db}
	if err := l.migrate(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("sqlite ledger %s: %w", path, err)
	}
	return l, nil
}

func (l *sqliteLedger) migrate(ctx context.Context) error {
	ms, err := loadMigrations("sqlite")
	if err != nil {
		return err
	}
	if _, err := l.db.ExecContext(ctx, migrationTable); err != nil {
		return fmt.Errorf("cannot create schema_migrations: %w", err)
	}
	applied, err := sqliteSchemaVersion(ctx, l.db)
	if err != nil {
		return fmt.Errorf("schema version: %w", err)
	}
	if err := checkSchemaVersion(applied, len(ms)); err != nil {
		return err
	}
	for _, m := range ms {
		err := l.inTx(ctx, func(tx *sql.Tx) error {
			var n int
			if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM schema_migrations WHERE version = ?`, m.version).Scan(&n); err != nil {
				return err
			}
			if n > 0 {
				return nil
			}
			if _, err := tx.ExecContext(ctx, m.sql); err != nil {
				return err
			}
			_, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)`,
				m.version, m.name, time.Now().UnixMicro())
			return err
		})
		if err != nil {
			return fmt.Errorf("migration %s: %w", m.name, err)
		}
	}
	return nil
}

func (l *sqliteLedger) inTx(ctx context.Context, fn func(tx *sql.Tx) error) error {
	tx, err := l.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		tx.Rollback()
		return err
	}
	return tx.Commit()
}

// addBalance moves delta into account name, creating the account on first use.
func sqliteAddBalance(ctx context.Context, tx *sql.Tx, name, currency string, delta int64) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO accounts (name, currency, balance) VALUES (?, ?, ?)
		ON CONFLICT (name) DO UPDATE SET balance = balance + excluded.balance`, name, currency, delta)
	return err
}

// sqliteTransfer sums the campaign's transfers of kind (one, or one per shard); ok is
// false when there is none.
func sqliteTransfer(ctx context.Context, tx *sql.Tx, campaign, kind string) (amount int64, currency string, ok bool, err error) {
	var n int64
	err = tx.QueryRowContext(ctx, transferSumQuery, campaign, kind).Scan(&amount, &currency, &n)
	return amount, currency, err == nil && n > 0, err
}

// sqliteShardTransfers returns the campaign's transfers of kind by shard (-1: the one
// budget account of a campaign funded whole) and their currency.
func sqliteShardTransfers(ctx context.Context, tx *sql.Tx, campaign, kind string) (map[int]int64, string, error) {
	rows, err := tx.QueryContext(ctx, `SELECT shard, amount, currency FROM transfers WHERE campaign = ? AND kind = ?`, campaign, kind)
	if err != nil {
		return nil, "", err
	}
	defer rows.Close()
	m := map[int]int64{}
	var cur string
	for rows.Next() {
		var k int
		var a int64
		if err := rows.Scan(&k, &a, &cur); err != nil {
			return nil, "", err
		}
		m[k] = a
	}
	return m, cur, rows.Err()
}

// sqliteBudgets returns the campaign's budget accounts and their balances, in name order.
func sqliteBudgets(ctx context.Context, tx *sql.Tx, campaign string) ([]accountBalance, error) {
	lo, hi := shardBudgetRange(campaign)
	rows, err := tx.QueryContext(ctx, `SELECT name, balance FROM accounts WHERE name = ? OR (name >= ? AND name < ?) ORDER BY name`,
		BudgetAccount(campaign), lo, hi)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var bs []accountBalance
	for rows.Next() {
		var b accountBalance
		if err := rows.Scan(&b.name, &b.balance); err != nil {
			return nil, err
		}
		bs = append(bs, b)
	}
	return bs, rows.Err()
}

func sqliteFund(ctx context.Context, tx *sql.Tx, campaign, currency string, budget int64) error {
	amount, cur, ok, err := sqliteTransfer(ctx, tx, campaign, "fund")
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
	if _, err := tx.ExecContext(ctx, `INSERT INTO transfers (campaign, kind, amount, currency, debit, credit, posted_at)
		VALUES (?, 'fund', ?, ?, ?, ?, ?)`, campaign, budget, currency, from, to, time.Now().UnixMicro()); err != nil {
		return err
	}
	if err := sqliteAddBalance(ctx, tx, from, currency, -budget); err != nil {
		return err
	}
	return sqliteAddBalance(ctx, tx, to, currency, budget)
}

func (l *sqliteLedger) FundShards(ctx context.Context, campaign, currency string, amounts []int64) error {
	total, err := checkShardAmounts(campaign, currency, amounts)
	if err != nil {
		return err
	}
	err = l.inTx(ctx, func(tx *sql.Tx) error {
		have, cur, err := sqliteShardTransfers(ctx, tx, campaign, "fund")
		if err != nil || len(have) > 0 {
			return errors.Join(err, sameShardFunding(campaign, currency, cur, have, amounts, total))
		}
		now, from := time.Now().UnixMicro(), SponsorAccount(campaign)
		for k, a := range amounts {
			to := ShardBudgetAccount(campaign, k)
			if _, err := tx.ExecContext(ctx, `INSERT INTO transfers (campaign, kind, shard, amount, currency, debit, credit, posted_at)
				VALUES (?, 'fund', ?, ?, ?, ?, ?, ?)`, campaign, k, a, currency, from, to, now); err != nil {
				return err
			}
			if err := sqliteAddBalance(ctx, tx, to, currency, a); err != nil {
				return err
			}
		}
		return sqliteAddBalance(ctx, tx, from, currency, -total)
	})
	if err != nil {
		return fmt.Errorf("fund %s per shard: %w", campaign, err)
	}
	return nil
}

func (l *sqliteLedger) Fund(ctx context.Context, campaign, currency string, budget int64) error {
	if err := checkCampaignTransfer(campaign, currency, budget); err != nil {
		return err
	}
	if err := l.inTx(ctx, func(tx *sql.Tx) error { return sqliteFund(ctx, tx, campaign, currency, budget) }); err != nil {
		return fmt.Errorf("fund %s: %w", campaign, err)
	}
	return nil
}

func (l *sqliteLedger) Post(ctx context.Context, batch []Posting) (Result, error) {
	var res Result
	for i := range batch {
		if err := checkPosting(&batch[i]); err != nil {
			return res, err
		}
	}
	if len(batch) == 0 {
		return res, nil
	}
	err := l.inTx(ctx, func(tx *sql.Tx) error {
		res = Result{}
		debits, err := sqliteCampaigns(ctx, tx, batch)
		if err != nil {
			return err
		}
		now := time.Now().UnixMicro()
		m := &l.moves
		m.reset()
		if err := sqlitePostNew(ctx, tx, batch, debits, now, m, &res); errors.Is(err, errNotAllNew) {
			m.reset()
			res = Result{}
			err = sqlitePostEach(ctx, tx, batch, debits, now, m, &res)
		} else if err != nil {
			return err
		}
		m.sort()
		return sqliteMoveBalances(ctx, tx, m)
	})
	if err != nil {
		return Result{}, fmt.Errorf("post %d postings: %w", len(batch), err)
	}
	return res, nil
}

// sqliteCampaigns checks that every campaign and shard of the batch is funded and says
// which account pays each posting (see debits).
func sqliteCampaigns(ctx context.Context, tx *sql.Tx, batch []Posting) (*debits, error) {
	d := newDebits()
	for _, c := range campaignsOf(batch) {
		funded, _, err := sqliteShardTransfers(ctx, tx, c, "fund")
		if err != nil {
			return nil, err
		}
		have := map[string]bool{}
		for k := range funded {
			if k < 0 {
				have[BudgetAccount(c)] = true
			} else {
				have[ShardBudgetAccount(c, k)] = true
			}
		}
		_, _, refunded, err := sqliteTransfer(ctx, tx, c, "refund")
		if err != nil {
			return nil, err
		}
		if err := d.resolve(batch, c, have, refunded); err != nil {
			return nil, err
		}
	}
	return d, nil
}

// sqliteChunk is how many rows one multi-row statement carries: 11 parameters a
// posting stay well under SQLite's limit on host parameters (32,766).
const sqliteChunk = 256

// sqlitePostNew is the common case, a batch none of whose postings is in the ledger:
// a few multi-row INSERTs (no ON CONFLICT), inside a savepoint that is rolled back
// whole, as errNotAllNew, when the unique index finds a ticket posted already (or
// repeated in the batch). The balances to move are summed into m.
func sqlitePostNew(ctx context.Context, tx *sql.Tx, batch []Posting, debits *debits, now int64, m *balanceMoves, res *Result) error {
	if _, err := tx.ExecContext(ctx, `SAVEPOINT post_new`); err != nil {
		return err
	}
	args := make([]any, 0, 11*min(len(batch), sqliteChunk))
	var q strings.Builder
	for start := 0; start < len(batch); start += sqliteChunk {
		part := batch[start:min(start+sqliteChunk, len(batch))]
		q.Reset()
		q.WriteString(`INSERT INTO postings (campaign, ticket, shard, round, amount, currency, uid, debit, credit, opened_at, posted_at) VALUES `)
		args = args[:0]
		for i := range part {
			p := &part[i]
			if i > 0 {
				q.WriteByte(',')
			}
			q.WriteString(`(?,?,?,?,?,?,?,?,?,?,?)`)
			debit, credit := debits.account(p), WalletAccount(p.Currency, p.UID)
			args = append(args, p.Campaign, int64(p.Ticket), p.Shard, p.Round, p.Amount, p.Currency,
				strconv.FormatUint(p.UID, 10), debit, credit, micros(p.OpenedAt), now)
			m.add(debit, p.Currency, -p.Amount)
			m.add(credit, p.Currency, p.Amount)
			res.Amount += p.Amount
		}
		if _, err := tx.ExecContext(ctx, q.String(), args...); err != nil {
			var se interface{ Code() int }
			if errors.As(err, &se) && se.Code() == sqliteConstraintUnique {
				if _, rerr := tx.ExecContext(ctx, `ROLLBACK TO post_new`); rerr != nil {
					return rerr
				}
				err = errNotAllNew
			}
			return err
		}
	}
	res.Posted = len(batch)
	_, err := tx.ExecContext(ctx, `RELEASE post_new`)
	return err
}

// sqliteConstraintUnique is SQLITE_CONSTRAINT_UNIQUE, the extended result code of a
// unique index violation.
const sqliteConstraintUnique = 2067

// sqlitePostEach posts a batch that may hold postings already in the ledger, one at a
// time: a posting the ledger holds for the same uid is a duplicate, one it holds for
// another uid is a conflict, recorded and never paid. The balances to move are summed
// into m.
func sqlitePostEach(ctx context.Context, tx *sql.Tx, batch []Posting, debits *debits, now int64, m *balanceMoves, res *Result) error {
	var conflicts []string // posted uid of each conflict, in res.Conflicts order
	st, err := tx.PrepareContext(ctx, `INSERT INTO postings
		(campaign, ticket, shard, round, amount, currency, uid, debit, credit, opened_at, posted_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (campaign, ticket) DO NOTHING`)
	if err != nil {
		return err
	}
	defer st.Close()
	for i := range batch {
		p := &batch[i]
		debit, credit := debits.account(p), WalletAccount(p.Currency, p.UID)
		r, err := st.ExecContext(ctx, p.Campaign, int64(p.Ticket), p.Shard, p.Round, p.Amount, p.Currency,
			strconv.FormatUint(p.UID, 10), debit, credit, micros(p.OpenedAt), now)
		if err != nil {
			return err
		}
		if n, err := r.RowsAffected(); err != nil {
			return err
		} else if n == 1 {
			res.Posted++
			res.Amount += p.Amount
			m.add(debit, p.Currency, -p.Amount)
			m.add(credit, p.Currency, p.Amount)
			continue
		}
		// Already posted: the same user's claim again, or another user's (a ticket
		// handed out twice), which is recorded and never paid.
		var uid string
		if err := tx.QueryRowContext(ctx, `SELECT uid FROM postings WHERE campaign = ? AND ticket = ?`,
			p.Campaign, int64(p.Ticket)).Scan(&uid); err != nil {
			return err
		}
		if uid == strconv.FormatUint(p.UID, 10) {
			res.Duplicates++
			continue
		}
		res.Conflicts = append(res.Conflicts, i)
		conflicts = append(conflicts, uid)
	}
	for j, i := range res.Conflicts {
		p := &batch[i]
		if _, err := tx.ExecContext(ctx, `INSERT INTO conflicts (campaign, ticket, uid, posted_uid, amount, opened_at, seen_at)
			VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`, p.Campaign, int64(p.Ticket),
			strconv.FormatUint(p.UID, 10), conflicts[j], p.Amount, micros(p.OpenedAt), now); err != nil {
			return err
		}
	}
	return nil
}

// sqliteMoveBalances applies the summed moves, in account order, a few hundred
// accounts a statement; the budget triggers refuse a budget below zero (ErrOverBudget).
func sqliteMoveBalances(ctx context.Context, tx *sql.Tx, m *balanceMoves) error {
	args := make([]any, 0, 3*min(len(m.names), sqliteChunk))
	var q strings.Builder
	for start := 0; start < len(m.names); start += sqliteChunk {
		end := min(start+sqliteChunk, len(m.names))
		q.Reset()
		q.WriteString(`INSERT INTO accounts (name, currency, balance) VALUES `)
		args = args[:0]
		for i := start; i < end; i++ {
			if i > start {
				q.WriteByte(',')
			}
			q.WriteString(`(?,?,?)`)
			args = append(args, m.names[i], m.currencies[i], m.deltas[i])
		}
		q.WriteString(` ON CONFLICT (name) DO UPDATE SET balance = balance + excluded.balance`)
		if _, err := tx.ExecContext(ctx, q.String(), args...); err != nil {
			return sqliteOverBudget(err)
		}
	}
	return nil
}

// sqliteOverBudget maps the budget triggers' abort to ErrOverBudget.
func sqliteOverBudget(err error) error {
	if err != nil && strings.Contains(err.Error(), "shake: budget account would go below zero") {
		return fmt.Errorf("%w: %v", ErrOverBudget, err)
	}
	return err
}

func (l *sqliteLedger) Checks(ctx context.Context, campaign string, perUser int) (Checks, error) {
	var ch Checks
	err := l.readSnapshot(ctx, func(c *sql.Conn) error {
		if err := c.QueryRowContext(ctx, `SELECT COUNT(*) FROM conflicts WHERE campaign = ?`, campaign).Scan(&ch.Conflicts); err != nil {
			return err
		}
		if perUser <= 0 {
			return nil
		}
		return c.QueryRowContext(ctx, overLimitQuery, campaign, perUser).Scan(&ch.OverLimitUsers)
	})
	if err != nil {
		return Checks{}, fmt.Errorf("checks %s: %w", campaign, err)
	}
	return ch, nil
}

func (l *sqliteLedger) Refund(ctx context.Context, campaign, currency string, budget int64) (RefundResult, error) {
	var rr RefundResult
	if err := checkCampaignTransfer(campaign, currency, budget); err != nil {
		return rr, err
	}
	err := l.inTx(ctx, func(tx *sql.Tx) error {
		if err := sqliteFund(ctx, tx, campaign, currency, budget); err != nil {
			return err
		}
		amount, _, ok, err := sqliteTransfer(ctx, tx, campaign, "refund")
		if err != nil {
			return err
		}
		if ok {
			rr = RefundResult{Amount: amount}
			return nil
		}
		bs, err := sqliteBudgets(ctx, tx, campaign)
		if err != nil {
			return err
		}
		now, to := time.Now().UnixMicro(), SponsorAccount(campaign)
		rr.Posted = true
		rr.Amount, err = refundAccounts(campaign, bs, func(k int, from string, amount int64) error {
			_, err := tx.ExecContext(ctx, `INSERT INTO transfers (campaign, kind, shard, amount, currency, debit, credit, posted_at)
				VALUES (?, 'refund', ?, ?, ?, ?, ?, ?)`, campaign, k, amount, currency, from, to, now)
			return err
		}, func(name string, delta int64) error { return sqliteAddBalance(ctx, tx, name, currency, delta) })
		return err
	})
	if err != nil {
		return RefundResult{}, fmt.Errorf("refund %s: %w", campaign, err)
	}
	return rr, nil
}

// readSnapshot runs fn inside a deferred (read) transaction on the one connection, so
// that its queries see one snapshot without taking the write lock the settler needs.
func (l *sqliteLedger) readSnapshot(ctx context.Context, fn func(c *sql.Conn) error) error {
	c, err := l.db.Conn(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	if _, err := c.ExecContext(ctx, "BEGIN DEFERRED"); err != nil {
		return err
	}
	err = fn(c)
	if _, rerr := c.ExecContext(context.WithoutCancel(ctx), "ROLLBACK"); err == nil {
		err = rerr
	}
	return err
}

func (l *sqliteLedger) Stats(ctx context.Context, campaign string) (Stats, error) {
	var s Stats
	err := l.readSnapshot(ctx, func(c *sql.Conn) error {
		if err := c.QueryRowContext(ctx, `SELECT COUNT(*), COUNT(DISTINCT ticket), COALESCE(SUM(amount), 0)
			FROM postings WHERE campaign = ?`, campaign).Scan(&s.PostingRows, &s.Tickets, &s.SettledAmount); err != nil {
			return err
		}
		var cur string
		var n int64
		if err := c.QueryRowContext(ctx, transferSumQuery, campaign, "fund").Scan(&s.FundedAmount, &cur, &n); err != nil {
			return err
		}
		s.Funded = n > 0
		if err := c.QueryRowContext(ctx, transferSumQuery, campaign, "refund").Scan(&s.RefundedAmount, &cur, &n); err != nil {
			return err
		}
		s.Refunded = n > 0
		if err := c.QueryRowContext(ctx, `SELECT COUNT(*), COALESCE(SUM(amount), 0) FROM postings
			WHERE campaign = ? AND debit = ?`, campaign, SponsorAccount(campaign)).Scan(&s.LateTickets, &s.LateAmount); err != nil {
			return err
		}
		lo, hi := shardBudgetRange(campaign)
		if err := c.QueryRowContext(ctx, budgetBalanceQuery, BudgetAccount(campaign), lo, hi).Scan(&s.BudgetBalance); err != nil {
			return err
		}
		rows, err := c.QueryContext(ctx, shardStatsQuery, campaign, SponsorAccount(campaign), lo)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var sh ShardStats
			if err := rows.Scan(&sh.Shard, &sh.Funded, &sh.Refunded, &sh.Settled, &sh.Balance); err != nil {
				return err
			}
			s.Shards = append(s.Shards, sh)
		}
		return rows.Err()
	})
	if err != nil {
		return Stats{}, fmt.Errorf("stats %s: %w", campaign, err)
	}
	return s, nil
}

func (l *sqliteLedger) Audit(ctx context.Context) (Audit, error) {
	var a Audit
	err := l.readSnapshot(ctx, func(c *sql.Conn) error {
		if err := c.QueryRowContext(ctx, balanceSumQuery).Scan(&a.BalanceSum); err != nil {
			return err
		}
		return c.QueryRowContext(ctx, driftQuery).Scan(&a.DriftedAccounts)
	})
	if err != nil {
		return Audit{}, fmt.Errorf("audit: %w", err)
	}
	return a, nil
}

func (l *sqliteLedger) Scan(ctx context.Context, campaign string, fn func(uint64, int64, string) error) error {
	rows, err := l.db.QueryContext(ctx, `SELECT ticket, amount, currency FROM postings WHERE campaign = ? ORDER BY ticket, id`, campaign)
	if err != nil {
		return fmt.Errorf("scan %s: %w", campaign, err)
	}
	defer rows.Close()
	for rows.Next() {
		var t, a int64
		var cur string
		if err := rows.Scan(&t, &a, &cur); err != nil {
			return fmt.Errorf("scan %s: %w", campaign, err)
		}
		if err := fn(uint64(t), a, cur); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("scan %s: %w", campaign, err)
	}
	return nil
}

func (l *sqliteLedger) Close() error { return l.db.Close() }
