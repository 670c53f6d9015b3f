package edge

import (
	"sync"
	"time"

	"github.com/valyala/fasthttp"

	"shake/internal/obs"
	"shake/ticket"
)

// ShakePath is the one endpoint the edge serves besides /healthz and /readyz (the admin
// endpoints, /metrics among them, are on the admin listener).
const ShakePath = "/v1/shake"

// Fixed response bodies, built once.
var (
	bodyMiss         = []byte(`{"result":"miss"}`)
	bodyClosedNoNext = []byte(`{"result":"closed","next_round_at":null}`)
	// bodyPaused tells an app the event is paused, not over.
	bodyPaused       = []byte(`{"result":"closed","paused":true,"next_round_at":null}`)
	bodyUnauthorized = []byte(`{"error":"unauthorized"}`)
	bodyTooLarge     = []byte(`{"error":"too_large"}`)
	headerRetryAfter = []byte(fasthttp.HeaderRetryAfter)
	headerAuth       = fasthttp.HeaderAuthorization
)

// respBufLen holds the longest answer: the won JSON with a token (TokenLen) plus the
// sealer's scratch (TokenRawLen), a 32-byte campaign and a timestamp.
const respBufLen = 512

var respPool = sync.Pool{New: func() any { return new([respBufLen]byte) }}

// handle serves POST /v1/shake. It allocates nothing on any path: answers are appended
// into a stack buffer that fasthttp copies into its pooled response body.
func (s *Server) handle(ctx *fasthttp.RequestCtx) {
	if string(ctx.Path()) != ShakePath {
		obs.NotFound(ctx)
		return
	}
	if !ctx.IsPost() {
		s.m.invalid.Inc()
		obs.MethodNotAllowed(ctx, fasthttp.MethodPost)
		return
	}
	if len(ctx.PostBody()) != 0 {
		// The shake carries nothing but its session: any body is too large.
		s.m.invalid.Inc()
		obs.WriteJSON(ctx, fasthttp.StatusRequestEntityTooLarge, bodyTooLarge)
		return
	}
	// Every answer from here on is given under one version of the switches.
	sw, epoch := s.sw.Enter()
	defer s.sw.Exit(epoch)
	// Shedding must cost next to nothing: one atomic, a prebuilt body.
	n := s.inflight.Add(1)
	defer s.inflight.Add(-1)
	if n > s.maxInFlight || s.disp.stopping.Load() {
		s.m.retry.Inc()
		s.writeRetry(ctx)
		return
	}
	if sw.early && s.early(ctx, sw) {
		return
	}
	start := time.Now()
	now := start
	if !s.realTime {
		now = s.now()
	}
	tok, ok := ticket.BearerToken(ctx.Request.Header.Peek(headerAuth))
	if !ok {
		s.unauthorized(ctx)
		return
	}
	var sess ticket.Session
	if err := s.sess.VerifySession(tok, now.Unix(), &sess); err != nil {
		s.unauthorized(ctx)
		return
	}
	s.shake(ctx, &sess, now, sw)
	s.m.latency.ObserveDuration(time.Since(start))
}

// shake decides and writes the answer for an authenticated session.
func (s *Server) shake(ctx *fasthttp.RequestCtx, sess *ticket.Session, now time.Time, sw *edgeSwitches) {
	ns := now.UnixNano()
	r, next := s.disp.roundAt(ns)
	if r == nil {
		s.m.closed.Inc()
		if next == nil {
			obs.WriteJSON(ctx, fasthttp.StatusOK, bodyClosedNoNext)
			return
		}
		var buf [96]byte
		b := append(buf[:0], `{"result":"closed","next_round_at":"`...)
		b = append(b, next.startAt...)
		b = append(b, `"}`...)
		obs.WriteJSON(ctx, fasthttp.StatusOK, b)
		return
	}
	if s.roundClosed(ctx, sw, r) {
		return
	}
	per, pns := sw.per, sw.paceTime(r, ns)
	// Look before touching the per-user table, so users who only meet an empty or
	// paced pool leave no entry behind.
	if !s.disp.available(r, pns) {
		s.m.miss.Inc()
		obs.WriteJSON(ctx, fasthttp.StatusOK, bodyMiss)
		return
	}
	devKey, ok := s.admit(ctx, sess, r.index, per)
	if !ok {
		return
	}
	pos, res := s.disp.take(r, pns)
	if res != takeWon {
		s.giveBack(sess, r.index, per, devKey)
		if res == takeRetry {
			s.m.retry.Inc()
			s.writeRetry(ctx)
			return
		}
		s.m.miss.Inc()
		obs.WriteJSON(ctx, fasthttp.StatusOK, bodyMiss)
		return
	}
	idx := r.off + pos
	// Second check of the amount invariant, at the point of issue (the first ran at
	// load). A failure here is memory corruption: the position is spent, not issued.
	if idx >= uint64(len(s.records)) || s.records[idx].Amount > ticket.MaxTicketAmount {
		s.m.internal.Inc()
		s.log.Error("BUG: ticket record out of range", "ticket", r.first+pos)
		obs.WriteError(ctx, fasthttp.StatusInternalServerError, "internal")
		return
	}
	rec := &s.records[idx]
	nowSec := now.Unix()
	exp := min(nowSec+s.ttl, s.expiresCap)
	t := ticket.TicketToken{
		Ticket: r.first + pos, UID: sess.UID, Amount: rec.Amount, MAC: rec.MAC,
		Round: uint16(r.index), IssuedAt: uint32(nowSec), ExpiresAt: uint32(exp),
	}
	// The sealer hands its output to the AEAD through an interface, so a stack buffer
	// would escape: take a pooled one instead.
	buf := respPool.Get().(*[respBufLen]byte)
	defer respPool.Put(buf)
	b := append(buf[:0], `{"result":"won","token":"`...)
	b = s.sealer.Seal(b, &t)
	b = append(b, `","campaign":"`...)
	b = append(b, s.hdr.Campaign...) // campaign ids need no JSON escaping
	b = append(b, `","expires_at":"`...)
	b = time.Unix(exp, 0).UTC().AppendFormat(b, time.RFC3339)
	b = append(b, `"}`...)
	s.m.won.Inc()
	obs.WriteJSON(ctx, fasthttp.StatusOK, b)
}

func (s *Server) unauthorized(ctx *fasthttp.RequestCtx) {
	s.m.unauthorized.Inc()
	obs.WriteJSON(ctx, fasthttp.StatusUnauthorized, bodyUnauthorized)
}

func (s *Server) writeRetry(ctx *fasthttp.RequestCtx) {
	ctx.Response.Header.SetCanonical(headerRetryAfter, s.retryAfter)
	obs.WriteJSON(ctx, fasthttp.StatusTooManyRequests, s.retryBody)
}
