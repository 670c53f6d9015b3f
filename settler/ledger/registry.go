package ledger

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// The registry statements (table campaigns, migration 0004), in PostgreSQL's spelling;
// SQLite takes the same text with ? placeholders (sqliteSQL). The insert fills a row at most
// once: a complete row is left alone (DO UPDATE ... WHERE matches nothing), a half
// one an older ledger left (generation or figures NULL) gets the missing half, and the
// caller then compares the whole row with what it registered.
const (
	registerSQL = `INSERT INTO campaigns (campaign, generation, manifest_digest, currency, budget, tickets, registered_at)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (campaign) DO UPDATE SET
    generation = COALESCE(campaigns.generation, excluded.generation),
    manifest_digest = COALESCE(campaigns.manifest_digest, excluded.manifest_digest),
    currency = COALESCE(campaigns.currency, excluded.currency),
    budget = COALESCE(campaigns.budget, excluded.budget),
    tickets = COALESCE(campaigns.tickets, excluded.tickets)
WHERE campaigns.generation IS NULL OR campaigns.currency IS NULL`
	registeredSQL = `SELECT generation, manifest_digest, currency, budget, tickets FROM campaigns WHERE campaign = $1`
)

var (
	sqliteRegisterSQL   = sqliteSQL(registerSQL)
	sqliteRegisteredSQL = sqliteSQL(registeredSQL)
)

// sqliteSQL turns PostgreSQL's $1..$9 placeholders, each used once and in order, into
// SQLite's ?.
func sqliteSQL(q string) string {
	for i := 9; i >= 1; i-- {
		q = strings.ReplaceAll(q, "$"+strconv.Itoa(i), "?")
	}
	return q
}

func registerArgs(info *CampaignInfo) []any {
	return []any{info.Campaign, info.Generation, info.ManifestDigest, info.Currency, info.Budget, int64(info.Tickets), time.Now().UnixMicro()}
}

// scanRegistered decodes a registeredSQL row. ok is false for a row without a
// generation (figures an older ledger recorded before any registration). What the
// ledger holds is checked, not trusted: the table's CHECKs may have been bypassed.
func scanRegistered(campaign string, scan func(dest ...any) error) (info CampaignInfo, ok bool, err error) {
	var gen, digest, cur sql.NullString
	var budget, tickets sql.NullInt64
	if err := scan(&gen, &digest, &cur, &budget, &tickets); err != nil {
		return CampaignInfo{}, false, err
	}
	if !gen.Valid {
		return CampaignInfo{}, false, nil
	}
	info = CampaignInfo{Campaign: campaign, Generation: gen.String, ManifestDigest: digest.String}
	if cur.Valid || budget.Valid || tickets.Valid {
		if !cur.Valid || !budget.Valid || !tickets.Valid || budget.Int64 < 0 || tickets.Int64 < 0 {
			return CampaignInfo{}, false, fmt.Errorf("%w: the registry row of %s has figures %v %v %v", ErrInvalid, campaign, cur, budget, tickets)
		}
		info.Currency, info.Budget, info.Tickets = cur.String, budget.Int64, uint64(tickets.Int64)
	}
	return info, true, nil
}

// confirmRegistered reads the row a registration left (scan) and compares it with
// what was registered: an existing row of another generation or manifest wins the
// upsert and is refused here (CompareInfo).
func confirmRegistered(info CampaignInfo, scan func(...any) error) error {
	have, ok, err := scanRegistered(info.Campaign, scan)
	if err == nil && !ok {
		err = fmt.Errorf("BUG: campaign %s has no generation after its registration", info.Campaign)
	}
	if err != nil {
		return err
	}
	return CompareInfo(have, info)
}

func (l *pgLedger) Register(ctx context.Context, info CampaignInfo) error {
	if err := checkInfo(&info); err != nil {
		return err
	}
	err := l.withConn(ctx, func(c *pgx.Conn) error {
		return pgx.BeginFunc(ctx, c, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, registerSQL, registerArgs(&info)...); err != nil {
				return err
			}
			return confirmRegistered(info, tx.QueryRow(ctx, registeredSQL, info.Campaign).Scan)
		})
	})
	if err != nil {
		return fmt.Errorf("register %s: %w", info.Campaign, err)
	}
	return nil
}

func (l *pgLedger) Registered(ctx context.Context, campaign string) (CampaignInfo, bool, error) {
	var info CampaignInfo
	var ok bool
	err := l.withConn(ctx, func(c *pgx.Conn) error {
		var err error
		info, ok, err = scanRegistered(campaign, c.QueryRow(ctx, registeredSQL, campaign).Scan)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		return err
	})
	if err != nil {
		return CampaignInfo{}, false, fmt.Errorf("registry %s: %w", campaign, err)
	}
	return info, ok, nil
}

func (l *sqliteLedger) Register(ctx context.Context, info CampaignInfo) error {
	if err := checkInfo(&info); err != nil {
		return err
	}
	err := l.inTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, sqliteRegisterSQL, registerArgs(&info)...); err != nil {
			return err
		}
		return confirmRegistered(info, tx.QueryRowContext(ctx, sqliteRegisteredSQL, info.Campaign).Scan)
	})
	if err != nil {
		return fmt.Errorf("register %s: %w", info.Campaign, err)
	}
	return nil
}

func (l *sqliteLedger) Registered(ctx context.Context, campaign string) (CampaignInfo, bool, error) {
	info, ok, err := scanRegistered(campaign, l.db.QueryRowContext(ctx, sqliteRegisteredSQL, campaign).Scan)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return CampaignInfo{}, false, nil
	case err != nil:
		return CampaignInfo{}, false, fmt.Errorf("registry %s: %w", campaign, err)
	}
	return info, ok, nil
}
