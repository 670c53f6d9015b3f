//go:build chaos

package chaos

import (
	"encoding/json"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"shake/ticket"
)

// tap is a recording HTTP proxy between the bench and one server. The bench engine
// reports only the tickets it opened; the tap sees every answer, so it records every
// token an edge handed out and every open a client attempted, which is what the money
// checks need ("issued to two users", "posted but never opened"). It forwards requests
// unchanged; when the server is down it hangs up without answering, as the server's own
// dead socket would.
type tap struct {
	name     string
	ln       net.Listener
	srv      *fasthttp.Server
	hcs      []*fasthttp.HostClient // one per upstream
	route    func(req *fasthttp.Request) int
	onAnswer func(req *fasthttp.Request, resp *fasthttp.Response, err error, sent time.Time)
	// probe, when set, is called before a request is forwarded: it may send a copy of
	// it to another upstream (the misdirected-request checks) through the tap's clients.
	probe func(t *tap, req *fasthttp.Request, to int)
	done  chan struct{}
}

// startTap starts a tap in front of upstreams; route picks the upstream of a request
// (nil: the first), as a load balancer routing /v1/open by uid would.
func startTap(name string, upstreams []string, route func(*fasthttp.Request) int,
	onAnswer func(*fasthttp.Request, *fasthttp.Response, error, time.Time)) (*tap, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	t := &tap{name: name, ln: ln, onAnswer: onAnswer, route: route, done: make(chan struct{})}
	for _, u := range upstreams {
		t.hcs = append(t.hcs, &fasthttp.HostClient{Addr: u, MaxConns: 512, ReadTimeout: 15 * time.Second,
			WriteTimeout: 15 * time.Second, MaxIdleConnDuration: 10 * time.Second,
			DisableHeaderNamesNormalizing: true, DisablePathNormalizing: true})
	}
	t.srv = &fasthttp.Server{Handler: t.handle, Name: "chaos-tap", ReadTimeout: 30 * time.Second,
		WriteTimeout: 30 * time.Second, DisableHeaderNamesNormalizing: true, NoDefaultContentType: true,
		NoDefaultServerHeader: true, NoDefaultDate: true}
	go func() { defer close(t.done); _ = t.srv.Serve(ln) }()
	return t, nil
}

func (t *tap) url() string { return "http://" + t.ln.Addr().String() }

func (t *tap) close() {
	_ = t.srv.Shutdown()
	<-t.done
	for _, hc := range t.hcs {
		hc.CloseIdleConnections()
	}
}

func (t *tap) handle(ctx *fasthttp.RequestCtx) {
	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	ctx.Request.CopyTo(req)
	to := 0
	if t.route != nil {
		to = t.route(req)
	}
	if t.probe != nil {
		t.probe(t, req, to)
	}
	sent := time.Now()
	err := t.hcs[to].DoTimeout(req, resp, 15*time.Second)
	t.onAnswer(req, resp, err, sent)
	if err != nil {
		// Hang up without an answer: the client sees a transport error, not an HTTP
		// status that the real server would never have sent.
		ctx.HijackSetNoResponse(true)
		ctx.Hijack(func(net.Conn) {})
		return
	}
	resp.CopyTo(&ctx.Response)
}

// issue is one won token an edge handed out.
type issue struct {
	edge     string
	sessUID  uint64 // the uid of the session that asked
	at       int64  // unix nanoseconds: the tap got the answer
	tok      ticket.TicketToken
	decodeOK bool
}

// openAttempt is what the verifier tap saw for one ticket.
type openAttempt struct {
	uid      uint64 // session uid of the first attempt
	otherUID bool   // attempted by another session too
	ok200    int
	amount   int64 // amount in the 200 answer
	other    map[string]int
}

// ledgerOfTruth collects what the taps saw, for the final checks.
type ledgerOfTruth struct {
	c  *campaign
	mu sync.Mutex

	issues       []issue
	undecodable  []string // won answers whose token did not open
	shakeStatus  map[int]int
	shakeErrs    int
	attempts     map[uint64]*openAttempt
	openStatus   map[int]int
	openErrs     int
	badOpenBody  int
	badShakeBody int
	verifiers    int      // the uid-sharded verifiers: uid mod verifiers picks one
	wrong200     []string // 200 answers naming another ticket or amount than the token's

	// Every answer with its times, for the switch checks.
	shakes map[string][]shakeEv // by edge name
	opens  []openEv
	probes []probeEv
	// held are the opens answered 503 with a message (opens paused) or 422 revoked:
	// docs/switches.md says those tokens stay valid, so the switch faults open some again after
	// their release.
	held []heldOpen
}

