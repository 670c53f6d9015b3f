// Package bench is shake's load generator: simulated users shake at a fixed arrival rate
// (open loop) or as fast as C clients can (closed loop), open what they win after a think
// time, and every request's latency is measured from its intended send time, so a stalled
// server cannot hide its queueing (no coordinated omission). It also runs the same load
// against baselines (a bare fasthttp handler, a Redis and a PostgreSQL dispenser) so that
// shake's figures come as ratios. The CLI (`shake bench`) and `shake demo` both call Run.
package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"shake/ticket"
)

// Defaults and limits of Config.
const (
	DefaultUsers       = 10000
	DefaultConnections = 64
	DefaultMaxInFlight = 1024
	DefaultTimeout     = 5 * time.Second
	DefaultMaxPending  = 1 << 16
	DefaultMaxOpened   = 1 << 20
	// MaxUsers bounds Config.Users: every user's session token is minted up front and
	// kept in memory (about 70 bytes each).
	MaxUsers = 1 << 22
	// MaxTokenLen is the longest ticket token the bench will carry to /v1/open (docs/api.md
	// promises at most 160 characters).
	MaxTokenLen = 160
	// maxRetryAfter caps a server's retry_after_ms hint.
	maxRetryAfter = 5 * time.Second
)

// Sentinel errors.
var (
	// ErrConfig is wrapped by every invalid Config.
	ErrConfig = errors.New("invalid bench config")
)

// Config describes one bench run.
type Config struct {
	// Label names the run in results and reports ("shake", "bare", ...); default "shake".
	Label string
	// EdgeURLs are the edges' base URLs (http://host:port); shakes go round robin.
	EdgeURLs []string
	// VerifierURL is the verifier's base URL. Empty: won tickets are not opened.
	VerifierURL string
	// QueryURL is a query server's base URL (shake query). When set, every user who
	// opened a ticket asks GET /v1/packets for their packets once, after Think.
	QueryURL string
	// SessionKey is the 32-byte session.key the users' session tokens are minted with.
	SessionKey []byte
	// Users is the number of simulated users (uids 1..Users); default DefaultUsers.
	Users int
	// Rate is the arrival rate in shakes per second (open loop). 0 selects closed-loop
	// mode: Connections clients each send their next shake as soon as the last answered.
	Rate float64
	// Ramp raises the arrival rate linearly from 0 to Rate over the first Ramp of the run.
	Ramp time.Duration
	// Duration is how long arrivals are generated (ramp included).
	Duration time.Duration
	// Think is how long a winner waits before opening its ticket.
	Think time.Duration
	// Connections is the connection limit per target in open-loop mode (a request waiting
	// for a free connection counts the wait in its latency) and the number of clients in
	// closed-loop mode; default DefaultConnections.
	Connections int
	// MaxInFlight bounds the requests outstanding at once in open-loop mode (and the
	// opens in both modes); an arrival beyond it is not sent and counts as "dropped",
	// its lateness recorded as its latency. Default DefaultMaxInFlight.
	MaxInFlight int
	// Timeout bounds each request; default DefaultTimeout.
	Timeout time.Duration
	// NoRetry disables the single retry of a shake answered 429 (after its
	// retry_after_ms) and of an open answered 503.
	NoRetry bool
	// MaxPending bounds the follow-ups (opens after think time, retries) waiting for
	// their time; default DefaultMaxPending. Beyond it they count as "queue_full".
	MaxPending int
	// MaxOpened bounds Result.Opened (default DefaultMaxOpened); the totals count every
	// opened ticket regardless.
	MaxOpened int
	// Seed seeds the choice of users; runs with the same seed pick the same sequence.
	Seed uint64
	// Progress, when set, receives a one-line status every second ("\r"-rewritten).
	Progress io.Writer
	// Now overrides the clock used for session expiry (tests); nil is time.Now.
	Now  func() time.Time
	Farm *Farm // a farm shaking too (see Farm); nil: none
}

// OpenedTicket is one ticket the bench opened: enough for callers to check money
// invariants against the ledger.
type OpenedTicket struct {
	Ticket uint64 `json:"ticket,string"`
	UID    uint64 `json:"uid,string"`
	Amount int64  `json:"amount"`
}

