package bench

import (
	"errors"
	"net"
	"os"
	"time"

	"github.com/valyala/fasthttp"

	"shake/ticket"
)

// client is one worker's request state, reused for every request it makes so that the
// steady state allocates nothing.
type client struct {
	r    *runner
	req  *fasthttp.Request
	resp *fasthttp.Response
	auth []byte
	body []byte
}

var (
	headerAuthorization = []byte("Authorization")
	contentTypeJSON     = []byte("application/json")
	bearerPrefix        = "Bearer "
)

func newClient(r *runner) *client {
	return &client{r: r, req: fasthttp.AcquireRequest(), resp: fasthttp.AcquireResponse(),
		auth: make([]byte, 0, len(bearerPrefix)+ticket.MaxSessionLen),
		body: make([]byte, 0, 16+MaxTokenLen)}
}

func (c *client) release() {
	fasthttp.ReleaseRequest(c.req)
	fasthttp.ReleaseResponse(c.resp)
}

// do makes the request j describes and accounts for its answer.
func (c *client) do(j *job) {
	r := c.r
	var t *target
	ep := r.endpointOf(j.kind)
	switch j.kind {
	case kindOpen:
		t = r.verifier
	case kindPackets:
		t = r.query
	default:
		t = r.edges[int(r.rr.Add(1)%uint64(len(r.edges)))]
	}
	req := c.req
	req.Reset()
	if j.kind == kindPackets {
		req.Header.SetMethod(fasthttp.MethodGet)
	} else {
		req.Header.SetMethod(fasthttp.MethodPost)
	}
	req.SetRequestURI(t.uri)
	c.auth = append(append(c.auth[:0], bearerPrefix...), r.session(j.uid)...)
	req.Header.SetCanonical(headerAuthorization, c.auth)
	if j.kind == kindOpen {
		c.body = append(c.body[:0], `{"token":"`...)
		c.body = append(c.body, j.tok[:j.tokLen]...)
		c.body = append(c.body, `"}`...)
		req.Header.SetContentTypeBytes(contentTypeJSON)
		req.SetBodyRaw(c.body)
	}
	resp := c.resp
	resp.Reset()
	err := t.hc.DoDeadline(req, resp, time.Now().Add(r.cfg.Timeout))
	now := time.Now()
	lat := now.Sub(j.intended)
	if err != nil {
		kind := classifyErr(err)
		ep.errors[kind].Add(1)
		// A timeout is waiting the user really did; a refused connection is not.
		if kind == errTimeout {
			ep.record(now, lat, true)
		}
		return
	}
	status := resp.StatusCode()
	if status > 0 && status < len(ep.status) {
		ep.status[status].Add(1)
	}
	body := resp.Body()
	ok := true
	switch j.kind {
	case kindShake:
		ok = c.shakeAnswer(j, status, body, now)
	case kindOpen:
		ok = c.openAnswer(j, status, body, now)
	default:
		ok = c.packetsAnswer(j, status, body, now)
	}
	ep.record(now, lat, !ok)
}

// shakeAnswer classifies a /v1/shake answer; it returns false for an error.
func (c *client) shakeAnswer(j *job, status int, body []byte, now time.Time) bool {
	r := c.r
	ep := r.shake
	switch status {
	case fasthttp.StatusOK:
		res, _ := jsonField(body, keyResult)
		switch string(res) {
		case "won":
			tok, ok := jsonField(body, keyToken)
			if !ok || len(tok) == 0 || len(tok) > MaxTokenLen {
				ep.errors[errBadResponse].Add(1)
				return false
			}
			ep.results[resWon].Add(1)
			ep.recordResult(now, resWon, 0)
			if r.isFarm(j.uid) {
				r.farm.won.Add(1)
			}
			if r.verifier != nil {
				o := job{intended: now.Add(r.cfg.Think), uid: j.uid, kind: kindOpen, tokLen: uint8(len(tok))}
				copy(o.tok[:], tok)
				r.followUp(&o, r.open)
			}
		case "miss":
			ep.results[resMiss].Add(1)
			ep.recordResult(now, resMiss, 0)
		case "closed":
			ep.results[resClosed].Add(1)
			ep.recordResult(now, resClosed, 0)
		default:
			ep.errors[errBadResponse].Add(1)
			return false
		}
		return true
	case fasthttp.StatusTooManyRequests:
		ep.results[resRetry].Add(1)
		ep.recordResult(now, resRetry, 0)
		if !r.cfg.NoRetry && !j.retry {
			c.retryLater(j, body, now, ep)
		}
		return true
	}
	c.errorAnswer(ep, body)
	return false
}

