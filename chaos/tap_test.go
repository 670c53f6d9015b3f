//go:build chaos

package chaos

import (
	"encoding/json"
	"fmt"
	"net"
	"sync"
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
	upstream string
	ln       net.Listener
	srv      *fasthttp.Server
	hc       *fasthttp.HostClient
	onAnswer func(req *fasthttp.Request, resp *fasthttp.Response, err error)
	done     chan struct{}
}

func startTap(name, upstream string, onAnswer func(*fasthttp.Request, *fasthttp.Response, error)) (*tap, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	t := &tap{name: name, upstream: upstream, ln: ln, onAnswer: onAnswer, done: make(chan struct{}),
		hc: &fasthttp.HostClient{Addr: upstream, MaxConns: 512, ReadTimeout: 15 * time.Second,
			WriteTimeout: 15 * time.Second, MaxIdleConnDuration: 10 * time.Second,
			DisableHeaderNamesNormalizing: true, DisablePathNormalizing: true}}
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
	t.hc.CloseIdleConnections()
}

func (t *tap) handle(ctx *fasthttp.RequestCtx) {
	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	ctx.Request.CopyTo(req)
	err := t.hc.DoTimeout(req, resp, 15*time.Second)
	t.onAnswer(req, resp, err)
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
	wrong200     []string // 200 answers naming another ticket or amount than the token's
}

func newLedgerOfTruth(c *campaign) *ledgerOfTruth {
	return &ledgerOfTruth{c: c, shakeStatus: map[int]int{}, attempts: map[uint64]*openAttempt{},
		openStatus: map[int]int{}}
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
func (l *ledgerOfTruth) onShake(edge string) func(*fasthttp.Request, *fasthttp.Response, error) {
	return func(req *fasthttp.Request, resp *fasthttp.Response, err error) {
		if err != nil {
			l.mu.Lock()
			l.shakeErrs++
			l.mu.Unlock()
			return
		}
		status := resp.StatusCode()
		var won struct {
			Result string `json:"result"`
			Token  string `json:"token"`
		}
		var is *issue
		bad := false
		if status == fasthttp.StatusOK {
			if json.Unmarshal(resp.Body(), &won) != nil {
				bad = true
			} else if won.Result == "won" {
				is = &issue{edge: edge, sessUID: l.sessionUID(req)}
				scratch := make([]byte, 0, ticket.TokenRawLen)
				is.decodeOK = l.c.opener.Open(&is.tok, []byte(won.Token), scratch) == nil
			}
		}
		l.mu.Lock()
		defer l.mu.Unlock()
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
func (l *ledgerOfTruth) onOpen(req *fasthttp.Request, resp *fasthttp.Response, err error) {
	var body struct {
		Token string `json:"token"`
	}
	var tok ticket.TicketToken
	known := json.Unmarshal(req.Body(), &body) == nil &&
		l.c.opener.Open(&tok, []byte(body.Token), make([]byte, 0, ticket.TokenRawLen)) == nil
	uid := l.sessionUID(req)
	outcome := "transport"
	var ans struct {
		Result string `json:"result"`
		Ticket string `json:"ticket"`
		Amount int64  `json:"amount"`
	}
	status := 0
	if err == nil {
		status = resp.StatusCode()
		outcome = fmt.Sprint(status)
		if status == fasthttp.StatusOK && json.Unmarshal(resp.Body(), &ans) != nil {
			status = -1
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
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
