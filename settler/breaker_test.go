package settler

import (
	"math/rand/v2"
	"testing"
	"time"
)

type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time          { return c.t }
func (c *fakeClock) advance(d time.Duration) { c.t = c.t.Add(d) }

func TestBreakerStateMachine(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1000, 0)}
	var transitions []string
	b := NewBreaker(3, 10*time.Second, clk.now, func(from, to BreakerState) {
		transitions = append(transitions, from.String()+">"+to.String())
	})
	mustAllow := func(want bool) {
		t.Helper()
		if ok, _ := b.Allow(); ok != want {
			t.Fatalf("Allow() = %v in state %v, want %v", ok, b.State(), want)
		}
	}
	mustAllow(true)
	b.Failure()
	b.Failure()
	if b.State() != BreakerClosed {
		t.Fatalf("opened after 2 of 3 failures")
	}
	b.Success() // a success resets the consecutive count
	b.Failure()
	b.Failure()
	if b.State() != BreakerClosed {
		t.Fatalf("count not reset by success")
	}
	b.Failure()
	if b.State() != BreakerOpen {
		t.Fatalf("state %v after 3 failures, want open", b.State())
	}
	ok, wait := b.Allow()
	if ok || wait != 10*time.Second {
		t.Fatalf("open: Allow() = %v, %v", ok, wait)
	}
	clk.advance(9 * time.Second)
	if ok, wait := b.Allow(); ok || wait != time.Second {
		t.Fatalf("open after 9s: Allow() = %v, %v", ok, wait)
	}
	clk.advance(time.Second)
	mustAllow(true) // the probe
	if b.State() != BreakerHalfOpen {
		t.Fatalf("state %v, want half-open", b.State())
	}
	mustAllow(false) // only one probe at a time
	b.Failure()      // probe failed: open again, full cooldown
	if b.State() != BreakerOpen {
		t.Fatalf("state %v after failed probe", b.State())
	}
	clk.advance(5 * time.Second)
	mustAllow(false)
	clk.advance(5 * time.Second)
	mustAllow(true)
	b.Success()
	if b.State() != BreakerClosed {
		t.Fatalf("state %v after good probe", b.State())
	}
	mustAllow(true)
	want := []string{"closed>open", "open>half-open", "half-open>open", "open>half-open", "half-open>closed"}
	if len(transitions) != len(want) {
		t.Fatalf("transitions %v, want %v", transitions, want)
	}
	for i := range want {
		if transitions[i] != want[i] {
			t.Fatalf("transitions %v, want %v", transitions, want)
		}
	}
}

func TestBackoff(t *testing.T) {
	lo, hi := 10*time.Millisecond, time.Second
	for n := 0; n < 20; n++ {
		full := lo << min(n, 10)
		if full > hi {
			full = hi
		}
		for i := 0; i < 50; i++ {
			d := backoff(n, lo, hi, rand.Int64N)
			if d < full/2 || d > full {
				t.Fatalf("backoff(%d) = %v, want in [%v, %v]", n, d, full/2, full)
			}
		}
	}
	// The jitter really varies.
	seen := map[time.Duration]bool{}
	for i := 0; i < 20; i++ {
		seen[backoff(3, lo, hi, rand.Int64N)] = true
	}
	if len(seen) < 2 {
		t.Fatal("backoff has no jitter")
	}
}