// Result is the outcome of one run.
type Result struct {
	Label       string        `json:"label"`
	Mode        string        `json:"mode"` // "open-loop" or "closed-loop"
	Rate        float64       `json:"rate"`
	Ramp        time.Duration `json:"ramp_ns"`
	Duration    time.Duration `json:"duration_ns"`
	Think       time.Duration `json:"think_ns"`
	Users       int           `json:"users"`
	Connections int           `json:"connections"`
	MaxInFlight int           `json:"max_in_flight"`
	Started     time.Time     `json:"started"`
	// Elapsed runs from the first arrival to the last answer (drain included).
	Elapsed time.Duration `json:"elapsed_ns"`
	// Arrivals is the number of shakes scheduled (excluding retries).
	Arrivals  int64           `json:"arrivals"`
	Shake     EndpointResult  `json:"shake"`
	Open      *EndpointResult `json:"open,omitempty"`
	Packets   *EndpointResult `json:"packets,omitempty"`
	Campaign  string          `json:"campaign,omitempty"`
	OpenedN   int64           `json:"opened_count"`
	OpenedSum int64           `json:"opened_amount"`
	Opened    []OpenedTicket  `json:"opened"`
	// OpenedTruncated says that Opened holds only the first MaxOpened tickets.
	OpenedTruncated bool `json:"opened_truncated"`
	// Interrupted is set when the run was cancelled before its end.
	Interrupted bool `json:"interrupted,omitempty"`
	// Baselines holds the baseline runs made with the same load (see RunBaselines).
	Baselines []BaselineResult `json:"baselines,omitempty"`
	// Windows are spans the caller marks on the charts (the demo's pause), in seconds
	// since Started.
	Windows []Window    `json:"windows,omitempty"`
	Farm    *FarmResult `json:"farm,omitempty"`
}

// Window is a labelled span of a run, shaded on the report's charts.
type Window struct {
	Label string  `json:"label"`
	From  float64 `json:"from_s"`
	To    float64 `json:"to_s"`
}

// Endpoints returns the endpoint results present (shake, then open if any).
func (r *Result) Endpoints() []*EndpointResult {
	eps := []*EndpointResult{&r.Shake}
	if r.Open != nil {
		eps = append(eps, r.Open)
	}
	if r.Packets != nil {
		eps = append(eps, r.Packets)
	}
	return eps
}

// target is one server the bench talks to.
type target struct {
	hc  *fasthttp.HostClient
	uri string // full URL of the endpoint
}

func newTarget(base, path string, conns int, timeout time.Duration) (*target, error) {
	s := strings.TrimSpace(base)
	if !strings.Contains(s, "://") {
		s = "http://" + s
	}
	u, err := url.Parse(s)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return nil, fmt.Errorf("%w: bad URL %q", ErrConfig, base)
	}
	host := u.Host
	if u.Port() == "" {
		if u.Scheme == "https" {
			host = net.JoinHostPort(u.Hostname(), "443")
		} else {
			host = net.JoinHostPort(u.Hostname(), "80")
		}
	}
	return &target{
		uri: u.Scheme + "://" + u.Host + strings.TrimRight(u.Path, "/") + path,
		hc: &fasthttp.HostClient{
			Addr:                          host,
			Name:                          "shake-bench",
			IsTLS:                         u.Scheme == "https",
			MaxConns:                      conns,
			MaxConnWaitTimeout:            timeout,
			ReadTimeout:                   timeout,
			WriteTimeout:                  timeout,
			MaxIdleConnDuration:           time.Minute,
			DisableHeaderNamesNormalizing: true,
		},
	}, nil
}

// job kinds.
const (
	kindShake   = 0
	kindOpen    = 1
	kindPackets = 2
)

// job is one request to make: by value, so queueing it allocates nothing.
type job struct {
	intended time.Time
	uid      uint64
	kind     uint8
	retry    bool
	tokLen   uint8
	tok      [MaxTokenLen]byte
}

// runner is one Run in progress.
type runner struct {
	cfg      Config
	start    time.Time
	edges    []*target
	verifier *target
	query    *target
	sessions []byte   // every user's session token, back to back
	sessOff  []uint32 // sessOff[uid-1]..sessOff[uid] delimits uid's token
	shake    *endpoint
	open     *endpoint
	packets  *endpoint
	rr       atomic.Uint64
	arrivals atomic.Int64

	inflight atomic.Int64
	jobs     chan job
	pending  pendingQueue
	wake     chan struct{}
	wg       sync.WaitGroup

	openedMu  sync.Mutex
	opened    []OpenedTicket
	openedN   int64
	openedSum int64
	truncated bool
	campaign  string
	farm      *farmState
}

