package client

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"bytes"
	"io"
	"net/http/httputil"
	"net/url"
	"shake/internal/testchain"
	"shake/settler/ledger"
)

// recordSleeps makes c record its waits instead of sleeping.
func recordSleeps(c *Client) *[]time.Duration {
	var waits []time.Duration
	c.sleep = func(ctx context.Context, d time.Duration) error { waits = append(waits, d); return ctx.Err() }
	return &waits
}

// TestAgainstRealServers: shake, open (twice: the same answer), then read the packets
// and the campaign page, all through the real edge, verifier and query handlers.
func TestAgainstRealServers(t *testing.T) {
	ch := testchain.Start(t, 3, 0)
	ctx := context.Background()
	c := &Client{EdgeURL: ch.Edge, VerifierURL: ch.Verifier, Session: ch.User(7)}
	s, err := c.Shake(ctx)
	if err != nil || s.Result != "won" || s.Token == "" || s.Campaign != "open" {
		t.Fatalf("Shake = %+v, %v", s, err)
	}
	if again, err := c.Shake(ctx); err != nil || again.Result != "miss" {
		t.Fatalf("second Shake = %+v, %v (per_user 1)", again, err)
	}
	o, err := c.Open(ctx, s.Token)
	if err != nil || o.Result != "opened" || o.Amount <= 0 {
		t.Fatalf("Open = %+v, %v", o, err)
	}
	if o2, err := c.Open(ctx, s.Token); err != nil || *o2 != *o {
		t.Fatalf("Open again = %+v, %v; want %+v", o2, err, o)
	}
	other := &Client{VerifierURL: ch.Verifier, Session: ch.User(8)}
	var ae *Error
	if _, err := other.Open(ctx, s.Token); !errors.As(err, &ae) || ae.Status != 403 || ae.Code != "not_your_ticket" {
		t.Fatalf("another user's open: %v", err)
	}
	// What the settler would post for that open.
	var tk uint64
	for _, ch := range o.Ticket {
		tk = tk*10 + uint64(ch-'0')
	}
	c.QueryURL = ch.Ledger(t, []ledger.Posting{{Campaign: o.Campaign, Ticket: tk, Amount: o.Amount, Currency: o.Currency, UID: 7, OpenedAt: time.Now()}})
	p, err := c.Packets(ctx, "", "")
	if err != nil || p.UID != "7" || len(p.Packets) != 1 || p.Packets[0].Ticket != o.Ticket || p.Packets[0].Amount != o.Amount || p.Next != nil {
		t.Fatalf("Packets = %+v, %v", p, err)
	}
	if p, err := c.Packets(ctx, "elsewhere", ""); err != nil || len(p.Packets) != 0 {
		t.Fatalf("Packets of another campaign = %+v, %v", p, err)
	}
	if _, err := c.Packets(ctx, "", "not-a-cursor"); !errors.As(err, &ae) || ae.Status != 400 || ae.Code != "bad_cursor" {
		t.Fatalf("bad cursor: %v", err)
	}
	cp, err := c.Campaign(ctx, "open")
	if err != nil || cp.SettledTickets != 1 || cp.SettledAmount != o.Amount || cp.Tickets != 3 || len(cp.Top) != 1 || cp.Top[0].UIDMasked != "****7" {
		t.Fatalf("Campaign = %+v, %v", cp, err)
	}
	if _, err := c.Campaign(ctx, "nope"); !errors.As(err, &ae) || ae.Status != 404 {
		t.Fatalf("unknown campaign: %v", err)
	}
	bad := &Client{EdgeURL: ch.Edge, Session: "1.2.3"}
	if _, err := bad.Shake(ctx); !errors.As(err, &ae) || ae.Status != 401 || ae.Code != "unauthorized" {
		t.Fatalf("bad session: %v", err)
	}
}

// TestOpenRetries503WithTheSameToken: a verifier that can make nothing durable answers
// 503; the client tries MaxAttempts times, the same token each time, waiting the hint.
func TestOpenRetries503WithTheSameToken(t *testing.T) {
	ch := testchain.Start(t, 3, 0)
	dead := ch.DeadVerifier(t, nil)
	// A proxy in front of it records every attempt's body.
	target, _ := url.Parse(dead)
	rp := httputil.NewSingleHostReverseProxy(target)
	var mu sync.Mutex
	var bodies []string
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		bodies = append(bodies, string(b))
		mu.Unlock()
		r.Body = io.NopCloser(bytes.NewReader(b))
		rp.ServeHTTP(w, r)
	}))
	defer proxy.Close()
	ctx := context.Background()
	c := &Client{EdgeURL: ch.Edge, VerifierURL: proxy.URL, Session: ch.User(5), MaxAttempts: 3}
	s, err := c.Shake(ctx)
	if err != nil || s.Result != "won" {
		t.Fatalf("Shake = %+v, %v", s, err)
	}
	waits := recordSleeps(c)
	_, err = c.Open(ctx, s.Token)
	var ae *Error
	if !errors.As(err, &ae) || ae.Status != 503 || ae.Code != "unavailable" || ae.RetryAfter != time.Second {
		t.Fatalf("Open on a dead verifier: %v", err)
	}
	if len(*waits) != 2 || (*waits)[0] != time.Second {
		t.Fatalf("waits %v, want two of 1s", *waits)
	}
	mu.Lock()
	if len(bodies) != 3 || bodies[0] != bodies[1] || bodies[1] != bodies[2] || !strings.Contains(bodies[0], s.Token) {
		t.Fatalf("the verifier saw %d attempts %q, want 3 with the same token", len(bodies), bodies)
	}
	mu.Unlock()
	// Once the claim can be made durable, the same token opens.
	live := &Client{VerifierURL: ch.Verifier, Session: ch.User(5)}
	if o, err := live.Open(ctx, s.Token); err != nil || o.Result != "opened" {
		t.Fatalf("the same token on a live verifier: %+v, %v", o, err)
	}
}