// heldOpen is an open refused by a switch, with what it takes to send it again.
type heldOpen struct {
	at    int64 // unix nanoseconds: the answer came back
	shard int
	code  string // "unavailable" (opens paused) or "revoked"
	auth  []byte
	body  []byte
}

// shakeEv is one edge answer: when the tap forwarded the request and got the answer.
type shakeEv struct {
	sent, recv int64 // unix nanoseconds
	status     int   // 0: no answer (transport error)
	result     string
	retryHdr   string // the Retry-After header
	retryMs    int64  // retry_after_ms of a 429 body, -1 without
	nextNull   bool   // a closed answer's next_round_at is null
}

// openEv is one verifier answer, with the token's shard and the verifier it went to.
type openEv struct {
	sent, recv int64
	verifier   int
	status     int    // 0: no answer
	code       string // the error code, or the result
	message    string // the message of a paused open's 503
	shard      int    // -1: not a campaign token
}

// probeEv is a copy of an open sent to a verifier that does not own the uid.
type probeEv struct {
	sent, recv int64
	verifier   int // the wrong verifier
	status     int
	body       string
}

func newLedgerOfTruth(c *campaign) *ledgerOfTruth {
	return &ledgerOfTruth{c: c, shakeStatus: map[int]int{}, attempts: map[uint64]*openAttempt{},
		openStatus: map[int]int{}, shakes: map[string][]shakeEv{}}
}

func (l *ledgerOfTruth) sessionUID(req *fasthttp.Request) uint64 {
	st, ok := ticket.BearerToken(req.Header.Peek(fasthttp.HeaderAuthorization))
	if !ok {
		return 0
	}
	uid, err := l.c.sess.Verify(st, time.Now().Unix())
	if err != nil {
		return 0
	}
	return uid
}

// onShake records one edge answer.
func (l *ledgerOfTruth) onShake(edge string) func(*fasthttp.Request, *fasthttp.Response, error, time.Time) {
	return func(req *fasthttp.Request, resp *fasthttp.Response, err error, sent time.Time) {
		ev := shakeEv{sent: sent.UnixNano(), recv: time.Now().UnixNano(), retryMs: -1}
		if err != nil {
			l.mu.Lock()
			l.shakeErrs++
			l.shakes[edge] = append(l.shakes[edge], ev)
			l.mu.Unlock()
			return
		}
		status := resp.StatusCode()
		var won struct {
			Result       string  `json:"result"`
			Token        string  `json:"token"`
			RetryAfterMs *int64  `json:"retry_after_ms"`
			NextRoundAt  *string `json:"next_round_at"`
		}
		ev.status = status
		ev.retryHdr = string(resp.Header.Peek(fasthttp.HeaderRetryAfter))
		if status == fasthttp.StatusTooManyRequests && json.Unmarshal(resp.Body(), &won) == nil {
			ev.result = won.Result
			if won.RetryAfterMs != nil {
				ev.retryMs = *won.RetryAfterMs
			}
		}
		var is *issue
		bad := false
		if status == fasthttp.StatusOK {
			if json.Unmarshal(resp.Body(), &won) != nil {
				bad = true
			} else if won.Result == "won" {
				is = &issue{edge: edge, sessUID: l.sessionUID(req), at: ev.recv}
				scratch := make([]byte, 0, ticket.TokenRawLen)
				is.decodeOK = l.c.opener.Open(&is.tok, []byte(won.Token), scratch) == nil
			}
		}
		if status == fasthttp.StatusOK && !bad {
			ev.result, ev.nextNull = won.Result, won.NextRoundAt == nil
		}
		l.mu.Lock()
		defer l.mu.Unlock()
		l.shakes[edge] = append(l.shakes[edge], ev)
		l.shakeStatus[status]++
		if bad {
			l.badShakeBody++
		}
		if is != nil {
			if is.decodeOK {
				l.issues = append(l.issues, *is)
			} else {
				l.undecodable = append(l.undecodable, fmt.Sprintf("%s: %q", edge, won.Token))
			}
		}
	}
}

