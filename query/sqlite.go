package query

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"os"
	"sync"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" database/sql driver
)

// SQLite's spelling of the statements in reader.go (?NNN may be repeated).
const (
	sqlitePacketsSQL = `SELECT posted_at, campaign, ticket, amount, currency FROM postings
WHERE uid = ?1 AND (posted_at, campaign, ticket) < (?2, ?3, ?4)
ORDER BY posted_at DESC, campaign DESC, ticket DESC LIMIT ?5`
	sqlitePacketsCampaignSQL = `SELECT posted_at, campaign, ticket, amount, currency FROM postings
WHERE uid = ?1 AND (posted_at, campaign, ticket) < (?2, ?3, ?4) AND campaign = ?6
ORDER BY posted_at DESC, campaign DESC, ticket DESC LIMIT ?5`
	sqliteCampaignSQL = `WITH r AS (SELECT currency, budget, tickets FROM campaigns WHERE campaign = ?1 AND currency IS NOT NULL),
s AS (SELECT COUNT(*) AS n, COALESCE(SUM(amount), 0) AS total FROM postings WHERE campaign = ?1),
t AS (SELECT uid, amount, ticket FROM postings WHERE campaign = ?1 ORDER BY amount DESC, ticket LIMIT 10)
SELECT r.currency, r.budget, r.tickets, s.n, s.total, t.uid, t.amount
FROM r CROSS JOIN s LEFT JOIN t ON 1 ORDER BY t.amount DESC, t.ticket`
)

// sqliteReader reads the embedded ledger file the settler writes. WAL mode (set by the
// settler, and kept in the file) lets it read a committed snapshot per statement while
// the settler writes; query_only makes any write an error.
type sqliteReader struct {
	db *sql.DB
	st [3]*sql.Stmt // packets, packets of a campaign, campaign
}

func openSQLite(ctx context.Context, path string, conns int) (*sqliteReader, error) {
	// Never create the file: an empty ledger would answer every question wrongly.
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("sqlite ledger %s: %w", path, err)
	}
	q := url.Values{}
	q.Add("_pragma", "busy_timeout(5000)")
	q.Add("_pragma", "query_only(1)")
	db, err := sql.Open("sqlite", "file:"+path+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("cannot open sqlite ledger %s: %w", path, err)
	}
	db.SetMaxOpenConns(conns)
	db.SetMaxIdleConns(conns)
	r := &sqliteReader{db: db}
	var a, b int64
	if err := db.QueryRowContext(ctx, schemaProbeSQL).Scan(&a, &b); err != nil {
		db.Close()
		return nil, fmt.Errorf("sqlite ledger %s: %w: %v", path, ErrSchema, err)
	}
	for i, s := range []string{sqlitePacketsSQL, sqlitePacketsCampaignSQL, sqliteCampaignSQL} {
		if r.st[i], err = db.PrepareContext(ctx, s); err != nil {
			db.Close()
			return nil, fmt.Errorf("sqlite ledger %s: %w", path, err)
		}
	}
	return r, nil
}

// sqliteCalls holds the scratch of Packets calls (see packetsCall).
var sqliteCalls = sync.Pool{New: func() any { return newPacketsCall[sql.RawBytes]() }}

func (r *sqliteReader) Packets(deadline time.Time, uid uint64, campaign string, pos *Position, limit int, dst []Packet) ([]Packet, error) {
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	call := sqliteCalls.Get().(*packetsCall[sql.RawBytes])
	defer sqliteCalls.Put(call)
	defer call.clear()
	st, args := r.st[0], call.set(uid, campaign, pos, limit)
	if campaign != "" {
		st = r.st[1]
	}
	rows, err := st.QueryContext(ctx, args...)
	if err != nil {
		return dst, err
	}
	defer rows.Close()
	return scanPackets(rows, call, dst)
}

func (r *sqliteReader) Campaign(ctx context.Context, id string) (CampaignInfo, bool, error) {
	info := CampaignInfo{Campaign: id}
	rows, err := r.st[2].QueryContext(ctx, id)
	if err != nil {
		return info, false, err
	}
	defer rows.Close()
	found, err := scanCampaign(rows, &info)
	return info, found, err
}

func (r *sqliteReader) Ping(ctx context.Context) error { return r.db.PingContext(ctx) }

func (r *sqliteReader) Close() error {
	for _, s := range r.st {
		if s != nil {
			s.Close()
		}
	}
	return r.db.Close()
}
