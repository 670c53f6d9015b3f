package edge

import (
	"context"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"shake/ticket"
)

func newTestDispenser(t *testing.T, count uint64, rounds int, pace bool) (*dispenser, *stateFile) {
	t.Helper()
	h := testHeader(count, rounds)
	// The clock stays at the first round's start: no round ends under a test.
	return dispenserOn(t, h, pace, time.Second, func() time.Time { return h.Rounds[0].Start })
}

// dispenserOn makes a dispenser for h on a new state file, closed at cleanup.
func dispenserOn(t *testing.T, h *ticket.ShardHeader, pace bool, waitMax time.Duration, clock func() time.Time) (*dispenser, *stateFile) {
	t.Helper()
	sf, err := openState(filepath.Join(t.TempDir(), "s.state"), h, true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sf.close() })
	return newDispenser(h, sf, pace, waitMax, clock, slog.New(slog.DiscardHandler)), sf
}

func TestRoundAt(t *testing.T) {
	d, _ := newTestDispenser(t, 300, 3, false)
	r0 := d.rounds[0]
	cases := []struct {
		name      string
		at        int64
		open, nxt int // -1 none
	}{
		{"before first", r0.start - 1, -1, 0},
		{"first instant", r0.start, 0, -1},
		{"last instant", r0.end - 1, 0, -1},
		{"between", r0.end, -1, 1},
		{"in third", d.rounds[2].start + 5, 2, -1},
		{"after last", d.rounds[2].end, -1, -1},
	}
	for _, c := range cases {
		o, n := d.roundAt(c.at)
		gotO, gotN := -1, -1
		if o != nil {
			gotO = o.index
		}
		if n != nil {
			gotN = n.index
		}
		if gotO != c.open || gotN != c.nxt {
			t.Errorf("%s: open %d next %d, want %d %d", c.name, gotO, gotN, c.open, c.nxt)
		}
	}
}

func TestPacingReleasesOverTheWindow(t *testing.T) {
	d, _ := newTestDispenser(t, 10000, 1, true)
	r := d.rounds[0]
	win := r.end - r.start
	if got := r.released(r.start); got != r.burst {
		t.Fatalf("at start %d, want burst %d", got, r.burst)
	}
	if got := r.released(r.start + win/2); got != 5000+r.burst {
		t.Fatalf("half way %d", got)
	}
	if got := r.released(r.end); got != 10000 {
		t.Fatalf("at end %d", got)
	}
	// Drive takes at a quarter of the window: only a quarter (+burst) comes out.
	if err := d.reserve(r, r.count); err != nil {
		t.Fatal(err)
	}
	now := r.start + win/4
	won := 0
	for i := 0; i < 10000; i++ {
		if _, res := d.take(r, now); res == takeWon {
			won++
		}
	}
	if want := int(2500 + r.burst); won != want {
		t.Fatalf("paced takes at 1/4: %d, want %d", won, want)
	}
}

func TestTakeNeverBeyondReservation(t *testing.T) {
	d, sf := newTestDispenser(t, 5000, 1, false)
	d.waitMax = 50 * time.Millisecond
	r := d.rounds[0]
	now := r.start
	// No reserver running and nothing reserved: a take waits, then gives up.
	if _, res := d.take(r, now); res != takeRetry {
		t.Fatalf("take without reservation: %v", res)
	}
	if d.nwaitFail.Load() != 1 {
		t.Fatal("wait timeout not counted")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); d.run(ctx, func() time.Time { return time.Unix(0, now) }) }()
	d.waitMax = 5 * time.Second
	// 16 goroutines race for every ticket; each position is taken exactly once and
	// never above the durable reservation.
	var mu sync.Mutex
	seen := make(map[uint64]bool)
	var wg sync.WaitGroup
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				pos, res := d.take(r, now)
				if res == takeMiss {
					return
				}
				if res != takeWon {
					t.Errorf("take: %v", res)
					return
				}
				if rsv := r.reserved.Load(); pos >= rsv {
					t.Errorf("position %d taken above reservation %d", pos, rsv)
				}
				mu.Lock()
				if seen[pos] {
					t.Errorf("position %d taken twice", pos)
				}
				seen[pos] = true
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	cancel()
	<-done
	if len(seen) != 5000 {
		t.Fatalf("took %d of 5000", len(seen))
	}
	if d.nres.Load() == 0 || sf.snap.Rounds[0].Reserved != 5000 {
		t.Fatalf("reservations %d, reserved %d", d.nres.Load(), sf.snap.Rounds[0].Reserved)
	}
	if err := d.finish(); err != nil {
		t.Fatal(err)
	}
	if issued, lost, left := d.totals(); issued != 5000 || lost != 0 || left != 0 {
		t.Fatalf("totals %d %d %d", issued, lost, left)
	}
}

