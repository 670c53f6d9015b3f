// Package control is the switches plumbing every server shares: the live value the hot
// path reads with one atomic load (Live), and the store behind /admin/switches that
// validates, persists, applies, logs and exports a new document (Store).
package control

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// Live holds the current compiled switches of a server, an immutable *T the hot path
// loads with one atomic load, and knows which requests are still running under an older
// one, so that Publish returns only once no request can be answered under the old value.
//
// It is read-copy-update with two epoch counters: a request enters the current epoch
// (Enter), loads the value, and leaves (Exit) once it has answered; Publish stores the
// new value, moves to the next epoch and waits until the old epoch has no request left.
// A request that entered the old epoch may have seen the old value; one that entered
// the new epoch cannot have, because it loaded the value after the store.
type Live[T any] struct {
	cur   atomic.Pointer[T]
	_     [56]byte
	epoch atomic.Uint64
	_     [56]byte
	n     [2]paddedCount
	mu    sync.Mutex // serialises Publish
}

type paddedCount struct {
	v atomic.Int64
	_ [56]byte // one cache line each: the two counters are written by every request
}

// Epoch identifies the epoch a request entered; pass it back to Exit.
type Epoch uint64

// NewLive returns a Live holding v.
func NewLive[T any](v *T) *Live[T] {
	l := &Live[T]{}
	l.cur.Store(v)
	return l
}

// Enter registers a request in the current epoch and returns the value it must act
// under. It does not allocate or lock.
func (l *Live[T]) Enter() (*T, Epoch) {
	for {
		e := l.epoch.Load()
		l.n[e&1].v.Add(1)
		// Re-check: a Publish that moved on between the load and the add may already
		// have found this counter empty; count in the new epoch instead.
		if l.epoch.Load() == e {
			return l.cur.Load(), Epoch(e & 1)
		}
		l.n[e&1].v.Add(-1)
	}
}

// Exit ends a request that Enter began.
func (l *Live[T]) Exit(e Epoch) { l.n[e].v.Add(-1) }

// Load returns the current value without registering a request (for readers off the
// request path: metrics, logs).
func (l *Live[T]) Load() *T { return l.cur.Load() }

// Publish makes v the value of every request that enters from now on, then waits until
// every request that entered before has left. On ctx's end it returns an error: v is
// in force for new requests, but some older ones may still answer under the old value.
func (l *Live[T]) Publish(ctx context.Context, v *T) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.cur.Store(v)
	old := l.epoch.Add(1) - 1
	c := &l.n[old&1].v
	wait := 10 * time.Microsecond
	for c.Load() != 0 {
		select {
		case <-ctx.Done():
			return fmt.Errorf("%d requests started under the old switches are still running: %w", c.Load(), ctx.Err())
		case <-time.After(wait):
		}
		wait = min(2*wait, 5*time.Millisecond)
	}
	return nil
}
