package query

import (
	"bytes"
	"context"
	"strconv"
	"sync"
	"time"

	"github.com/valyala/fasthttp"

	"shake/internal/obs"
	"shake/ticket"
)

// The endpoints.
const (
	PacketsPath     = "/v1/packets"
	CampaignsPrefix = "/v1/campaigns/"
)

// result is the outcome of one request: it picks the status, the body and the metric.
type result uint8

const (
	resOK result = iota
	resUnauthorized
	resBadRequest
	resBadCursor
	resNotFound
	resMethod
	resTooLarge
	resUnavailable
	numResults
)

var resultNames = [numResults]string{"ok", "unauthorized", "bad_request", "bad_cursor", "not_found",
	"method_not_allowed", "too_large", "unavailable"}

var resultStatus = [numResults]int{200, 401, 400, 400, 404, 405, 413, 503}

var (
	bodyInternal = []byte(`{"error":"internal"}`)
	campaignsB   = []byte(CampaignsPrefix)
	argCampaign  = []byte("campaign")
	argBefore    = []byte("before")
)

// pageBuf is one request's scratch: the rows and the JSON, reused across requests.
type pageBuf struct {
	rows []Packet
	out  []byte
}

var pagePool = sync.Pool{New: func() any {
	return &pageBuf{rows: make([]Packet, 0, PageSize+1), out: make([]byte, 0, 8192)}
}}

// handle routes /v1/packets and /v1/campaigns/ID; obs.Server serves the rest.
func (s *Server) handle(ctx *fasthttp.RequestCtx) {
	path := ctx.Path()
	var counters *[numResults]*obs.Counter
	switch {
	case string(path) == PacketsPath:
		counters = &s.m.packets
	case bytes.HasPrefix(path, campaignsB):
		counters = &s.m.campaigns
	default:
		s.m.other.Inc()
		obs.NotFound(ctx)
		return
	}
	if !ctx.IsGet() {
		counters[resMethod].Inc()
		obs.MethodNotAllowed(ctx, fasthttp.MethodGet)
		return
	}
	if len(ctx.Request.Body()) != 0 {
		counters[resTooLarge].Inc()
		obs.WriteError(ctx, fasthttp.StatusRequestEntityTooLarge, "too_large")
		return
	}
	n := s.inflight.Add(1)
	defer s.inflight.Add(-1)
	if n > int64(s.cfg.MaxInFlight) {
		counters[resUnavailable].Inc()
		s.writeUnavailable(ctx)
		return
	}
	start := time.Now()
	var r result
	if counters == &s.m.packets {
		r = s.packets(ctx)
	} else {
		r = s.campaign(ctx, path[len(campaignsB):])
	}
	counters[r].Inc()
	s.m.latency.ObserveDuration(time.Since(start))
}

func (s *Server) writeError(ctx *fasthttp.RequestCtx, r result) {
	if r == resUnavailable {
		s.writeUnavailable(ctx)
		return
	}
	obs.WriteError(ctx, resultStatus[r], resultNames[r])
}

func (s *Server) writeUnavailable(ctx *fasthttp.RequestCtx) {
	ctx.Response.Header.Set(fasthttp.HeaderRetryAfter, s.retryAfter)
	obs.WriteJSON(ctx, fasthttp.StatusServiceUnavailable, s.retryBody)
}