// fake answers from a script, recording each request's body.
type fake struct {
	mu     sync.Mutex
	bodies []string
	script []func(w http.ResponseWriter)
}

func (f *fake) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b := make([]byte, 512)
	n, _ := r.Body.Read(b)
	f.mu.Lock()
	i := len(f.bodies)
	f.bodies = append(f.bodies, string(b[:n]))
	f.mu.Unlock()
	f.script[min(i, len(f.script)-1)](w)
}

func (f *fake) n() int { f.mu.Lock(); defer f.mu.Unlock(); return len(f.bodies) }

func (f *fake) reset() { f.mu.Lock(); f.bodies = nil; f.mu.Unlock() }

func (f *fake) all() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string{}, f.bodies...)
}

func answer(status int, header, body string) func(http.ResponseWriter) {
	return func(w http.ResponseWriter) {
		if header != "" {
			w.Header().Set("Retry-After", header)
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		w.Write([]byte(body))
	}
}

func hangUp(w http.ResponseWriter) {
	c, _, _ := w.(http.Hijacker).Hijack()
	c.Close()
}

// TestShakeRetryRules: a 429 is retried after its hint (retry_after_ms over
// Retry-After), at most MaxAttempts times, and never past the context's deadline; a
// lost answer is not retried (a second shake is a new shake).
func TestShakeRetryRules(t *testing.T) {
	f := &fake{script: []func(http.ResponseWriter){
		answer(429, "1", `{"result":"retry","retry_after_ms":250}`),
		answer(429, "2", `{"result":"retry"}`),
		answer(200, "", `{"result":"miss"}`),
	}}
	srv := httptest.NewServer(f)
	defer srv.Close()
	c := &Client{EdgeURL: srv.URL, Session: "s"}
	waits := recordSleeps(c)
	r, err := c.Shake(context.Background())
	if err != nil || r.Result != "miss" || f.n() != 3 {
		t.Fatalf("Shake = %+v, %v after %d requests", r, err, f.n())
	}
	if len(*waits) != 2 || (*waits)[0] != 250*time.Millisecond || (*waits)[1] != 2*time.Second {
		t.Fatalf("waits %v, want [250ms 2s]", *waits)
	}

	f = &fake{script: []func(http.ResponseWriter){answer(429, "30", `{"result":"retry","retry_after_ms":30000}`)}}
	srv2 := httptest.NewServer(f)
	defer srv2.Close()
	c = &Client{EdgeURL: srv2.URL, Session: "s", MaxAttempts: 4, MaxWait: time.Millisecond}
	var ae *Error
	if _, err := c.Shake(context.Background()); !errors.As(err, &ae) || ae.Status != 429 || ae.Code != "retry" || f.n() != 4 {
		t.Fatalf("always 429: %v after %d requests, want 4", err, f.n())
	}
	f.reset()
	c = &Client{EdgeURL: srv2.URL, Session: "s"}
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := c.Shake(ctx); !errors.As(err, &ae) || f.n() != 1 || time.Since(start) > 400*time.Millisecond {
		t.Fatalf("a 30 s hint under a 500 ms deadline: %v after %d requests in %v; want the 429 at once", err, f.n(), time.Since(start))
	}

	f = &fake{script: []func(http.ResponseWriter){hangUp, answer(200, "", `{"result":"miss"}`)}}
	srv3 := httptest.NewServer(f)
	defer srv3.Close()
	c = &Client{EdgeURL: srv3.URL, Session: "s"}
	if _, err := c.Shake(context.Background()); err == nil || f.n() != 1 {
		t.Fatalf("a lost shake answer: %v after %d requests, want an error after 1", err, f.n())
	}
}

// TestOpenRetriesALostAnswer: the connection drops during an open; the client sends
// the same token again and gets the verifier's (idempotent) 200.
func TestOpenRetriesALostAnswer(t *testing.T) {
	f := &fake{script: []func(http.ResponseWriter){hangUp,
		answer(200, "", `{"result":"opened","campaign":"c","ticket":"5","amount":9,"currency":"CNY"}`)}}
	srv := httptest.NewServer(f)
	defer srv.Close()
	c := &Client{VerifierURL: srv.URL, Session: "s"}
	recordSleeps(c)
	o, err := c.Open(context.Background(), "TOKEN-1")
	bodies := f.all()
	if err != nil || o.Amount != 9 || len(bodies) != 2 || bodies[0] != bodies[1] || !strings.Contains(bodies[1], "TOKEN-1") {
		t.Fatalf("Open = %+v, %v; bodies %q", o, err, bodies)
	}
}
