package bench

import (
	"encoding/json"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Result kinds: the outcomes docs/api.md names for the two endpoints.
const (
	resWon = iota
	resMiss
	resClosed
	resRetry
	resOpened
	resPage
	nResults
)

var resultNames = [nResults]string{"won", "miss", "closed", "retry", "opened", "page"}

// Error kinds. The first ones are the client's own; the rest are the error codes of
// The documented JSON error bodies, counted by code, so "unauthorized" and "already_opened"
// are told apart. An error body with another code counts as http_error; the status
// breakdown is in EndpointResult.Status.
const (
	errDropped     = iota // the in-flight bound was reached: the arrival was never sent
	errQueueFull          // a follow-up (open, retry) found the pending queue full
	errTimeout            // no answer before Config.Timeout
	errConnect            // could not connect
	errTransport          // any other client-side failure (reset, malformed HTTP)
	errBadResponse        // an answer the bench cannot classify (unknown result, no token)
	errHTTP               // an error status whose code is not one of docs/api.md's
	errUnauthorized
	errNotYourTicket
	errExpired
	errInvalidToken
	errAlreadyOpened
	errBadRequest
	errUnavailable
	errTooLarge
	errNotFound
	errMethodNotAllowed
	errLimitReached // the campaign's per_user rule (409)
	errMisdirected  // the uid belongs to another verifier's uid shard (421)
	errRevoked      // the token's shard key was revoked by the revoked_shards switch (422)
	nErrors
)

var errorNames = [nErrors]string{
	"dropped", "queue_full", "timeout", "connect", "transport", "bad_response", "http_error",
	"unauthorized", "not_your_ticket", "expired", "invalid_token", "already_opened",
	"bad_request", "unavailable", "too_large", "not_found", "method_not_allowed",
	"limit_reached", "misdirected", "revoked",
}

// errorKind maps an error code from a JSON body to its kind, without allocating.
func errorKind(code []byte) int {
	for k := errUnauthorized; k < nErrors; k++ {
		if string(code) == errorNames[k] {
			return k
		}
	}
	return errHTTP
}

// MaxSeriesSeconds bounds the per-second time series (a day); later seconds are still
// counted in the totals but not charted.
const MaxSeriesSeconds = 86400

// endpoint accumulates one endpoint's figures. Counters are atomic; the histograms and
// the series are guarded by mu, held for a few hundred nanoseconds per record.
type endpoint struct {
	name     string
	urls     []string
	requests atomic.Int64 // arrivals for this endpoint, sent or dropped
	results  [nResults]atomic.Int64
	errors   [nErrors]atomic.Int64
	status   [600]atomic.Int64
	lastDone atomic.Int64 // offset from start of the last completion, ns

	start  time.Time
	mu     sync.Mutex
	total  *Histogram
	cur    *Histogram // the current second
	curSec int
	curN   int64
	curErr int64
	curWon int64
	curCl  int64
	curMis int64
	curRet int64
	curAmt int64
	series []Second
}

func newEndpoint(name string, urls []string, start time.Time) *endpoint {
	return &endpoint{name: name, urls: urls, start: start, total: NewHistogram(), cur: NewHistogram(),
		series: make([]Second, 0, 64)}
}

// record adds one latency observed at now (isErr marks a failed request) to the totals
// and to the per-second series. It allocates nothing except when the series grows.
func (e *endpoint) record(now time.Time, lat time.Duration, isErr bool) {
	off := now.Sub(e.start)
	sec := int(off / time.Second)
	e.mu.Lock()
	if sec > e.curSec {
		e.rollLocked(sec)
	}
	e.total.Record(lat)
	e.cur.Record(lat)
	e.curN++
	if isErr {
		e.curErr++
	}
	e.mu.Unlock()
	for {
		last := e.lastDone.Load()
		if int64(off) <= last || e.lastDone.CompareAndSwap(last, int64(off)) {
			break
		}
	}
}

// rollLocked closes the current second and any empty seconds before sec.
func (e *endpoint) rollLocked(sec int) {
	for e.curSec < sec {
		if len(e.series) < MaxSeriesSeconds {
			e.series = append(e.series, Second{T: e.curSec, Count: e.curN, Errors: e.curErr, Won: e.curWon, Closed: e.curCl,
				Miss: e.curMis, Retry: e.curRet, Amount: e.curAmt, P99: e.cur.Quantile(0.99)})
		}
		e.cur.Reset()
		e.curN, e.curErr, e.curWon, e.curCl, e.curMis, e.curRet, e.curAmt = 0, 0, 0, 0, 0, 0, 0
		e.curSec++
	}
}

// recordResult counts a result in the per-second series at now (the charts show when
// tickets were handed out, missed, refused, and when the event was closed); amount is
// an opened ticket's, 0 for the rest.
func (e *endpoint) recordResult(now time.Time, res int, amount int64) {
	sec := int(now.Sub(e.start) / time.Second)
	e.mu.Lock()
	if sec > e.curSec {
		e.rollLocked(sec)
	}
	switch res {
	case resWon:
		e.curWon++
	case resClosed:
		e.curCl++
	case resMiss:
		e.curMis++
	case resRetry:
		e.curRet++
	case resOpened:
		e.curAmt += amount
	}
	e.mu.Unlock()
}

// lastSecond returns the most recent complete second (for the progress line).
func (e *endpoint) lastSecond() (Second, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.series) == 0 {
		return Second{}, false
	}
	return e.series[len(e.series)-1], true
}