// packets serves GET /v1/packets[?campaign=ID][&before=CURSOR].
func (s *Server) packets(ctx *fasthttp.RequestCtx) result {
	tok, ok := ticket.BearerToken(ctx.Request.Header.Peek(fasthttp.HeaderAuthorization))
	if !ok {
		s.writeError(ctx, resUnauthorized)
		return resUnauthorized
	}
	uid, err := s.sess.Verify(tok, s.now().Unix())
	if err != nil {
		s.writeError(ctx, resUnauthorized)
		return resUnauthorized
	}
	// Strict arguments: each known one at most once, nothing else. A typo such as
	// "campain=" must be an error, not a silently unfiltered page.
	var campaign, before []byte
	var nCamp, nBefore, nOther int
	ctx.QueryArgs().VisitAll(func(k, v []byte) {
		switch {
		case bytes.Equal(k, argCampaign):
			campaign, nCamp = v, nCamp+1
		case bytes.Equal(k, argBefore):
			before, nBefore = v, nBefore+1
		default:
			nOther++
		}
	})
	if nOther > 0 || nCamp > 1 || nBefore > 1 || (nCamp == 1 && !ticket.ValidCampaign(string(campaign))) {
		s.writeError(ctx, resBadRequest)
		return resBadRequest
	}
	filter := string(campaign) // "" when absent; campaign ids are short
	var pos *Position
	if nBefore == 1 {
		p, err := s.cursors.parseCursor(before, uid, filter)
		if err != nil {
			s.writeError(ctx, resBadCursor)
			return resBadCursor
		}
		pos = &p
	}
	pb := pagePool.Get().(*pageBuf)
	defer pagePool.Put(pb)
	t0 := time.Now()
	rows, err := s.rd.Packets(t0.Add(s.cfg.DBTimeout), uid, filter, pos, PageSize+1, pb.rows[:0])
	s.m.dbLatency.ObserveDuration(time.Since(t0))
	if err != nil {
		s.m.dbErrors.Inc()
		s.log.Warn("ledger read failed", "endpoint", "packets", "err", err)
		s.writeError(ctx, resUnavailable)
		return resUnavailable
	}
	pb.rows = rows[:0]
	more := len(rows) > PageSize
	if more {
		rows = rows[:PageSize]
	}
	b := append(pb.out[:0], `{"uid":"`...)
	b = strconv.AppendUint(b, uid, 10)
	b = append(b, `","packets":[`...)
	for i := range rows {
		p := &rows[i]
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"campaign":"`...)
		b = obs.AppendJSONString(b, p.Campaign)
		b = append(b, `","ticket":"`...)
		b = strconv.AppendUint(b, p.Ticket, 10)
		b = append(b, `","amount":`...)
		b = strconv.AppendInt(b, p.Amount, 10)
		b = append(b, `,"currency":"`...)
		b = obs.AppendJSONString(b, p.Currency)
		b = append(b, `","settled_at":"`...)
		b = time.UnixMicro(p.SettledAt).UTC().AppendFormat(b, time.RFC3339)
		b = append(b, `"}`...)
	}
	b = append(b, `],"next":`...)
	if more {
		last := &rows[len(rows)-1]
		b = append(b, '"')
		b = s.cursors.appendCursor(b, &Position{SettledAt: last.SettledAt, Campaign: last.Campaign, Ticket: last.Ticket}, uid, filter)
		b = append(b, '"')
	} else {
		b = append(b, "null"...)
	}
	b = append(b, '}')
	pb.out = b
	obs.WriteJSON(ctx, fasthttp.StatusOK, b)
	return resOK
}

// campaign serves GET /v1/campaigns/ID from the page cache.
func (s *Server) campaign(ctx *fasthttp.RequestCtx, id []byte) result {
	if ctx.QueryArgs().Len() > 0 || !ticket.ValidCampaign(string(id)) {
		s.writeError(ctx, resBadRequest)
		return resBadRequest
	}
	wctx, cancel := context.WithTimeout(context.Background(), s.cfg.DBTimeout)
	ans, hit, ok := s.pages.get(wctx, id, s.cfg.DBTimeout)
	cancel()
	if hit {
		s.m.hits.Inc()
	}
	if !ok {
		s.writeError(ctx, resUnavailable)
		return resUnavailable
	}
	if ans.status == fasthttp.StatusServiceUnavailable {
		s.writeUnavailable(ctx)
	} else {
		obs.WriteJSON(ctx, ans.status, ans.body)
	}
	switch ans.status {
	case fasthttp.StatusOK:
		return resOK
	case fasthttp.StatusNotFound:
		return resNotFound
	}
	return resUnavailable
}

var bodyNotFound = []byte(`{"error":"not_found"}`)

// loadCampaign reads one campaign page from the ledger and builds its answer; it runs
// at most once per campaign per CacheTTL (see pageCache).
func (s *Server) loadCampaign(ctx context.Context, id string) answer {
	s.m.loads.Inc()
	t0 := time.Now()
	info, found, err := s.rd.Campaign(ctx, id)
	s.m.dbLatency.ObserveDuration(time.Since(t0))
	switch {
	case err != nil:
		s.m.dbErrors.Inc()
		s.log.Warn("ledger read failed", "endpoint", "campaign", "campaign", id, "err", err)
		return answer{status: fasthttp.StatusServiceUnavailable, body: s.retryBody}
	case !found:
		return answer{status: fasthttp.StatusNotFound, body: bodyNotFound}
	}
	b := make([]byte, 0, 256+TopN*48)
	b = append(b, `{"campaign":"`...)
	b = obs.AppendJSONString(b, info.Campaign)
	b = append(b, `","currency":"`...)
	b = obs.AppendJSONString(b, info.Currency)
	b = append(b, `","budget":`...)
	b = strconv.AppendInt(b, info.Budget, 10)
	b = append(b, `,"tickets":`...)
	b = strconv.AppendInt(b, info.Tickets, 10)
	b = append(b, `,"settled_tickets":`...)
	b = strconv.AppendInt(b, info.SettledTickets, 10)
	b = append(b, `,"settled_amount":`...)
	b = strconv.AppendInt(b, info.SettledAmount, 10)
	b = append(b, `,"top":[`...)
	for i, t := range info.Top {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"uid_masked":"`...)
		b = MaskUID(b, t.UID)
		b = append(b, `","amount":`...)
		b = strconv.AppendInt(b, t.Amount, 10)
		b = append(b, '}')
	}
	b = append(b, "]}"...)
	return answer{status: fasthttp.StatusOK, body: b}
}
