package edge

import (
	"context"
	"log/slog"
	"math/bits"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"shake/ticket"
)

// Reservation bounds. What a kill -9 forfeits is what was reserved ahead of the
// cursor and not yet taken, so the reservation ahead is bounded twice:
//
//   - by the round: at most max(left/aheadShare, count/tailShare, 1) tickets ahead,
//     where left is what the round has left and count its size. A kill then forfeits
//     at most 1/64 of what is left (1/128 of the round at the tail), whatever the
//     rate, so even back-to-back kills of a small shard leave most of it. The floor
//     keeps the tail of a large round from paying an fsync every few tickets.
//   - by the rate: about reserveAhead of the take rate, measured over windows of at
//     least rateWindow (so a momentary burst moves it little), and at least twice the
//     takes that happen during one fdatasync, so that at high rates the reserver stays
//     ahead and requests do not wait on the disk.
//
// Every start begins small, at a quarter of the round's bound or minBlock, whichever
// is more, within the bound (see adaptBlock): the rate of the previous run is not
// known, and a restart loop must not forfeit a large block each time.
const (
	minBlock      = 32
	maxBlock      = 1 << 20
	aheadShare    = 64
	tailShare     = 128
	reserveAhead  = 100 * time.Millisecond
	rateWindow    = 20 * time.Millisecond
	reserveTick   = 20 * time.Millisecond
	preOpenWindow = time.Second // reserve for a round this long before it opens
)

// takeResult is the outcome of one attempt to take a ticket.
type takeResult uint8

const (
	takeWon    takeResult = iota
	takeMiss              // pool empty or pacing
	takeClosed            // no round open
	takeRetry             // the reservation could not keep up in time, or stopping
)

// round is one round's dispensing state.
type round struct {
	index    int
	first    uint64 // first ticket id of the round
	off      uint64 // index of that ticket in the shard's records
	count    uint64
	always   bool  // no time window (the campaign's single always-open round)
	start    int64 // unix nanoseconds, inclusive
	end      int64 // unix nanoseconds, exclusive (always-open: the end of issuing)
	burst    uint64
	cursor   *atomic.Uint64 // positions taken, in the mapped state region
	reserved atomic.Uint64  // durable reservation: positions below it may be taken
	lost     atomic.Uint64
	startAt  string // RFC 3339 start, for next_round_at
	// waiters park on the current channel; the reserver closes it and installs a new
	// one after each reservation.
	wake atomic.Pointer[chan struct{}]
}

// dispenser hands out positions of the shard's rounds and keeps the reservation ahead.
type dispenser struct {
	rounds     []*round
	pace       bool
	issueUntil int64 // unix nanoseconds; always-open campaigns stop issuing here
	state      *stateFile
	log        *slog.Logger
	waitMax    time.Duration
	clock      func() time.Time // the server's clock: has a waiter's round ended?

	block     atomic.Uint64 // current reservation block size
	kick      chan struct{}
	failed    atomic.Bool // the state file can no longer be written: stop issuing
	stopping  atomic.Bool
	nres      atomic.Uint64 // reservations written
	nwaits    atomic.Uint64 // takes that had to wait for a reservation
	nwaitFail atomic.Uint64 // takes that gave up waiting
	lastSync  atomic.Int64  // nanoseconds of the last fdatasync
	syncHist  func(time.Duration)

	mu sync.Mutex // serialises slot writes: reserver, shutdown
	// The reserver's rate estimate (reserver only): the round measured, when and at
	// which cursor the current window began.
	rateRound *round
	rateAt    int64
	rateTaken uint64
	seenWaits uint64 // nwaits when the rate was last measured
	ended     int    // rounds [0, ended) have ended and had their waiters woken
}

