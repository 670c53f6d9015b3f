// Package client is a small Go client of shake's public API (api/openapi.json) with
// its retry rules built in:
//
//   - Shake: a 429 is retried after Retry-After (or retry_after_ms), so clients back off
//     when the edge sheds; every other answer is final.
//   - Open: a 503 is retried with the same token (the claim could be made durable
//     nowhere; the token stays valid and a repeat open is idempotent); so is a transport
//     error, since the first attempt may have succeeded and a repeat returns the same 200.
//   - Packets and Campaign: a 503 is retried after Retry-After.
//
// Every call makes at most MaxAttempts attempts, never waits longer than MaxWait
// between them, and never past the context's deadline: it returns the last error
// instead of sleeping beyond it.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Defaults for zero Client fields.
const (
	DefaultMaxAttempts = 3
	DefaultMaxWait     = 5 * time.Second
	// maxBody bounds what the client reads of an answer (a page of 50 packets is ~6 KB).
	maxBody = 1 << 20
)

// Client calls one edge, one verifier and one query server as one user.
type Client struct {
	EdgeURL, VerifierURL, QueryURL string
	// Session is the user's session token from the login system.
	Session string
	// HTTP is the transport; nil is a client with a 10 s timeout.
	HTTP *http.Client
	// MaxAttempts bounds the attempts of one call, default DefaultMaxAttempts.
	MaxAttempts int
	// MaxWait caps one wait between attempts, default DefaultMaxWait.
	MaxWait time.Duration
	// sleep waits d or until ctx is done (tests replace it).
	sleep func(ctx context.Context, d time.Duration) error
}

// Error is an answer other than success: the HTTP status and the body's error code
// (or result, for a 429 shake), with the server's retry hint when it gave one.
type Error struct {
	Status     int
	Code       string
	RetryAfter time.Duration
}

func (e *Error) Error() string { return fmt.Sprintf("shake: %d %s", e.Status, e.Code) }

// ErrBadAnswer reports an answer that is not the documented JSON.
var ErrBadAnswer = errors.New("shake: malformed answer")

// ShakeResult is the answer of a shake: Result is "won", "miss" or "closed".
type ShakeResult struct {
	Result      string    `json:"result"`
	Token       string    `json:"token,omitempty"`
	Campaign    string    `json:"campaign,omitempty"`
	ExpiresAt   time.Time `json:"expires_at,omitzero"`
	NextRoundAt *string   `json:"next_round_at,omitempty"`
}

// Opened is the answer of a successful open.
type Opened struct {
	Result   string `json:"result"`
	Campaign string `json:"campaign"`
	Ticket   string `json:"ticket"`
	Amount   int64  `json:"amount"`
	Currency string `json:"currency"`
}

// Packet is one settled packet of the user.
type Packet struct {
	Campaign  string    `json:"campaign"`
	Ticket    string    `json:"ticket"`
	Amount    int64     `json:"amount"`
	Currency  string    `json:"currency"`
	SettledAt time.Time `json:"settled_at"`
}

// Page is one page of the user's packets; Next is nil on the last page.
type Page struct {
	UID     string   `json:"uid"`
	Packets []Packet `json:"packets"`
	Next    *string  `json:"next"`
}

// Campaign is a campaign's public page.
type Campaign struct {
	Campaign       string `json:"campaign"`
	Currency       string `json:"currency"`
	Budget         int64  `json:"budget"`
	Tickets        int64  `json:"tickets"`
	SettledTickets int64  `json:"settled_tickets"`
	SettledAmount  int64  `json:"settled_amount"`
	Top            []struct {
		UIDMasked string `json:"uid_masked"`
		Amount    int64  `json:"amount"`
	} `json:"top"`
}

// Shake shakes once, retrying a 429 after the server's hint.
func (c *Client) Shake(ctx context.Context) (*ShakeResult, error) {
	var r ShakeResult
	err := c.do(ctx, http.MethodPost, c.EdgeURL+"/v1/shake", nil, http.StatusTooManyRequests, false, &r)
	if err != nil {
		return nil, err
	}
	if r.Result != "won" && r.Result != "miss" && r.Result != "closed" {
		return nil, fmt.Errorf("%w: result %q", ErrBadAnswer, r.Result)
	}
	return &r, nil
}

