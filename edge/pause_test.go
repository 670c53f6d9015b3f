package edge

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"shake/ticket"
)

// TestPauseStopsThePacedClock: a paced round at 100 tickets/s, shaken by more users than
// it releases, is paused for 5 s and resumed. A paused shake says so; after the resume
// the edge hands out at the paced rate (at most 1.2x in the 2 s after it), not the 500
// tickets the pause held back. A round closed by the closed_rounds switch stops its
// clock the same way.
func TestPauseStopsThePacedClock(t *testing.T) {
	start := time.Now().Add(time.Hour).UTC().Truncate(time.Second)
	rounds := []ticket.RoundWindow{{Index: 0, Start: start, End: start.Add(100 * time.Second)}}
	f := newFixture(t, shardSpec{count: 10000, rounds: rounds, perRnd: []uint64{10000}})
	var now atomic.Int64
	at := func(d time.Duration) { now.Store(start.Add(d).UnixNano()) }
	at(0)
	s := startEdge(t, f, func(c *Config) {
		c.Pace = true
		c.PerUser = 0
		c.Now = func() time.Time { return time.Unix(0, now.Load()) }
	})
	h := s.Handler()
	uid := uint64(0)
	// shakeFor shakes 50 times every 100 ms of the edge's clock from..to (5x the paced
	// rate of 10 per 100 ms) and returns the wins.
	shakeFor := func(from, to time.Duration) (won int, last string) {
		for d := from; d < to; d += 100 * time.Millisecond {
			at(d)
			for i := 0; i < 50; i++ {
				uid++
				tok := f.sess.Mint(nil, uid, time.Unix(0, now.Load()).Add(time.Hour).Unix())
				_, body, _ := do(h, "POST", "/v1/shake", "Bearer "+string(tok), nil)
				if w := decode(t, body); w.Result == "won" {
					won++
				}
				last = body
			}
		}
		return won, last
	}
	version := uint64(1)
	set := func(d time.Duration, fn func(e *ticket.EdgeSwitches)) {
		at(d)
		doc := ticket.DefaultSwitches()
		version++
		doc.Version = version
		fn(&doc.Edge)
		if err := s.applySwitches(context.Background(), doc); err != nil {
			t.Fatal(err)
		}
	}
	const rate = 100.0 // tickets per second: 10000 over 100 s
	before, _ := shakeFor(0, 10*time.Second)
	set(10*time.Second, func(e *ticket.EdgeSwitches) { e.Paused = true })
	if _, body := shakeFor(10*time.Second, 15*time.Second); body != `{"result":"closed","paused":true,"next_round_at":null}` {
		t.Fatalf("a paused shake: %s", body)
	}
	set(15*time.Second, func(e *ticket.EdgeSwitches) { e.Paused = false })
	after, _ := shakeFor(15*time.Second, 17*time.Second)
	t.Logf("paced %.0f/s: %d wins in the 10 s before the pause (%.0f/s), 5 s paused, %d wins in the 2 s after the resume (%.0f/s, %.2fx the paced rate)",
		rate, before, float64(before)/10, after, float64(after)/2, float64(after)/2/rate)
	if float64(after)/2 > 1.2*rate {
		t.Fatalf("%.0f wins/s after the resume, paced rate %.0f/s: the pause was released as a burst", float64(after)/2, rate)
	}
	if float64(after)/2 < 0.8*rate {
		t.Fatalf("%.0f wins/s after the resume, paced rate %.0f/s: the release did not resume", float64(after)/2, rate)
	}

	// closed_rounds: the round's clock stops while it is closed.
	set(17*time.Second, func(e *ticket.EdgeSwitches) { e.ClosedRounds = []int{0} })
	set(27*time.Second, func(e *ticket.EdgeSwitches) {})
	reopened, _ := shakeFor(27*time.Second, 29*time.Second)
	t.Logf("closed 10 s: %d wins in the 2 s after it reopened (%.0f/s)", reopened, float64(reopened)/2)
	if float64(reopened)/2 > 1.2*rate {
		t.Fatalf("%.0f wins/s after the round reopened: the closed time was released as a burst", float64(reopened)/2)
	}
}

// TestStoppedWithin: overlapping stops (a pause while the round was closed) count once,
// and only the part inside the window counts.
func TestStoppedWithin(t *testing.T) {
	var c stopClock
	closed := []bool{true}
	c.record(10, false, closed, 1) // round 0 closed at 10
	c.record(20, true, closed, 1)  // paused at 20
	c.record(30, false, closed, 1) // resumed at 30, still closed
	spans := c.record(40, false, nil, 1)
	for _, tc := range []struct{ from, to, want int64 }{
		{0, 100, 30}, {0, 15, 5}, {25, 35, 10}, {40, 100, 0}, {0, 10, 0},
	} {
		if got := stoppedWithin(spans[0], tc.from, tc.to); got != tc.want {
			t.Errorf("stopped within [%d, %d) = %d, want %d (spans %v)", tc.from, tc.to, got, tc.want, spans[0])
		}
	}
	if got := stoppedWithin(c.record(50, true, nil, 1)[0], 0, 100); got != 30+50 {
		t.Errorf("with a pause in progress since 50: %d, want 80", got)
	}
}