func newDispenser(h *ticket.ShardHeader, st *stateFile, pace bool, waitMax time.Duration, clock func() time.Time, log *slog.Logger) *dispenser {
	d := &dispenser{
		pace: pace, state: st, log: log, waitMax: waitMax, clock: clock,
		kick: make(chan struct{}, 1),
	}
	d.block.Store(minBlock)
	if len(h.Rounds) == 1 && h.Rounds[0].AlwaysOpen() {
		d.issueUntil = h.CreatedAt.Add(time.Duration(h.TTLSeconds) * time.Second).UnixNano()
	} else {
		d.issueUntil = h.Rounds[len(h.Rounds)-1].End.UnixNano()
	}
	for i, rr := range h.RoundRanges {
		w := h.Rounds[i]
		r := &round{
			index: i, first: rr.FirstTicket, off: rr.FirstTicket - h.FirstTicket, count: rr.Count,
			always: w.AlwaysOpen(), cursor: &st.cursors[i],
			// A small burst allowance lets the first users of a paced round in without
			// waiting for the first full ticket interval: 0.1% of the round, 1..1000.
			burst: min(max(rr.Count/1000, 1), 1000),
		}
		if !r.always {
			r.start, r.end = w.Start.UnixNano(), w.End.UnixNano()
			r.startAt = w.Start.UTC().Format(time.RFC3339)
		} else {
			// The always-open round has no window, but issuing ends: that is when a
			// take waiting for its reservation must give up (see take).
			r.end = d.issueUntil
		}
		r.reserved.Store(st.snap.Rounds[i].Reserved)
		r.lost.Store(st.snap.Rounds[i].Lost)
		ch := make(chan struct{})
		r.wake.Store(&ch)
		d.rounds = append(d.rounds, r)
	}
	return d
}

// roundAt returns the round open at now, or nil and the next round to open (nil when
// none will).
func (d *dispenser) roundAt(now int64) (open, next *round) {
	if now >= d.issueUntil {
		return nil, nil
	}
	if d.rounds[0].always {
		return d.rounds[0], nil
	}
	// Rounds are sorted and do not overlap: find the first that ends after now.
	i := sort.Search(len(d.rounds), func(i int) bool { return d.rounds[i].end > now })
	if i == len(d.rounds) {
		return nil, nil
	}
	if r := d.rounds[i]; now >= r.start {
		return r, nil
	}
	return nil, d.rounds[i]
}

// released is how many positions of r pacing allows at now: count*(now-start)/(end-start)
// plus the burst allowance, capped at count. Always-open rounds have no window to
// spread over and are not paced.
func (r *round) released(now int64) uint64 {
	if r.always || now >= r.end {
		return r.count
	}
	if now <= r.start {
		return min(r.burst, r.count)
	}
	hi, lo := bits.Mul64(r.count, uint64(now-r.start))
	q, _ := bits.Div64(hi, lo, uint64(r.end-r.start)) // hi < divisor since now-start < end-start
	return min(q+r.burst, r.count)
}

// left is how many tickets of r can still be handed out (reserved-but-untaken ones
// included: on a clean stop they go back to the pool).
func (r *round) left() uint64 {
	c := r.cursor.Load()
	if c >= r.count {
		return 0
	}
	return r.count - c
}

// available reports whether a take would find a ticket right now, without taking it.
// The handler asks before it touches the per-user table, so the users that only meet
// an empty or paced pool do not fill the table.
func (d *dispenser) available(r *round, now int64) bool {
	c := r.cursor.Load()
	if c >= r.count {
		return false
	}
	return !d.pace || c < r.released(now)
}

// take claims the next position of r, or says why not. It never takes a position that
// is not covered by a durable reservation: when the cursor catches up with the
// reservation it waits (bounded by waitMax) for the reserver.
func (d *dispenser) take(r *round, now int64) (uint64, takeResult) {
	var deadline *time.Timer
	defer func() {
		if deadline != nil {
			deadline.Stop()
		}
	}()
	for {
		if d.stopping.Load() {
			return 0, takeRetry
		}
		c := r.cursor.Load()
		if c >= r.count {
			return 0, takeMiss
		}
		if d.pace && c >= r.released(now) {
			return 0, takeMiss
		}
		rsv := r.reserved.Load()
		if c >= rsv {
			if d.failed.Load() {
				return 0, takeRetry
			}
			if d.clock().UnixNano() >= r.end {
				// The request came in time, but the round has ended since: the
				// reserver has moved on and will not reserve this round again. The
				// answer is what a request after the end would get for this round,
				// no ticket, not a 429 after waiting out waitMax.
				return 0, takeMiss
			}
			// The burst outran the reservation: park until the reserver has synced
			// the next block. This is the only place a request waits on the disk.
			wake := r.wake.Load()
			if r.reserved.Load() > c {
				continue
			}
			d.nudge()
			if deadline == nil {
				d.nwaits.Add(1)
				deadline = time.NewTimer(d.waitMax)
			}
			select {
			case <-*wake:
				continue
			case <-deadline.C:
				d.nwaitFail.Add(1)
				return 0, takeRetry
			}
		}
		if rsv-c <= refillAt(d.block.Load()) {
			d.nudge()
		}
		if r.cursor.CompareAndSwap(c, c+1) {
			return c, takeWon
		}
	}
}