// openAnswer classifies a /v1/open answer; it returns false for an error.
func (c *client) openAnswer(j *job, status int, body []byte, now time.Time) bool {
	r := c.r
	ep := r.open
	if status == fasthttp.StatusOK {
		res, _ := jsonField(body, keyResult)
		id, ok1 := jsonField(body, keyTicket)
		amt, ok2 := jsonField(body, keyAmount)
		tid, ok3 := ticket.ParseUint(id)
		amount, ok4 := parseInt(amt)
		if string(res) != "opened" || !ok1 || !ok2 || !ok3 || !ok4 || amount > ticket.MaxTicketAmount {
			ep.errors[errBadResponse].Add(1)
			return false
		}
		ep.results[resOpened].Add(1)
		ep.recordResult(now, resOpened, amount)
		camp, _ := jsonField(body, keyCampaign)
		r.addOpened(OpenedTicket{Ticket: tid, UID: j.uid, Amount: amount}, camp)
		if r.query != nil {
			// The user looks at "my red packets" after opening, as the app would.
			q := job{intended: now.Add(r.cfg.Think), uid: j.uid, kind: kindPackets}
			r.followUp(&q, r.packets)
		}
		return true
	}
	c.errorAnswer(ep, body)
	if status == fasthttp.StatusServiceUnavailable && !r.cfg.NoRetry && !j.retry {
		// docs/api.md: the claim could be made durable nowhere; retry with the same token.
		c.retryLater(j, body, now, ep)
	}
	return false
}

// packetsAnswer classifies a /v1/packets answer; it returns false for an error. A 503
// (the ledger is slow or away) is retried once after its retry_after_ms.
func (c *client) packetsAnswer(j *job, status int, body []byte, now time.Time) bool {
	ep := c.r.packets
	if status == fasthttp.StatusOK {
		if _, ok := jsonField(body, keyUID); !ok {
			ep.errors[errBadResponse].Add(1)
			return false
		}
		ep.results[resPage].Add(1)
		return true
	}
	c.errorAnswer(ep, body)
	if status == fasthttp.StatusServiceUnavailable && !c.r.cfg.NoRetry && !j.retry {
		c.retryLater(j, body, now, ep)
	}
	return false
}

// retryLater queues j again after the server's retry_after_ms hint (default 100 ms).
func (c *client) retryLater(j *job, body []byte, now time.Time, ep *endpoint) {
	after := 100 * time.Millisecond
	if v, ok := jsonField(body, keyRetryAfterMS); ok {
		if n, ok := parseInt(v); ok {
			after = min(time.Duration(n)*time.Millisecond, maxRetryAfter)
		}
	}
	n := *j
	n.retry = true
	n.intended = now.Add(after)
	c.r.followUp(&n, ep)
}

// errorAnswer counts an error answer by its JSON error code.
func (c *client) errorAnswer(ep *endpoint, body []byte) {
	code, ok := jsonField(body, keyError)
	if !ok {
		ep.errors[errHTTP].Add(1)
		return
	}
	ep.errors[errorKind(code)].Add(1)
}

// classifyErr maps a client error to an error kind.
func classifyErr(err error) int {
	var ne net.Error
	var oe *net.OpError
	switch {
	case errors.Is(err, fasthttp.ErrTimeout), errors.Is(err, fasthttp.ErrNoFreeConns),
		errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, fasthttp.ErrDialTimeout):
		return errTimeout
	case errors.As(err, &oe) && oe.Op == "dial":
		return errConnect
	case errors.As(err, &ne) && ne.Timeout():
		return errTimeout
	}
	return errTransport
}