func (c *Config) setDefaults() error {
	if c.Label == "" {
		c.Label = "shake"
	}
	if c.Users == 0 {
		c.Users = DefaultUsers
	}
	if c.Connections == 0 {
		c.Connections = DefaultConnections
	}
	if c.MaxInFlight == 0 {
		c.MaxInFlight = DefaultMaxInFlight
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.MaxPending == 0 {
		c.MaxPending = DefaultMaxPending
	}
	if c.MaxOpened == 0 {
		c.MaxOpened = DefaultMaxOpened
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	switch {
	case len(c.EdgeURLs) == 0:
		return fmt.Errorf("%w: no edge URL", ErrConfig)
	case len(c.SessionKey) != ticket.KeySize:
		return fmt.Errorf("%w: session key must be %d bytes", ErrConfig, ticket.KeySize)
	case c.Users < 1 || c.Users > MaxUsers:
		return fmt.Errorf("%w: users must be in 1..%d", ErrConfig, MaxUsers)
	case c.Rate < 0 || math.IsNaN(c.Rate) || math.IsInf(c.Rate, 0) || c.Rate > 1e7:
		return fmt.Errorf("%w: rate must be in 0..1e7 arrivals/s", ErrConfig)
	case c.Duration <= 0:
		return fmt.Errorf("%w: duration must be > 0", ErrConfig)
	case c.Ramp < 0 || c.Ramp > c.Duration:
		return fmt.Errorf("%w: ramp must be in 0..duration", ErrConfig)
	case c.Think < 0:
		return fmt.Errorf("%w: think time must be >= 0", ErrConfig)
	case c.Connections < 1 || c.Connections > 100000:
		return fmt.Errorf("%w: connections must be in 1..100000", ErrConfig)
	case c.MaxInFlight < 1 || c.MaxInFlight > 1<<20:
		return fmt.Errorf("%w: max in-flight must be in 1..%d", ErrConfig, 1<<20)
	case c.Timeout < 0 || c.MaxPending < 1 || c.MaxOpened < 0:
		return fmt.Errorf("%w: timeout, max pending and max opened must be positive", ErrConfig)
	case c.Farm != nil:
		return c.Farm.check()
	}
	return nil
}

// Run drives one bench run and returns its result. On cancellation it stops sending,
// waits for the requests in flight and returns what was reached together with the
// context's error (Result.Interrupted is set).
func Run(ctx context.Context, cfg Config) (*Result, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	r := &runner{cfg: cfg, wake: make(chan struct{}, 1)}
	for _, u := range cfg.EdgeURLs {
		t, err := newTarget(u, "/v1/shake", cfg.Connections, cfg.Timeout)
		if err != nil {
			return nil, err
		}
		r.edges = append(r.edges, t)
	}
	if cfg.VerifierURL != "" {
		t, err := newTarget(cfg.VerifierURL, "/v1/open", cfg.Connections, cfg.Timeout)
		if err != nil {
			return nil, err
		}
		r.verifier = t
	}
	if cfg.QueryURL != "" {
		t, err := newTarget(cfg.QueryURL, "/v1/packets", cfg.Connections, cfg.Timeout)
		if err != nil {
			return nil, err
		}
		r.query = t
	}
	if err := r.mintSessions(); err != nil {
		return nil, err
	}
	r.pending.init(cfg.MaxPending)
	r.jobs = make(chan job, cfg.MaxInFlight)

	r.start = time.Now()
	r.shake = newEndpoint("shake", cfg.EdgeURLs, r.start)
	if r.verifier != nil {
		r.open = newEndpoint("open", []string{cfg.VerifierURL}, r.start)
	}
	if r.query != nil {
		r.packets = newEndpoint("packets", []string{cfg.QueryURL}, r.start)
	}
	// The pool serves every request in open-loop mode and the follow-ups (opens,
	// retries) in closed-loop mode.
	for i := 0; i < cfg.MaxInFlight; i++ {
		r.wg.Add(1)
		go r.worker()
	}
	stopProgress := r.startProgress()

	var closed sync.WaitGroup
	loadCtx, cancelLoad := context.WithCancel(ctx)
	if cfg.Rate == 0 {
		for i := 0; i < cfg.Connections; i++ {
			closed.Add(1)
			go func(i int) {
				defer closed.Done()
				r.closedLoop(loadCtx, uint64(i))
			}(i)
		}
	}
	r.schedule(ctx, &closed)
	cancelLoad()
	close(r.jobs)
	r.wg.Wait()
	end := time.Now()
	stopProgress()

	res := r.result(end)
	if err := ctx.Err(); err != nil {
		res.Interrupted = true
		return res, fmt.Errorf("bench interrupted: %w", err)
	}
	return res, nil
}

// arrivalOffset returns when arrival i is due, measured from the start: a linear ramp
// from 0 to Rate over Ramp (the count of arrivals by time t is Rate*t²/(2*Ramp)), then
// a constant Rate.
func arrivalOffset(i int64, rate float64, ramp time.Duration) time.Duration {
	rs := ramp.Seconds()
	nRamp := rate * rs / 2
	fi := float64(i)
	var s float64
	if fi < nRamp {
		s = math.Sqrt(2 * fi * rs / rate)
	} else {
		s = rs + (fi-nRamp)/rate
	}
	return time.Duration(s * float64(time.Second))
}

// schedule is the dispatcher: it sends every arrival and every due follow-up to the
// worker pool at its intended time, then drains. It returns once nothing is in flight
// or pending (or ctx is cancelled and the in-flight requests have been answered).
func (r *runner) schedule(ctx context.Context, closed *sync.WaitGroup) {
	cfg := &r.cfg
	rng := rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x9e3779b97f4a7c15))
	openLoop := cfg.Rate > 0
	next, nextAt := int64(0), time.Duration(-1)
	if openLoop {
		nextAt = arrivalOffset(0, cfg.Rate, cfg.Ramp)
		if nextAt >= cfg.Duration {
			nextAt = -1
		}
	}
	closedDone := make(chan struct{})
	go func() { closed.Wait(); close(closedDone) }()
	loadOver := false
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		now := time.Now()
		off := now.Sub(r.start)
		farmAt := r.farmWave(now, off)
		for nextAt >= 0 && nextAt <= off {
			j := job{intended: r.start.Add(nextAt), uid: 1 + rng.Uint64N(uint64(cfg.Users)), kind: kindShake}
			r.arrivals.Add(1)
			r.dispatch(&j, now)
			next++
			nextAt = arrivalOffset(next, cfg.Rate, cfg.Ramp)
			if nextAt >= cfg.Duration {
				nextAt = -1
			}
		}
		var j job
		for r.pending.popDue(now, &j) {
			r.dispatch(&j, now)
		}
		if !loadOver {
			if openLoop {
				loadOver = nextAt < 0 && farmAt < 0
			} else {
				select {
				case <-closedDone:
					loadOver = true
				default:
				}
			}
		}
		if loadOver && r.inflight.Load() == 0 && r.pending.len() == 0 {
			select {
			case <-closedDone:
				return
			default:
			}
		}
		// Sleep until the next arrival or follow-up, a new follow-up, or a periodic
		// check (completions do not signal, so the drain polls).
		wait := 5 * time.Millisecond
		wait = untilNext(wait, nextAt, off)
		wait = untilNext(wait, farmAt, off)
		if at, ok := r.pending.nextDue(); ok {
			wait = min(wait, at.Sub(now))
		}
		if wait <= 0 {
			continue
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			// Stop sending; what is in flight finishes within its timeout.
			r.pending.clear()
			<-closedDone
			for r.inflight.Load() > 0 {
				time.Sleep(time.Millisecond)
			}
			return
		case <-r.wake:
		case <-timer.C:
		}
	}
}

