package settler

import (
	"sync"
	"sync/atomic"
	"time"
)

// BreakerState is the state of a circuit breaker.
type BreakerState int32

// The breaker's states, in the order exported as the shake_settler_breaker_state gauge.
const (
	// BreakerClosed lets every call through and counts consecutive failures.
	BreakerClosed BreakerState = iota
	// BreakerOpen lets nothing through until the cooldown has passed.
	BreakerOpen
	// BreakerHalfOpen lets one probe through: success closes, failure reopens.
	BreakerHalfOpen
)

// String names the state for logs.
func (s BreakerState) String() string {
	switch s {
	case BreakerClosed:
		return "closed"
	case BreakerOpen:
		return "open"
	case BreakerHalfOpen:
		return "half-open"
	}
	return "unknown"
}

// Breaker is a circuit breaker: closed -> open after Threshold consecutive failures ->
// half-open after Cooldown (one probe) -> closed on the probe's success, open again on
// its failure. It is safe for concurrent use; the clock is injectable for tests.
type Breaker struct {
	threshold int
	cooldown  time.Duration
	now       func() time.Time

	mu       sync.Mutex
	failures int
	openedAt time.Time
	probing  bool
	state    atomic.Int32 // BreakerState, readable without the lock (metrics, readiness)
	// onChange, if not nil, is called (under the breaker's lock) on every transition.
	onChange func(from, to BreakerState)
}

// NewBreaker returns a closed breaker. threshold < 1 is taken as 1; now nil uses time.Now.
func NewBreaker(threshold int, cooldown time.Duration, now func() time.Time, onChange func(from, to BreakerState)) *Breaker {
	if threshold < 1 {
		threshold = 1
	}
	if now == nil {
		now = time.Now
	}
	return &Breaker{threshold: threshold, cooldown: cooldown, now: now, onChange: onChange}
}

// State returns the current state.
func (b *Breaker) State() BreakerState { return BreakerState(b.state.Load()) }

func (b *Breaker) set(to BreakerState) {
	from := BreakerState(b.state.Swap(int32(to)))
	if from != to && b.onChange != nil {
		b.onChange(from, to)
	}
}

// Allow reports whether a call may go ahead now; when it may not, wait is how long until
// the breaker would let a probe through.
func (b *Breaker) Allow() (ok bool, wait time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch b.State() {
	case BreakerClosed:
		return true, 0
	case BreakerOpen:
		if left := b.openedAt.Add(b.cooldown).Sub(b.now()); left > 0 {
			return false, left
		}
		b.set(BreakerHalfOpen)
		b.probing = true
		return true, 0
	default: // half-open: only the one probe
		if b.probing {
			return false, b.cooldown
		}
		b.probing = true
		return true, 0
	}
}

// Success records a call that succeeded.
func (b *Breaker) Success() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.failures, b.probing = 0, false
	b.set(BreakerClosed)
}

// Failure records a call that failed.
func (b *Breaker) Failure() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.failures++
	if b.State() == BreakerHalfOpen || b.failures >= b.threshold {
		b.probing = false
		b.openedAt = b.now()
		b.set(BreakerOpen)
	}
}

// backoff returns the delay before retry attempt n (0-based): exponential from min,
// capped at max, with "equal jitter" (half fixed, half random) so that several settlers
// retrying against one recovering database do not stampede in step.
func backoff(n int, lo, hi time.Duration, rnd func(int64) int64) time.Duration {
	d := lo
	for i := 0; i < n && d < hi; i++ {
		d *= 2
	}
	if d > hi {
		d = hi
	}
	half := d / 2
	if half <= 0 {
		return d
	}
	return half + time.Duration(rnd(int64(half)+1))
}
