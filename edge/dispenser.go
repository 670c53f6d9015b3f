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

// Reservation block bounds. The block is sized to about reserveAhead of the observed
// take rate, so a reservation (one fdatasync) happens a few times per second at most
// and a crash loses at most about that much of the pool.
const (
	minBlock      = 64
	maxBlock      = 1 << 20
	initialBlock  = 1024
	reserveAhead  = 100 * time.Millisecond
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
	end      int64 // unix nanoseconds, exclusive
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

	block     atomic.Uint64 // current reservation block size
	kick      chan struct{}
	failed    atomic.Bool // the state file can no longer be written: stop issuing
	stopping  atomic.Bool
	nres      atomic.Uint64 // reservations written
	nwaits    atomic.Uint64 // takes that had to wait for a reservation
	nwaitFail atomic.Uint64 // takes that gave up waiting
	lastSync  atomic.Int64  // nanoseconds of the last fdatasync
	syncHist  func(time.Duration)

	mu        sync.Mutex // serialises slot writes: reserver, shutdown
	seenWaits uint64     // nwaits at the last adaptBlock (reserver only)
	rate      [2]struct {
		at    int64
		taken uint64
	}
}

func newDispenser(h *ticket.ShardHeader, st *stateFile, pace bool, waitMax time.Duration, log *slog.Logger) *dispenser {
	d := &dispenser{
		pace: pace, state: st, log: log, waitMax: waitMax,
		kick: make(chan struct{}, 1),
	}
	d.block.Store(initialBlock)
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
		if rsv-c <= d.block.Load()/2 {
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
		if err := d.reserveAhead(now().UnixNano()); err != nil {
			d.failed.Store(true)
			d.log.Error("cannot write the state file: no more tickets will be issued", "err", err)
			d.wakeAll()
		}
	}
}

// reserveAhead extends the reservation of the round open at now (or about to open)
// when its headroom has fallen below half a block.
func (d *dispenser) reserveAhead(now int64) error {
	r, next := d.roundAt(now)
	if r == nil {
		if next == nil || next.start-now > int64(preOpenWindow) {
			return nil
		}
		r = next
	}
	block := d.adaptBlock(r, now)
	c := r.cursor.Load()
	rsv := r.reserved.Load()
	if rsv >= r.count || (rsv > c && rsv-c > block/2) {
		return nil
	}
	want := min(max(rsv, c)+block, r.count)
	return d.reserve(r, want)
}

// adaptBlock sizes the block to about reserveAhead of the recent take rate, and at
// least the takes that happened during the last fsync, within [minBlock, maxBlock].
func (d *dispenser) adaptBlock(r *round, now int64) uint64 {
	c := r.cursor.Load()
	prev := d.rate[1]
	d.rate[1] = d.rate[0]
	d.rate[0].at, d.rate[0].taken = now, c
	block := d.block.Load()
	if prev.at != 0 && now > prev.at && c >= prev.taken {
		perSec := float64(c-prev.taken) / (float64(now-prev.at) / 1e9)
		want := perSec * reserveAhead.Seconds()
		if s := time.Duration(d.lastSync.Load()); s > 0 {
			want = max(want, 2*perSec*s.Seconds())
		}
		// Move halfway towards the target so one quiet tick does not collapse the block
		// just before the next burst.
		block = uint64((float64(block) + want) / 2)
	}
	if w := d.nwaits.Load(); w != d.seenWaits {
		// A burst outran the reservation since the last look: double the block.
		d.seenWaits = w
		block *= 2
	}
	block = min(max(block, minBlock), maxBlock)
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
