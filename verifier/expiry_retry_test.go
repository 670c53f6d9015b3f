package verifier

import (
	"sync/atomic"
	"testing"
	"time"
)

// TestRetryAfterExpiryGetsSame200: a client whose 200 was lost in a timeout retries
// after its token expired; the claim is durable and will be paid, so the contract's "the same
// user opening the same ticket again gets the same 200" holds. An expired token that
// was never opened is still 410, and never starts a claim.
func TestRetryAfterExpiryGetsSame200(t *testing.T) {
	f := newFixture(t, 1, 100)
	b := startBroker(t)
	var clock atomic.Int64
	t0 := time.Now().Truncate(time.Second)
	clock.Store(t0.UnixNano())
	cfg := f.config([]string{b.Addr()})
	cfg.Now = func() time.Time { return time.Unix(0, clock.Load()) }
	s := newServer(t, f, cfg)
	alice := f.bearer(7)
	opened := body(f.token(0, 5, 7, t0.Add(2*time.Second)))
	never := body(f.token(0, 6, 7, t0.Add(2*time.Second)))

	st, first := do(s, "POST", "/v1/open", alice, opened)
	if st != 200 {
		t.Fatalf("first open: %d %s", st, first)
	}
	clock.Store(t0.Add(10 * time.Second).UnixNano())
	if st, again := do(s, "POST", "/v1/open", alice, opened); st != 200 || again != first {
		t.Fatalf("retry after expiry: %d %s, want the same 200 %s", st, again, first)
	}
	if st, got := do(s, "POST", "/v1/open", alice, never); st != 410 {
		t.Fatalf("expired, never opened: %d %s, want 410", st, got)
	}
	if free, _ := s.table.state(0, 6); !free {
		t.Fatal("an expired token left a claim on its ticket")
	}
	if claims := readTopic(t, b.Addr(), 1, 5*time.Second); len(claims) != 1 || len(claims[5]) != 1 {
		t.Fatalf("topic holds %+v, want exactly ticket 5 once", claims)
	}
}