// dispatch hands j to the worker pool, or counts it as dropped when MaxInFlight requests
// are already outstanding. Only the scheduler goroutine increments inflight, so the
// check and the increment cannot race with each other.
func (r *runner) dispatch(j *job, now time.Time) {
	ep := r.endpointOf(j.kind)
	ep.requests.Add(1)
	if r.inflight.Load() >= int64(r.cfg.MaxInFlight) {
		ep.errors[errDropped].Add(1)
		ep.record(now, now.Sub(j.intended), true)
		return
	}
	r.inflight.Add(1)
	r.jobs <- *j // never blocks: the channel holds MaxInFlight jobs
}

// endpointOf returns the endpoint that counts jobs of kind.
func (r *runner) endpointOf(kind uint8) *endpoint {
	switch kind {
	case kindOpen:
		return r.open
	case kindPackets:
		return r.packets
	}
	return r.shake
}

// worker serves jobs from the pool until the channel is closed.
func (r *runner) worker() {
	defer r.wg.Done()
	w := newClient(r)
	defer w.release()
	for j := range r.jobs {
		w.do(&j)
		r.inflight.Add(-1)
	}
}

// closedLoop is one closed-loop client: it shakes back to back until the load window
// ends, each request's intended time being the moment it is sent.
func (r *runner) closedLoop(ctx context.Context, id uint64) {
	w := newClient(r)
	defer w.release()
	rng := rand.New(rand.NewPCG(r.cfg.Seed+id+1, id))
	end := r.start.Add(r.cfg.Duration)
	var j job
	for ctx.Err() == nil {
		now := time.Now()
		if !now.Before(end) {
			return
		}
		j = job{intended: now, uid: 1 + rng.Uint64N(uint64(r.cfg.Users)), kind: kindShake}
		r.arrivals.Add(1)
		r.shake.requests.Add(1)
		w.do(&j)
	}
}

