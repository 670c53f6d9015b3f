package settler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"shake/settler/ledger"
	"shake/ticket"
)

// Start-up defaults of OpenLedger.
const (
	// DefaultLedgerWait is how long a starting settler waits for an unreachable ledger
	// (--ledger-wait) before it gives up.
	DefaultLedgerWait = 60 * time.Second
	// DefaultLedgerAttempt bounds one attempt to open and register (dial, migrate,
	// register).
	DefaultLedgerAttempt = 10 * time.Second
	// ReadyLedgerUnreachable is /readyz's reason while a starting settler waits for its
	// ledger.
	ReadyLedgerUnreachable = "ledger_unreachable"
)

// ErrLedgerUnreachable reports a ledger still unreachable when OpenLedger's wait ran out.
var ErrLedgerUnreachable = errors.New("ledger unreachable")

// LedgerStart configures OpenLedger.
type LedgerStart struct {
	// Wait is how long transient failures (ledger.Transient) are retried; 0 makes one
	// attempt.
	Wait time.Duration
	// Attempt bounds one attempt (default DefaultLedgerAttempt); an attempt never runs
	// past the end of Wait by more than a second.
	Attempt time.Duration
	// BackoffMin and BackoffMax bound the pause between attempts (defaults 250ms and
	// 5s): it doubles from BackoffMin, with jitter, up to BackoffMax.
	BackoffMin, BackoffMax time.Duration
	// Waiting, when set, is told true when an attempt failed and the settler waits for
	// the ledger, false once it is open (for /readyz's ledger_unreachable).
	Waiting func(bool)
	Logger  *slog.Logger // nil discards
	// Open opens the ledger (nil: ledger.Open); tests count attempts with it.
	Open func(ctx context.Context, url string) (ledger.Ledger, error)
}

// OpenLedger opens the ledger at url (applying its migrations) and registers m's
// campaign in it (Register), retrying while the failure is transient (the server is
// unreachable or starting: ledger.Transient) for up to o.Wait, with exponential
// backoff and jitter and one warning logged per failed attempt. A permanent failure (a
// wrong password, a missing database, a schema newer than this binary, another
// generation of the campaign, a bad URL) is returned at once; a ledger still
// unreachable after o.Wait is ErrLedgerUnreachable wrapping the last error. When ctx
// ends first (SIGTERM while starting) it returns ctx's error promptly.
func OpenLedger(ctx context.Context, url string, m *ticket.Manifest, o LedgerStart) (ledger.Ledger, error) {
	if o.Attempt <= 0 {
		o.Attempt = DefaultLedgerAttempt
	}
	if o.BackoffMin <= 0 {
		o.BackoffMin = 250 * time.Millisecond
	}
	if o.BackoffMax < o.BackoffMin {
		o.BackoffMax = max(5*time.Second, o.BackoffMin)
	}
	if o.Open == nil {
		o.Open = ledger.Open
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Waiting == nil {
		o.Waiting = func(bool) {}
	}
	start := time.Now()
	deadline := start.Add(o.Wait)
	backoff := o.BackoffMin
	for attempt := 1; ; attempt++ {
		l, err := openAndRegister(ctx, url, m, o, deadline)
		if err == nil {
			o.Waiting(false)
			if attempt > 1 {
				o.Logger.Info("ledger reachable: starting", "attempts", attempt, "waited", time.Since(start).Round(time.Millisecond))
			}
			return l, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if !ledger.Transient(err) {
			return nil, err
		}
		left := time.Until(deadline)
		if left <= 0 {
			if o.Wait == 0 {
				return nil, fmt.Errorf("%w (--ledger-wait 0: no retry): %w", ErrLedgerUnreachable, err)
			}
			return nil, fmt.Errorf("%w: still unreachable after %v (%d attempts, --ledger-wait %v): %w",
				ErrLedgerUnreachable, time.Since(start).Round(time.Second), attempt, o.Wait, err)
		}
		// Full jitter in [backoff/2, backoff]: settlers restarted together do not
		// retry in step.
		pause := min(backoff/2+rand.N(backoff/2+1), left)
		o.Waiting(true)
		o.Logger.Warn("ledger unreachable at start: retrying", "attempt", attempt, "retry_in", pause.Round(time.Millisecond),
			"waited", time.Since(start).Round(time.Millisecond), "ledger_wait", o.Wait, "err", err)
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
		backoff = min(2*backoff, o.BackoffMax)
	}
}

// openAndRegister is one attempt: open, then register, within o.Attempt (and not more
// than a second past deadline).
func openAndRegister(ctx context.Context, url string, m *ticket.Manifest, o LedgerStart, deadline time.Time) (ledger.Ledger, error) {
	limit := min(o.Attempt, max(time.Until(deadline), time.Second))
	actx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	l, err := o.Open(actx, url)
	if err != nil {
		return nil, err
	}
	// One ledger settles one generation of a campaign id, funded with one manifest.
	if err := Register(actx, m, l); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}