// Open opens a won ticket, retrying a 503 (and a lost answer) with the same token.
func (c *Client) Open(ctx context.Context, token string) (*Opened, error) {
	body, err := json.Marshal(struct {
		Token string `json:"token"`
	}{token})
	if err != nil {
		return nil, err
	}
	var r Opened
	if err := c.do(ctx, http.MethodPost, c.VerifierURL+"/v1/open", body, http.StatusServiceUnavailable, true, &r); err != nil {
		return nil, err
	}
	if r.Result != "opened" {
		return nil, fmt.Errorf("%w: result %q", ErrBadAnswer, r.Result)
	}
	return &r, nil
}

// Packets returns one page of the user's packets (of campaign only, unless ""),
// starting after the cursor before ("" for the newest).
func (c *Client) Packets(ctx context.Context, campaign, before string) (*Page, error) {
	q := url.Values{}
	if campaign != "" {
		q.Set("campaign", campaign)
	}
	if before != "" {
		q.Set("before", before)
	}
	u := c.QueryURL + "/v1/packets"
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	var p Page
	if err := c.do(ctx, http.MethodGet, u, nil, http.StatusServiceUnavailable, false, &p); err != nil {
		return nil, err
	}
	return &p, nil
}

// Campaign returns a campaign's public page.
func (c *Client) Campaign(ctx context.Context, id string) (*Campaign, error) {
	var p Campaign
	if err := c.do(ctx, http.MethodGet, c.QueryURL+"/v1/campaigns/"+url.PathEscape(id), nil, http.StatusServiceUnavailable, false, &p); err != nil {
		return nil, err
	}
	return &p, nil
}

// do makes up to MaxAttempts attempts of one request, retrying the retryStatus (and,
// when idempotent, a transport error) after the server's hint, and decodes a 200 into
// out.
func (c *Client) do(ctx context.Context, method, u string, body []byte, retryStatus int, idempotent bool, out any) error {
	attempts := c.MaxAttempts
	if attempts <= 0 {
		attempts = DefaultMaxAttempts
	}
	maxWait := c.MaxWait
	if maxWait <= 0 {
		maxWait = DefaultMaxWait
	}
	hc := c.HTTP
	if hc == nil {
		hc = &http.Client{Timeout: 10 * time.Second}
	}
	sleep := c.sleep
	if sleep == nil {
		sleep = sleepCtx
	}
	var last error
	for a := 1; ; a++ {
		wait, retry, err := c.attempt(ctx, hc, method, u, body, retryStatus, idempotent, out)
		if err == nil {
			return nil
		}
		last = err
		if !retry || a >= attempts || ctx.Err() != nil {
			return last
		}
		wait = min(wait, maxWait)
		if dl, ok := ctx.Deadline(); ok && time.Until(dl) < wait {
			return last // waiting would outlive the caller's deadline
		}
		if err := sleep(ctx, wait); err != nil {
			return last
		}
	}
}

// attempt makes one request; retry says whether its failure may be retried, after wait.
func (c *Client) attempt(ctx context.Context, hc *http.Client, method, u string, body []byte, retryStatus int, idempotent bool, out any) (wait time.Duration, retry bool, err error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return 0, false, err
	}
	req.Header.Set("Authorization", "Bearer "+c.Session)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := hc.Do(req)
	if err != nil {
		// The answer was lost; only an idempotent request may be sent again.
		return 100 * time.Millisecond, idempotent && ctx.Err() == nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return 100 * time.Millisecond, idempotent, err
	}
	if resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(b, out); err != nil {
			return 0, false, fmt.Errorf("%w: %v", ErrBadAnswer, err)
		}
		return 0, false, nil
	}
	var e struct {
		Error        string `json:"error"`
		Result       string `json:"result"`
		RetryAfterMS *int64 `json:"retry_after_ms"`
	}
	_ = json.Unmarshal(b, &e)
	ae := &Error{Status: resp.StatusCode, Code: e.Error}
	if ae.Code == "" {
		ae.Code = e.Result
	}
	ae.RetryAfter = retryAfter(resp.Header.Get("Retry-After"), e.RetryAfterMS)
	return ae.RetryAfter, resp.StatusCode == retryStatus, ae
}

// retryAfter is the server's hint: retry_after_ms when given (finer), else the
// Retry-After seconds, else 100 ms.
func retryAfter(header string, ms *int64) time.Duration {
	if ms != nil && *ms >= 0 {
		return time.Duration(*ms) * time.Millisecond
	}
	if s, err := strconv.Atoi(strings.TrimSpace(header)); err == nil && s >= 0 {
		return time.Duration(s) * time.Second
	}
	return 100 * time.Millisecond
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