// Second is one second of an endpoint's time series: completions (answers, timeouts
// and drops) in that second, how many of them were errors, the shakes won, missed,
// answered closed and answered retry (429), the amount opened (minor units), and their
// p99 latency.
type Second struct {
	T      int           `json:"t"`
	Count  int64         `json:"count"`
	Errors int64         `json:"errors"`
	Won    int64         `json:"won,omitempty"`
	Closed int64         `json:"closed,omitempty"`
	Miss   int64         `json:"miss,omitempty"`
	Retry  int64         `json:"retry,omitempty"`
	Amount int64         `json:"amount,omitempty"`
	P99    time.Duration `json:"-"`
}

type secondJSON struct {
	T      int     `json:"t"`
	Count  int64   `json:"count"`
	Errors int64   `json:"errors"`
	Won    int64   `json:"won,omitempty"`
	Closed int64   `json:"closed,omitempty"`
	Miss   int64   `json:"miss,omitempty"`
	Retry  int64   `json:"retry,omitempty"`
	Amount int64   `json:"amount,omitempty"`
	P99    float64 `json:"p99_ms"`
}

// MarshalJSON writes the p99 in milliseconds, like Latency.
func (s Second) MarshalJSON() ([]byte, error) {
	return json.Marshal(secondJSON{s.T, s.Count, s.Errors, s.Won, s.Closed, s.Miss, s.Retry, s.Amount, ms(s.P99)})
}

// UnmarshalJSON reads what MarshalJSON wrote.
func (s *Second) UnmarshalJSON(b []byte) error {
	var j secondJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	*s = Second{j.T, j.Count, j.Errors, j.Won, j.Closed, j.Miss, j.Retry, j.Amount, fromMS(j.P99)}
	return nil
}

// EndpointResult is the outcome of one endpoint ("shake" or "open").
type EndpointResult struct {
	Name string   `json:"name"`
	URLs []string `json:"urls"`
	// Requests counts arrivals for the endpoint, including dropped ones and retries.
	Requests int64 `json:"requests"`
	// Responses counts HTTP answers of any status.
	Responses int64 `json:"responses"`
	// Throughput is Responses per second over the endpoint's active window (from the
	// start to its last completion).
	Throughput float64 `json:"throughput_rps"`
	// Results counts outcomes by the documented result names (won, miss, closed, retry,
	// opened); only names that occurred are present.
	Results map[string]int64 `json:"results"`
	// Errors counts failures by kind: client-side (dropped, queue_full, timeout,
	// connect, transport, bad_response) and the JSON error code of error answers.
	Errors map[string]int64 `json:"errors"`
	// Status counts answers by HTTP status code.
	Status map[string]int64 `json:"status"`
	// Latency is measured from each request's intended send time.
	Latency Latency `json:"latency_ms"`
	// Series is one point per second since the start (at most MaxSeriesSeconds).
	Series []Second `json:"series"`
}

// ErrorCount returns the total of Errors.
func (r *EndpointResult) ErrorCount() int64 {
	var n int64
	for _, v := range r.Errors {
		n += v
	}
	return n
}

// snapshot turns the accumulated figures into a result, closing the last second at end.
func (e *endpoint) snapshot(end time.Time) EndpointResult {
	e.mu.Lock()
	sec := int(end.Sub(e.start) / time.Second)
	if e.curN > 0 || sec > e.curSec {
		e.rollLocked(max(sec, e.curSec) + 1)
	}
	lat := e.total.Summary()
	series := append([]Second(nil), e.series...)
	e.mu.Unlock()
	// Trailing empty seconds (after the endpoint's last completion) say nothing.
	for len(series) > 0 && series[len(series)-1].Count == 0 {
		series = series[:len(series)-1]
	}
	r := EndpointResult{
		Name: e.name, URLs: e.urls, Requests: e.requests.Load(), Latency: lat, Series: series,
		Results: map[string]int64{}, Errors: map[string]int64{}, Status: map[string]int64{},
	}
	for i := range e.results {
		if v := e.results[i].Load(); v > 0 {
			r.Results[resultNames[i]] = v
		}
	}
	for i := range e.errors {
		if v := e.errors[i].Load(); v > 0 {
			r.Errors[errorNames[i]] = v
		}
	}
	for i := range e.status {
		if v := e.status[i].Load(); v > 0 {
			r.Status[strconv.Itoa(i)] = v
			r.Responses += v
		}
	}
	if win := time.Duration(e.lastDone.Load()); win > 0 {
		r.Throughput = float64(r.Responses) / win.Seconds()
	}
	return r
}
