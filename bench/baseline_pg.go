package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"shake/ticket"
)

// PostgresDispenser is the PostgreSQL baseline: a table of precomputed tickets, one
// UPDATE ... WHERE id = (SELECT ... FOR UPDATE SKIP LOCKED LIMIT 1) per shake, the
// textbook way to hand rows out to concurrent takers. pgxpool needs jackc/puddle, which
// is not in go.mod, so a channel of connections serves as the pool.
type PostgresDispenser struct {
	conns chan *pgx.Conn
	all   []*pgx.Conn
	table string
	take1 string
}

// NewPostgresDispenser connects conns times to url, creates a fresh table holding
// tickets 1..count (with a partial index on the untaken ones, which is the fair way to
// run this query) and returns the dispenser.
func NewPostgresDispenser(ctx context.Context, url string, count int, conns int) (*PostgresDispenser, error) {
	var rnd [6]byte
	rand.Read(rnd[:])
	d := &PostgresDispenser{conns: make(chan *pgx.Conn, conns), table: "shake_bench_" + hex.EncodeToString(rnd[:])}
	d.take1 = `UPDATE ` + d.table + ` SET taken_by = $1 WHERE id = (SELECT id FROM ` + d.table +
		` WHERE taken_by IS NULL ORDER BY id FOR UPDATE SKIP LOCKED LIMIT 1) RETURNING id, amount, mac`
	for i := 0; i < conns; i++ {
		c, err := pgx.Connect(ctx, url)
		if err != nil {
			d.closeConns()
			return nil, fmt.Errorf("postgres: cannot connect: %w", err)
		}
		d.all = append(d.all, c)
		d.conns <- c
	}
	c := d.all[0]
	_, err := c.Exec(ctx, `CREATE TABLE `+d.table+` (id bigint PRIMARY KEY, amount integer NOT NULL,
		mac bytea NOT NULL, taken_by bigint)`)
	if err != nil {
		d.closeConns()
		return nil, fmt.Errorf("postgres: create table: %w", err)
	}
	_, _, mac, err := newBaselineKeys(make([]byte, ticket.KeySize))
	if err != nil {
		d.Close()
		return nil, err
	}
	// Rows are streamed to COPY one at a time, so memory stays flat whatever count is.
	next := 0
	b := make([]byte, storedTicketLen)
	row := make([]any, 3)
	src := pgx.CopyFromFunc(func() ([]any, error) {
		if next >= count {
			return nil, nil
		}
		next++
		id := uint64(next)
		encodeStored(b, mac, id)
		row[0], row[1], row[2] = int64(id), int32(baselineAmount(id)), b[12:]
		return row, nil
	})
	if _, err := c.CopyFrom(ctx, pgx.Identifier{d.table}, []string{"id", "amount", "mac"}, src); err != nil {
		d.Close()
		return nil, fmt.Errorf("postgres: fill table: %w", err)
	}
	if _, err := c.Exec(ctx, `CREATE INDEX ON `+d.table+` (id) WHERE taken_by IS NULL`); err != nil {
		d.Close()
		return nil, fmt.Errorf("postgres: index: %w", err)
	}
	if _, err := c.Exec(ctx, `ANALYZE `+d.table); err != nil {
		d.Close()
		return nil, fmt.Errorf("postgres: analyze: %w", err)
	}
	return d, nil
}

// take runs the UPDATE on a pooled connection.
func (d *PostgresDispenser) take(ctx context.Context, uid uint64) (uint64, uint32, [ticket.MACSize]byte, error) {
	var mac [ticket.MACSize]byte
	var c *pgx.Conn
	select {
	case c = <-d.conns:
	case <-ctx.Done():
		return 0, 0, mac, ctx.Err()
	}
	defer func() { d.conns <- c }()
	var id int64
	var amount int32
	var m []byte
	err := c.QueryRow(ctx, d.take1, int64(uid)).Scan(&id, &amount, &m)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, 0, mac, errNoTicket
	}
	if err != nil {
		return 0, 0, mac, err
	}
	if id <= 0 || len(m) != ticket.MACSize || uint32(amount) != baselineAmount(uint64(id)) {
		return 0, 0, mac, fmt.Errorf("postgres: row %d is corrupt", id)
	}
	copy(mac[:], m)
	return uint64(id), uint32(amount), mac, nil
}

// Taken counts the tickets handed out so far.
func (d *PostgresDispenser) Taken(ctx context.Context) (int64, error) {
	var n int64
	err := d.all[0].QueryRow(ctx, `SELECT count(*) FROM `+d.table+` WHERE taken_by IS NOT NULL`).Scan(&n)
	return n, err
}

// Close drops the table and closes every connection.
func (d *PostgresDispenser) Close() error {
	var err error
	if len(d.all) > 0 {
		_, err = d.all[0].Exec(context.Background(), `DROP TABLE IF EXISTS `+d.table)
	}
	d.closeConns()
	return err
}

func (d *PostgresDispenser) closeConns() {
	for _, c := range d.all {
		c.Close(context.Background())
	}
	d.all = nil
}