func TestFinishReturnsUntakenReservation(t *testing.T) {
	d, sf := newTestDispenser(t, 1000, 1, false)
	r := d.rounds[0]
	if err := d.reserve(r, 600); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 100; i++ {
		if _, res := d.take(r, r.start); res != takeWon {
			t.Fatal(res)
		}
	}
	if err := d.finish(); err != nil {
		t.Fatal(err)
	}
	if got := sf.snap.Rounds[0]; got.Reserved != 100 || got.Lost != 0 || !sf.snap.Clean {
		t.Fatalf("after finish: %+v", got)
	}
	if _, res := d.take(r, r.start); res != takeRetry {
		t.Fatalf("take after finish: %v", res)
	}
}

func TestAdaptBlockBounds(t *testing.T) {
	d, _ := newTestDispenser(t, 1<<30, 1, false)
	r := d.rounds[0]
	now := r.start
	d.adaptBlock(r, now)
	// A huge rate saturates at maxBlock; silence decays to minBlock.
	for i := 0; i < 40; i++ {
		now += int64(10 * time.Millisecond)
		r.cursor.Add(1 << 24)
		d.adaptBlock(r, now)
	}
	if b := d.block.Load(); b != maxBlock {
		t.Fatalf("block under flood %d, want %d", b, maxBlock)
	}
	for i := 0; i < 80; i++ {
		now += int64(time.Second)
		d.adaptBlock(r, now)
	}
	if b := d.block.Load(); b != minBlock {
		t.Fatalf("block when idle %d, want %d", b, minBlock)
	}
}

// TestReservationBound: what may be reserved ahead (and so forfeited by a kill -9) is
// at most 1/64 of what the round has left, with a floor of 1/128 of the round (and of
// one ticket), and a start, a burst or a flood cannot take it past that.
func TestReservationBound(t *testing.T) {
	d, _ := newTestDispenser(t, 100_000, 1, false)
	r := d.rounds[0]
	for _, c := range []struct{ cursor, want uint64 }{
		{0, 100_000 / 64}, {50_000, 50_000 / 64}, {99_000, 100_000 / 128}, {100_000, 100_000 / 128},
	} {
		if got := r.aheadLimit(c.cursor); got != c.want {
			t.Errorf("ahead limit at %d: %d, want %d", c.cursor, got, c.want)
		}
	}
	small, _ := newTestDispenser(t, 1000, 1, false)
	if got := small.rounds[0].aheadLimit(990); got != 1000/128 {
		t.Errorf("small shard's floor %d, want %d", got, 1000/128)
	}
	now := r.start
	// A start reserves a quarter of the bound, not a block sized for a rate it has
	// not seen.
	if err := d.reserveAhead(now); err != nil {
		t.Fatal(err)
	}
	if got, want := r.reserved.Load(), r.aheadLimit(0)/4; got != want {
		t.Fatalf("first reservation %d, want %d", got, want)
	}
	// A flood: whatever the rate, never more than the bound ahead of the cursor.
	for i := 0; i < 50; i++ {
		now += int64(rateWindow)
		r.cursor.Store(min(r.reserved.Load(), r.cursor.Load()+5000))
		if err := d.reserveAhead(now); err != nil {
			t.Fatal(err)
		}
		c := r.cursor.Load()
		if ahead := r.reserved.Load() - c; ahead > r.aheadLimit(c) {
			t.Fatalf("step %d: %d reserved ahead of %d, bound %d", i, ahead, c, r.aheadLimit(c))
		}
	}
	// After a quiet spell one burst window moves the block only halfway to what that
	// window's rate asks for.
	q, _ := newTestDispenser(t, 1<<30, 1, false)
	qr := q.rounds[0]
	qnow := qr.start
	q.adaptBlock(qr, qnow)
	for i := 0; i < 20; i++ {
		qnow += int64(rateWindow)
		q.adaptBlock(qr, qnow)
	}
	before := q.block.Load()
	qnow += int64(rateWindow)
	qr.cursor.Add(100_000) // 5M/s for one window: 500,000 tickets' worth of reserveAhead
	if got := q.adaptBlock(qr, qnow); got > before/2+250_000+1 {
		t.Fatalf("one burst window took the block from %d to %d", before, got)
	}
}
