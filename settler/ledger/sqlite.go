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

// sqliteTransfer reads the campaign transfer of kind; ok is false when there is none.
func sqliteTransfer(ctx context.Context, tx *sql.Tx, campaign, kind string) (amount int64, currency string, ok bool, err error) {
	err = tx.QueryRowContext(ctx, `SELECT amount, currency FROM transfers WHERE campaign = ? AND kind = ?`, campaign, kind).Scan(&amount, &currency)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, "", false, nil
	}
	return amount, currency, err == nil, err
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
	deltas := make(map[string]int64)
	currencies := make(map[string]string)
	err := l.inTx(ctx, func(tx *sql.Tx) error {
		res = Result{}
		clear(deltas)
		refunded := map[string]bool{}
		for _, c := range campaignsOf(batch) {
			if _, _, ok, err := sqliteTransfer(ctx, tx, c, "fund"); err != nil {
				return err
			} else if !ok {
				return fmt.Errorf("%w: %s", ErrNotFunded, c)
			}
			if _, _, ok, err := sqliteTransfer(ctx, tx, c, "refund"); err != nil {
				return err
			} else if ok {
				refunded[c] = true
			}
		}
		var conflicts []string // posted uid of each conflict, in res.Conflicts order
		res.Conflicts = nil
		st, err := tx.PrepareContext(ctx, `INSERT INTO postings
			(campaign, ticket, shard, round, amount, currency, uid, debit, credit, opened_at, posted_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (campaign, ticket) DO NOTHING`)
		if err != nil {
			return err
		}
		defer st.Close()
		now := time.Now().UnixMicro()
		for i := range batch {
			p := &batch[i]
			debit, credit := debitAccount(p.Campaign, refunded), WalletAccount(p.Currency, p.UID)
			r, err := st.ExecContext(ctx, p.Campaign, int64(p.Ticket), p.Shard, p.Round, p.Amount, p.Currency,
				strconv.FormatUint(p.UID, 10), debit, credit, micros(p.OpenedAt), now)
			if err != nil {
				return err
			}
			n, err := r.RowsAffected()
			if err != nil {
				return err
			}
			if n == 0 {
				// Already posted: the same user's claim again, or another user's (a
				// ticket handed out twice), which is recorded and never paid.
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
				continue
			}
			res.Posted++
			res.Amount += p.Amount
			deltas[debit] -= p.Amount
			deltas[credit] += p.Amount
			currencies[debit], currencies[credit] = p.Currency, p.Currency
		}
		for j, i := range res.Conflicts {
			p := &batch[i]
			if _, err := tx.ExecContext(ctx, `INSERT INTO conflicts (campaign, ticket, uid, posted_uid, amount, opened_at, seen_at)
				VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`, p.Campaign, int64(p.Ticket),
				strconv.FormatUint(p.UID, 10), conflicts[j], p.Amount, micros(p.OpenedAt), now); err != nil {
				return err
			}
		}
		for name, d := range deltas {
			if err := sqliteAddBalance(ctx, tx, name, currencies[name], d); err != nil {
				return sqliteOverBudget(err)
			}
		}
		return nil
	})
	if err != nil {
		return Result{}, fmt.Errorf("post %d postings: %w", len(batch), err)
	}
	return res, nil
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
		var bal int64
		if err := tx.QueryRowContext(ctx, `SELECT balance FROM accounts WHERE name = ?`, BudgetAccount(campaign)).Scan(&bal); err != nil {
			return err
		}
		if bal < 0 {
			return fmt.Errorf("%w: budget account of %s is negative (%d)", ErrConflict, campaign, bal)
		}
		from, to := BudgetAccount(campaign), SponsorAccount(campaign)
		if _, err := tx.ExecContext(ctx, `INSERT INTO transfers (campaign, kind, amount, currency, debit, credit, posted_at)
			VALUES (?, 'refund', ?, ?, ?, ?, ?)`, campaign, bal, currency, from, to, time.Now().UnixMicro()); err != nil {
			return err
		}
		if err := sqliteAddBalance(ctx, tx, from, currency, -bal); err != nil {
			return err
		}
		rr = RefundResult{Amount: bal, Posted: true}
		return sqliteAddBalance(ctx, tx, to, currency, bal)
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
		for _, k := range []struct {
			kind   string
			amount *int64
			ok     *bool
		}{{"fund", &s.FundedAmount, &s.Funded}, {"refund", &s.RefundedAmount, &s.Refunded}} {
			err := c.QueryRowContext(ctx, `SELECT amount FROM transfers WHERE campaign = ? AND kind = ?`, campaign, k.kind).Scan(k.amount)
			switch {
			case errors.Is(err, sql.ErrNoRows):
			case err != nil:
				return err
			default:
				*k.ok = true
			}
		}
		if err := c.QueryRowContext(ctx, `SELECT COUNT(*), COALESCE(SUM(amount), 0) FROM postings
			WHERE campaign = ? AND debit = ?`, campaign, SponsorAccount(campaign)).Scan(&s.LateTickets, &s.LateAmount); err != nil {
			return err
		}
		return c.QueryRowContext(ctx, `SELECT COALESCE(SUM(balance), 0) FROM accounts WHERE name = ?`,
			BudgetAccount(campaign)).Scan(&s.BudgetBalance)
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
