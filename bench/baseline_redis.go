package bench

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strconv"
	"sync"
	"time"

	"shake/ticket"
)

// redisPushBatch is how many tickets one RPUSH carries while filling the list.
const redisPushBatch = 1000

// RedisDispenser is the Redis baseline: a precomputed list of tickets, one LPOP per shake.
type RedisDispenser struct {
	cli  *RedisClient
	key  []byte
	bufs sync.Pool
}

// NewRedisDispenser connects to addr, fills a fresh list with tickets 1..count and
// returns the dispenser. It fails (wrapping the dial error) when Redis is unreachable.
func NewRedisDispenser(ctx context.Context, addr string, count int, conns int) (*RedisDispenser, error) {
	cli := NewRedisClient(addr, conns, 2*time.Second)
	if _, err := cli.Do(nil, []byte("PING")); err != nil {
		cli.Close()
		return nil, err
	}
	var rnd [6]byte
	rand.Read(rnd[:])
	d := &RedisDispenser{cli: cli, key: []byte("shake:bench:" + hex.EncodeToString(rnd[:]))}
	d.bufs.New = func() any { b := make([]byte, 0, 64); return &b }
	_, _, mac, err := newBaselineKeys(make([]byte, ticket.KeySize))
	if err != nil {
		cli.Close()
		return nil, err
	}
	elem := make([]byte, storedTicketLen*redisPushBatch)
	for first := 1; first <= count; first += redisPushBatch {
		if err := ctx.Err(); err != nil {
			d.Close()
			return nil, err
		}
		n := min(redisPushBatch, count-first+1)
		args := make([][]byte, 0, n+2)
		args = append(args, []byte("RPUSH"), d.key)
		for i := 0; i < n; i++ {
			b := elem[i*storedTicketLen : (i+1)*storedTicketLen]
			encodeStored(b, mac, uint64(first+i))
			args = append(args, b)
		}
		if _, err := cli.Do(nil, args...); err != nil {
			d.Close()
			return nil, fmt.Errorf("redis: filling %s: %w", d.key, err)
		}
	}
	return d, nil
}

// take is one LPOP.
func (d *RedisDispenser) take(_ context.Context, _ uint64) (uint64, uint32, [ticket.MACSize]byte, error) {
	bp := d.bufs.Get().(*[]byte)
	defer d.bufs.Put(bp)
	rep, err := d.cli.Pipeline(1, *bp, func(w *bufio.Writer) { writeCommand(w, cmdLPOP, d.key) })
	if err != nil {
		return 0, 0, [ticket.MACSize]byte{}, err
	}
	if rep.Nil() {
		return 0, 0, [ticket.MACSize]byte{}, errNoTicket
	}
	return decodeStored(rep.Bulk)
}

var cmdLPOP = []byte("LPOP")

// Len returns the number of tickets left in the list.
func (d *RedisDispenser) Len() (int64, error) {
	rep, err := d.cli.Do(nil, []byte("LLEN"), d.key)
	return rep.Int, err
}

// Close deletes the list and closes the client.
func (d *RedisDispenser) Close() error {
	_, err := d.cli.Do(nil, []byte("DEL"), d.key)
	d.cli.Close()
	return err
}

// String names the list.
func (d *RedisDispenser) String() string {
	return "redis list " + string(d.key) + " " + strconv.Quote(d.cli.addr)
}