// nudge asks the reserver to look now; it never blocks.
func (d *dispenser) nudge() {
	select {
	case d.kick <- struct{}{}:
	default:
	}
}

// run is the reserver: it keeps the open round's reservation ahead of its cursor,
// off the request path, until ctx is cancelled.
func (d *dispenser) run(ctx context.Context, now func() time.Time) {
	t := time.NewTicker(reserveTick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-d.kick:
		case <-t.C:
		}
		if d.failed.Load() {
			continue
		}
		n := now().UnixNano()
		if err := d.reserveAhead(n); err != nil {
			d.failed.Store(true)
			d.log.Error("cannot write the state file: no more tickets will be issued", "err", err)
			d.wakeAll()
		}
		d.wakeEnded(n)
	}
}

// wakeEnded releases the takes still parked on rounds that have ended, once per
// round: they answer miss (see take) instead of waiting for a reservation that the
// reserver, now on a later round, will never make.
func (d *dispenser) wakeEnded(now int64) {
	for d.ended < len(d.rounds) && d.rounds[d.ended].end <= now {
		d.wake(d.rounds[d.ended])
		d.ended++
	}
}

// reserveAhead extends the reservation of the round open at now when its headroom has
// fallen to refillAt of a block, and gives the next round its first block once it
// opens within preOpenWindow, also while the current one is still open (back-to-back
// rounds), so that the first requests of a round do not all wait on the disk.
func (d *dispenser) reserveAhead(now int64) error {
	r, next := d.roundAt(now)
	if r != nil && !r.always && r.index+1 < len(d.rounds) {
		next = d.rounds[r.index+1]
	}
	if r != nil {
		if err := d.extend(r, d.adaptBlock(r, now)); err != nil {
			return err
		}
	}
	if next != nil && next.start-now <= int64(preOpenWindow) && next.reserved.Load() == 0 {
		return d.extend(next, d.block.Load())
	}
	return nil
}

// extend reserves up to block positions ahead of r's cursor, within r's bound, when
// what is left ahead has fallen to refillAt of that.
func (d *dispenser) extend(r *round, block uint64) error {
	c := r.cursor.Load()
	if c >= r.count {
		return nil
	}
	block = min(block, r.aheadLimit(c))
	rsv := r.reserved.Load()
	if rsv >= r.count || (rsv > c && rsv-c > refillAt(block)) {
		return nil
	}
	return d.reserve(r, min(c+block, r.count))
}

// refillAt is how little may be left ahead of the cursor before the reservation is
// extended back to a whole block: half of the block is used up between two fsyncs,
// and the other half covers the next one. (Refilling at three quarters was tried: it
// doubled the fsyncs and, on a busy disk, made more requests wait, not fewer.)
func refillAt(block uint64) uint64 { return block / 2 }

// aheadLimit is the most positions of r that may be reserved ahead of cursor c: what a
// kill -9 at that moment would forfeit (see the constants).
func (r *round) aheadLimit(c uint64) uint64 {
	left := r.count - min(c, r.count)
	return min(max(left/aheadShare, r.count/tailShare, 1), maxBlock)
}

