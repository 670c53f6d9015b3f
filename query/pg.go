package query

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
)

// pgReader reads a PostgreSQL ledger over a small pool of its own. (pgxpool would need
// github.com/jackc/puddle/v2, which go.mod lacks; this is all the query server needs.)
//
// The idle connections are a stack, as in pgxpool: the connection released last is
// handed out first, so that at a moderate rate one or two connections (one or two
// PostgreSQL backend processes, warm in cache) serve the requests while the others
// sleep, where a queue would run every backend in turn on cores the server, its
// clients and PostgreSQL share. Waiters for a connection are served in arrival order.
type pgReader struct {
	cfg    *pgx.ConnConfig
	max    int
	closed atomic.Bool

	mu      sync.Mutex
	idle    []*pgx.Conn      // stack: last released on top
	open    int              // open (or opening) connections, at most max
	waiters []chan *pgx.Conn // acquirers waiting for a released connection, oldest first
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
	r := &pgReader{cfg: cfg, max: conns}
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

// errDeadline is what a call whose deadline has already passed returns.
var errDeadline = errors.New("postgres ledger: deadline passed before the call")

// idleConn pops the idle connection released last, or returns nil.
func (r *pgReader) idleConn() *pgx.Conn {
	if r.closed.Load() {
		return nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.popIdle()
}

// popIdle pops the idle connection released last, or returns nil (r.mu held).
func (r *pgReader) popIdle() *pgx.Conn {
	n := len(r.idle)
	if n == 0 {
		return nil
	}
	c := r.idle[n-1]
	r.idle[n-1] = nil
	r.idle = r.idle[:n-1]
	return c
}

// acquire returns the idle connection released last, or dials one while fewer than
// the limit are open, or waits for one to be released, until ctx is done.
func (r *pgReader) acquire(ctx context.Context) (*pgx.Conn, error) {
	if r.closed.Load() {
		return nil, errors.New("postgres ledger reader is closed")
	}
	r.mu.Lock()
	if c := r.popIdle(); c != nil {
		r.mu.Unlock()
		return c, nil
	}
	if r.open < r.max {
		r.open++
		r.mu.Unlock()
		c, err := pgx.ConnectConfig(ctx, r.cfg)
		if err != nil {
			r.mu.Lock()
			r.open--
			r.wakeDialer()
			r.mu.Unlock()
			return nil, fmt.Errorf("cannot connect to postgres ledger: %w", err)
		}
		return c, nil
	}
	ch := make(chan *pgx.Conn, 1)
	r.waiters = append(r.waiters, ch)
	r.mu.Unlock()
	select {
	case c := <-ch:
		if c == nil {
			// A slot was freed (a connection broke): dial in its place.
			return r.acquire(ctx)
		}
		return c, nil
	case <-ctx.Done():
		r.mu.Lock()
		for i, w := range r.waiters {
			if w == ch {
				r.waiters = append(r.waiters[:i], r.waiters[i+1:]...)
				r.mu.Unlock()
				return nil, fmt.Errorf("no ledger connection free: %w", ctx.Err())
			}
		}
		r.mu.Unlock()
		// release handed us a connection (or a slot) as ctx ended: pass it on.
		if c := <-ch; c != nil {
			r.release(c)
		} else {
			r.mu.Lock()
			r.wakeDialer()
			r.mu.Unlock()
		}
		return nil, fmt.Errorf("no ledger connection free: %w", ctx.Err())
	}
}

// wakeDialer tells the oldest waiter, if any, that a slot is free (r.mu held).
func (r *pgReader) wakeDialer() {
	if len(r.waiters) > 0 && r.open < r.max {
		w := r.waiters[0]
		r.waiters = r.waiters[1:]
		w <- nil // buffered: never blocks; the waiter acquires again and dials
	}
}

// release returns c to the pool, handing it to the oldest waiter if there is one, or
// closes it when it broke (pgx closes a connection whose query was interrupted) or the
// reader is closed.
func (r *pgReader) release(c *pgx.Conn) {
	if c.IsClosed() || r.closed.Load() {
		r.discard(c)
		return
	}
	r.mu.Lock()
	if len(r.waiters) > 0 {
		w := r.waiters[0]
		r.waiters = r.waiters[1:]
		r.mu.Unlock()
		w <- c // buffered: never blocks
		return
	}
	r.idle = append(r.idle, c)
	r.mu.Unlock()
	if r.closed.Load() {
		// Close raced with the put: take our connections back out.
		r.drain()
	}
}

func (r *pgReader) discard(c *pgx.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	c.Close(ctx)
	cancel()
	r.mu.Lock()
	r.open--
	r.wakeDialer()
	r.mu.Unlock()
}

func (r *pgReader) drain() {
	r.mu.Lock()
	idle := r.idle
	r.idle = nil
	r.mu.Unlock()
	for _, c := range idle {
		r.discard(c)
	}
}

// pgCalls holds the scratch of Packets calls (see packetsCall).
var pgCalls = sync.Pool{New: func() any { return newPacketsCall[pgtype.DriverBytes]() }}

func (r *pgReader) Packets(deadline time.Time, uid uint64, campaign string, pos *Position, limit int, dst []Packet) ([]Packet, error) {
	if !time.Now().Before(deadline) {
		return dst, errDeadline
	}
	c := r.idleConn()
	if c == nil {
		// Dial or wait: a context for that slow path only.
		ctx, cancel := context.WithDeadline(context.Background(), deadline)
		var err error
		c, err = r.acquire(ctx)
		cancel()
		if err != nil {
			return dst, err
		}
	}
	defer r.release(c)
	// The statement is bounded by the socket's deadline (pgx closes a connection whose
	// read or write times out, and release then discards it), and the deadline is
	// lifted again before the connection is handed on.
	sock := c.PgConn().Conn()
	if err := sock.SetDeadline(deadline); err != nil {
		c.PgConn().Close(context.Background())
		return dst, fmt.Errorf("postgres ledger connection: %w", err)
	}
	defer sock.SetDeadline(time.Time{})
	call := pgCalls.Get().(*packetsCall[pgtype.DriverBytes])
	defer pgCalls.Put(call)
	defer call.clear()
	q, args := pgPacketsSQL, call.set(uid, campaign, pos, limit)
	if campaign != "" {
		q = pgPacketsCampaignSQL
	}
	rows, err := c.Query(context.Background(), q, args...)
	if err != nil {
		return dst, err
	}
	defer rows.Close()
	return scanPackets(rows, call, dst)
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
