package query

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// pgReader reads a PostgreSQL ledger over a small pool of its own: a channel of idle
// connections and a semaphore bounding the open ones. (pgxpool would need
// github.com/jackc/puddle/v2, which go.mod lacks; this is all the query server needs.)
type pgReader struct {
	cfg    *pgx.ConnConfig
	idle   chan *pgx.Conn
	slots  chan struct{} // one token per open (or opening) connection
	closed atomic.Bool
}

func openPG(ctx context.Context, url string, conns int) (*pgReader, error) {
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadURL, err)
	}
	// Whatever role the URL names, this server never writes: every transaction is
	// read-only, and no statement may hold a connection for long.
	cfg.RuntimeParams["default_transaction_read_only"] = "on"
	cfg.RuntimeParams["statement_timeout"] = "2000"
	cfg.RuntimeParams["application_name"] = "shake-query"
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = 5 * time.Second
	}
	r := &pgReader{cfg: cfg, idle: make(chan *pgx.Conn, conns), slots: make(chan struct{}, conns)}
	// Connect and probe the schema now, so that a bad URL, a wrong password or an
	// unmigrated ledger is reported at start.
	c, err := r.acquire(ctx)
	if err != nil {
		return nil, err
	}
	var a, b int64
	err = c.QueryRow(ctx, schemaProbeSQL).Scan(&a, &b)
	r.release(c)
	if err != nil {
		r.Close()
		var pe *pgconn.PgError
		if errors.As(err, &pe) && (pe.Code == "42P01" || pe.Code == "42703") {
			return nil, fmt.Errorf("%w: %v", ErrSchema, err)
		}
		return nil, fmt.Errorf("postgres ledger: %w", err)
	}
	return r, nil
}

// acquire returns an idle connection, or dials one while fewer than the limit are
// open, or waits for one to come back, until ctx is done.
func (r *pgReader) acquire(ctx context.Context) (*pgx.Conn, error) {
	if r.closed.Load() {
		return nil, errors.New("postgres ledger reader is closed")
	}
	select {
	case c := <-r.idle:
		return c, nil
	default:
	}
	select {
	case c := <-r.idle:
		return c, nil
	case r.slots <- struct{}{}:
		c, err := pgx.ConnectConfig(ctx, r.cfg)
		if err != nil {
			<-r.slots
			return nil, fmt.Errorf("cannot connect to postgres ledger: %w", err)
		}
		return c, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("no ledger connection free: %w", ctx.Err())
	}
}

// release returns c to the pool, or closes it when it broke (pgx closes a connection
// whose query was interrupted) or the reader is closed.
func (r *pgReader) release(c *pgx.Conn) {
	if c.IsClosed() || r.closed.Load() {
		r.discard(c)
		return
	}
	r.idle <- c // never blocks: at most cap(slots) connections exist
	if r.closed.Load() {
		// Close raced with the put: take our connections back out.
		r.drain()
	}
}

func (r *pgReader) discard(c *pgx.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	c.Close(ctx)
	cancel()
	<-r.slots
}

func (r *pgReader) drain() {
	for {
		select {
		case c := <-r.idle:
			r.discard(c)
		default:
			return
		}
	}
}

func (r *pgReader) Packets(ctx context.Context, uid uint64, campaign string, pos *Position, limit int, dst []Packet) ([]Packet, error) {
	if pos == nil {
		pos = &firstPosition
	}
	c, err := r.acquire(ctx)
	if err != nil {
		return dst, err
	}
	defer r.release(c)
	args := [6]any{strconv.FormatUint(uid, 10), pos.SettledAt, pos.Campaign, int64(pos.Ticket), limit, campaign}
	q, n := pgPacketsSQL, 5
	if campaign != "" {
		q, n = pgPacketsCampaignSQL, 6
	}
	rows, err := c.Query(ctx, q, args[:n]...)
	if err != nil {
		return dst, err
	}
	defer rows.Close()
	return scanPackets(rows, dst)
}

func (r *pgReader) Campaign(ctx context.Context, id string) (CampaignInfo, bool, error) {
	info := CampaignInfo{Campaign: id}
	c, err := r.acquire(ctx)
	if err != nil {
		return info, false, err
	}
	defer r.release(c)
	rows, err := c.Query(ctx, pgCampaignSQL, id)
	if err != nil {
		return info, false, err
	}
	defer rows.Close()
	found, err := scanCampaign(rows, &info)
	return info, found, err
}

func (r *pgReader) Ping(ctx context.Context) error {
	c, err := r.acquire(ctx)
	if err != nil {
		return err
	}
	defer r.release(c)
	return c.Ping(ctx)
}

func (r *pgReader) Close() error {
	r.closed.Store(true)
	r.drain()
	return nil
}