// onOpen records one verifier answer (or failure) against the ticket it was for.
func (l *ledgerOfTruth) onOpen(req *fasthttp.Request, resp *fasthttp.Response, err error, sent time.Time) {
	var body struct {
		Token string `json:"token"`
	}
	var tok ticket.TicketToken
	known := json.Unmarshal(req.Body(), &body) == nil &&
		l.c.opener.Open(&tok, []byte(body.Token), make([]byte, 0, ticket.TokenRawLen)) == nil
	uid := l.sessionUID(req)
	outcome := "transport"
	var ans struct {
		Result  string `json:"result"`
		Ticket  string `json:"ticket"`
		Amount  int64  `json:"amount"`
		Error   string `json:"error"`
		Message string `json:"message"`
	}
	ev := openEv{sent: sent.UnixNano(), recv: time.Now().UnixNano(), verifier: int(uid % uint64(l.verifiers)), shard: -1}
	if known {
		ev.shard = int(tok.Shard)
	}
	status := 0
	if err == nil {
		status = resp.StatusCode()
		outcome = fmt.Sprint(status)
		if json.Unmarshal(resp.Body(), &ans) != nil && status == fasthttp.StatusOK {
			status = -1
		}
		ev.status, ev.code, ev.message = resp.StatusCode(), ans.Error+ans.Result, ans.Message
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.opens = append(l.opens, ev)
	if known && ((ev.status == fasthttp.StatusServiceUnavailable && ev.message != "") ||
		(ev.status == fasthttp.StatusUnprocessableEntity && ev.code == "revoked")) {
		l.held = append(l.held, heldOpen{at: ev.recv, shard: ev.shard, code: ev.code,
			auth: append([]byte(nil), req.Header.Peek(fasthttp.HeaderAuthorization)...), body: append([]byte(nil), req.Body()...)})
	}
	if err != nil {
		l.openErrs++
	} else {
		l.openStatus[status]++
	}
	if status == -1 {
		l.badOpenBody++
	}
	if !known {
		return
	}
	a := l.attempts[tok.Ticket]
	if a == nil {
		a = &openAttempt{uid: uid, other: map[string]int{}}
		l.attempts[tok.Ticket] = a
	} else if a.uid != uid {
		a.otherUID = true
	}
	if status == fasthttp.StatusOK {
		if ans.Result != "opened" || ans.Ticket != fmt.Sprint(tok.Ticket) || ans.Amount != int64(tok.Amount) {
			l.wrong200 = append(l.wrong200, fmt.Sprintf("token of ticket %d amount %d answered %s", tok.Ticket, tok.Amount, resp.Body()))
			return
		}
		a.ok200++
		a.amount = ans.Amount
	} else {
		a.other[outcome]++
	}
}

// routeUID routes an open to the verifier that owns its session's uid (uid mod V), as
// the load balancer does; a request without a valid session goes to the first.
func (l *ledgerOfTruth) routeUID(req *fasthttp.Request) int {
	return int(l.sessionUID(req) % uint64(l.verifiers))
}

// probeMisdirected sends every 16th open also to a verifier that does not own its uid
// (before the real one, so that the probe can never be the first open of the ticket)
// and records the answer: it must be 421 naming that verifier's shard, or 503 while that
// verifier rebuilds or its opens are paused; never 200.
func (l *ledgerOfTruth) probeMisdirected() func(t *tap, req *fasthttp.Request, to int) {
	var n atomic.Uint64
	return func(t *tap, req *fasthttp.Request, to int) {
		if len(t.hcs) < 2 || n.Add(1)%16 != 0 {
			return
		}
		wrong := (to + 1 + int(n.Load()/16)%(len(t.hcs)-1)) % len(t.hcs)
		resp := fasthttp.AcquireResponse()
		defer fasthttp.ReleaseResponse(resp)
		ev := probeEv{sent: time.Now().UnixNano(), verifier: wrong}
		if err := t.hcs[wrong].DoTimeout(req, resp, 5*time.Second); err == nil {
			ev.status, ev.body = resp.StatusCode(), string(resp.Body())
		}
		ev.recv = time.Now().UnixNano()
		l.mu.Lock()
		l.probes = append(l.probes, ev)
		l.mu.Unlock()
	}
}
