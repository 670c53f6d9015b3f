package edge

import (
	"context"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

func newTestDispenser(t *testing.T, count uint64, rounds int, pace bool) (*dispenser, *stateFile) {
	t.Helper()
	h := testHeader(count, rounds)
	sf, err := openState(filepath.Join(t.TempDir(), "s.state"), h)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sf.close() })
	return newDispenser(h, sf, pace, time.Second, slog.New(slog.DiscardHandler)), sf
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