// followUp queues a request for later (an open after the think time, a retry).
func (r *runner) followUp(j *job, ep *endpoint) {
	if !r.pending.push(j) {
		ep.requests.Add(1)
		ep.errors[errQueueFull].Add(1)
		return
	}
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

func (r *runner) addOpened(t OpenedTicket, campaign []byte) {
	r.openedMu.Lock()
	r.openedN++
	r.openedSum += t.Amount
	if len(r.opened) < r.cfg.MaxOpened {
		r.opened = append(r.opened, t)
	} else {
		r.truncated = true
	}
	if r.isFarm(t.UID) {
		r.farm.opened.Add(1)
		r.farm.amounts.Add(t.Amount)
	}
	if r.campaign == "" && len(campaign) > 0 {
		r.campaign = string(campaign)
	}
	r.openedMu.Unlock()
}

func (r *runner) result(end time.Time) *Result {
	cfg := &r.cfg
	res := &Result{
		Label: cfg.Label, Mode: "open-loop", Rate: cfg.Rate, Ramp: cfg.Ramp, Duration: cfg.Duration,
		Think: cfg.Think, Users: cfg.Users, Connections: cfg.Connections, MaxInFlight: cfg.MaxInFlight,
		Started: r.start.UTC(), Elapsed: end.Sub(r.start), Arrivals: r.arrivals.Load(),
		Shake: r.shake.snapshot(end),
	}
	if cfg.Rate == 0 {
		res.Mode = "closed-loop"
	}
	if r.open != nil {
		o := r.open.snapshot(end)
		res.Open = &o
	}
	if r.packets != nil {
		p := r.packets.snapshot(end)
		res.Packets = &p
	}
	r.openedMu.Lock()
	res.Opened = append([]OpenedTicket{}, r.opened...)
	res.OpenedN, res.OpenedSum, res.OpenedTruncated, res.Campaign = r.openedN, r.openedSum, r.truncated, r.campaign
	r.openedMu.Unlock()
	r.farmResult(res)
	return res
}

// startProgress writes a status line every second to cfg.Progress; the returned
// function stops it and ends the line.
func (r *runner) startProgress() func() {
	if r.cfg.Progress == nil {
		return func() {}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tk := time.NewTicker(time.Second)
		defer tk.Stop()
		for {
			select {
			case <-done:
				fmt.Fprintln(r.cfg.Progress)
				return
			case <-tk.C:
				fmt.Fprintf(r.cfg.Progress, "\r\x1b[K%s", r.progressLine())
			}
		}
	}()
	return func() { close(done); wg.Wait() }
}

func (r *runner) progressLine() string {
	e := r.shake
	el := time.Since(r.start).Truncate(time.Second)
	s := fmt.Sprintf("[%s] %v/%v shake", r.cfg.Label, el, r.cfg.Duration)
	if sec, ok := e.lastSecond(); ok {
		s += fmt.Sprintf(" %d/s p99 %v", sec.Count, sec.P99)
	}
	s += fmt.Sprintf(" won %d miss %d retry %d", e.results[resWon].Load(), e.results[resMiss].Load(), e.results[resRetry].Load())
	if r.open != nil {
		s += fmt.Sprintf(" | opened %d", r.open.results[resOpened].Load())
	}
	var errs int64
	for _, ep := range []*endpoint{r.shake, r.open, r.packets} {
		if ep == nil {
			continue
		}
		for i := range ep.errors {
			errs += ep.errors[i].Load()
		}
	}
	return s + fmt.Sprintf(" | errors %d | in flight %d", errs, r.inflight.Load())
}
