package ledger

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/jackc/pgx/v5"
)

// CampaignFigures are a campaign's public figures from its manifest, recorded in the
// ledger (table campaign_registry) when the settler funds the campaign, so that readers
// of the ledger (the query server) need no manifest file they would have to trust.
type CampaignFigures struct {
	Campaign string
	Currency string
	Budget   int64
	Tickets  uint64
}

func checkFigures(c *CampaignFigures) error {
	if err := checkCampaignTransfer(c.Campaign, c.Currency, c.Budget); err != nil {
		return err
	}
	if c.Tickets > math.MaxInt64 {
		return fmt.Errorf("%w: campaign %s tickets %d", ErrInvalid, c.Campaign, c.Tickets)
	}
	return nil
}

func conflictingFigures(have, want CampaignFigures) error {
	if have == want {
		return nil
	}
	return fmt.Errorf("%w: campaign %s registered with %d %s in %d tickets, not %d %s in %d tickets",
		ErrConflict, want.Campaign, have.Budget, have.Currency, have.Tickets, want.Budget, want.Currency, want.Tickets)
}

const registerSQL = `INSERT INTO campaign_registry (campaign, currency, budget, tickets, registered_at)
	VALUES ($1, $2, $3, $4, $5) ON CONFLICT (campaign) DO NOTHING`

const registeredSQL = `SELECT currency, budget, tickets FROM campaign_registry WHERE campaign = $1`

// The same statements with SQLite's placeholders.
const (
	sqliteRegisterSQL = `INSERT INTO campaign_registry (campaign, currency, budget, tickets, registered_at)
	VALUES (?, ?, ?, ?, ?) ON CONFLICT (campaign) DO NOTHING`
	sqliteRegisteredSQL = `SELECT currency, budget, tickets FROM campaign_registry WHERE campaign = ?`
)

func (l *pgLedger) RecordFigures(ctx context.Context, c CampaignFigures) error {
	if err := checkFigures(&c); err != nil {
		return err
	}
	err := l.withConn(ctx, func(conn *pgx.Conn) error {
		return pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			if _, err := tx.Exec(ctx, registerSQL, c.Campaign, c.Currency, c.Budget, int64(c.Tickets), time.Now().UnixMicro()); err != nil {
				return err
			}
			have := CampaignFigures{Campaign: c.Campaign}
			var n int64
			if err := tx.QueryRow(ctx, registeredSQL, c.Campaign).Scan(&have.Currency, &have.Budget, &n); err != nil {
				return err
			}
			have.Tickets = uint64(n)
			return conflictingFigures(have, c)
		})
	})
	if err != nil {
		return fmt.Errorf("record figures of %s: %w", c.Campaign, err)
	}
	return nil
}

func (l *sqliteLedger) RecordFigures(ctx context.Context, c CampaignFigures) error {
	if err := checkFigures(&c); err != nil {
		return err
	}
	err := l.inTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, sqliteRegisterSQL, c.Campaign, c.Currency, c.Budget, int64(c.Tickets), time.Now().UnixMicro()); err != nil {
			return err
		}
		have := CampaignFigures{Campaign: c.Campaign}
		var n int64
		err := tx.QueryRowContext(ctx, sqliteRegisteredSQL, c.Campaign).Scan(&have.Currency, &have.Budget, &n)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("BUG: campaign %s not registered after its insert", c.Campaign)
		}
		if err != nil {
			return err
		}
		have.Tickets = uint64(n)
		return conflictingFigures(have, c)
	})
	if err != nil {
		return fmt.Errorf("record figures of %s: %w", c.Campaign, err)
	}
	return nil
}