// saturated reports whether requests have waited for a reservation since the last
// look and the current window has lasted at least 1 ms: the block, not the demand,
// then limits the rate, so the rate is measured at once instead of after a whole
// rateWindow (an edge that idled before its round starts at minBlock and would
// otherwise put an fsync on the path of every few requests for that long). It is
// still the observed rate that sizes the block, and the round's bound caps it.
func (d *dispenser) saturated(now int64) bool {
	w := d.nwaits.Load()
	if w == d.seenWaits || now-d.rateAt < int64(time.Millisecond) {
		return false
	}
	d.seenWaits = w
	return true
}

// adaptBlock sizes the block to about reserveAhead of the take rate, and at least
// twice the takes that happen during one fsync, at least minBlock, and never above
// r's ahead limit. The rate is measured over windows of at least rateWindow, and the block moves only
// halfway towards its target per window: a momentary burst moves it little, one
// quiet window does not collapse it, and a sustained rate reaches it in a few windows.
func (d *dispenser) adaptBlock(r *round, now int64) uint64 {
	c := r.cursor.Load()
	block := d.block.Load()
	switch {
	case d.rateRound == nil:
		// The first look of this run: no rate is known yet. Start at a quarter of the
		// bound, so that a kill right after a restart forfeits little, yet a fast
		// shard is not throttled to one fsync per few tickets until the first window.
		block = max(block, r.aheadLimit(c)/4)
		d.rateRound, d.rateAt, d.rateTaken = r, now, c
	case d.rateRound != r || c < d.rateTaken || now < d.rateAt:
		// A new round (or a clock step back): start a new window, keep the block.
		d.rateRound, d.rateAt, d.rateTaken = r, now, c
	case now-d.rateAt >= int64(rateWindow) || d.saturated(now):
		perSec := float64(c-d.rateTaken) / (float64(now-d.rateAt) / 1e9)
		d.rateAt, d.rateTaken = now, c
		want := perSec * reserveAhead.Seconds()
		if s := time.Duration(d.lastSync.Load()); s > 0 {
			want = max(want, 2*perSec*s.Seconds())
		}
		block = uint64((float64(block) + want) / 2)
	}
	block = min(max(block, minBlock), r.aheadLimit(c))
	d.block.Store(block)
	return block
}

// reserve durably raises r's reservation to want, then releases the waiters.
func (d *dispenser) reserve(r *round, want uint64) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.stopping.Load() || want <= r.reserved.Load() {
		return nil
	}
	s := d.state.snap
	s.Seq++
	s.Clean = false
	s.Rounds = append([]roundRecord(nil), s.Rounds...)
	for i, rr := range d.rounds {
		s.Rounds[i].Hint = min(rr.cursor.Load(), s.Rounds[i].Reserved)
	}
	s.Rounds[r.index].Reserved = want
	t0 := time.Now()
	if err := d.state.writeSlot(&s); err != nil {
		return err
	}
	el := time.Since(t0)
	d.lastSync.Store(int64(el))
	if d.syncHist != nil {
		d.syncHist(el)
	}
	r.reserved.Store(want)
	d.nres.Add(1)
	d.wake(r)
	return nil
}

// wake releases every take parked on r.
func (d *dispenser) wake(r *round) {
	ch := make(chan struct{})
	old := r.wake.Swap(&ch)
	close(*old)
}

func (d *dispenser) wakeAll() {
	for _, r := range d.rounds {
		d.wake(r)
	}
}

// finish records the exact position of every round as its reservation, so that a
// clean stop loses nothing, and fsyncs. No take may run concurrently (the server has
// stopped them); the reserver must have returned.
func (d *dispenser) finish() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.stopping.Store(true)
	s := d.state.snap
	s.Seq++
	s.Clean = true
	s.Rounds = append([]roundRecord(nil), s.Rounds...)
	for i, r := range d.rounds {
		c := min(r.cursor.Load(), s.Rounds[i].Reserved)
		s.Rounds[i].Reserved = max(c, s.Rounds[i].Lost)
		s.Rounds[i].Hint = s.Rounds[i].Reserved
	}
	return d.state.writeSlot(&s)
}

// totals returns issued, lost and left over every round.
func (d *dispenser) totals() (issued, lost, left uint64) {
	for _, r := range d.rounds {
		c := min(r.cursor.Load(), r.count)
		l := r.lost.Load()
		issued += c - l
		lost += l
		left += r.count - c
	}
	return
}
