package edge

import (
	"context"
	"math"
	"math/rand/v2"
	"strconv"

	"github.com/valyala/fasthttp"

	"shake/internal/control"
	"shake/internal/obs"
	"shake/ticket"
)

// edgeSwitches is the edge's section of the switches document compiled for the hot
// path: immutable once published, read through one atomic load (control.Live).
type edgeSwitches struct {
	// early is set when a switch acts before the session check (pause, shed): at the
	// defaults the handler pays one branch.
	early  bool
	paused bool
	// closed marks closed rounds by index (nil: none).
	closed []bool
	// paceScaled is set when pace_factor < 1 on a paced edge.
	paceScaled bool
	paceFactor float64
	// shed is the share of shakes answered 429, as a threshold on a uniform uint64.
	shed       uint64
	retryBody  []byte
	retryAfter []byte
	// per is the per-user table in force (nil: no limit): the configured one, or a view
	// of a table with the override's limit.
	per *perUser
	// stops are each round's stopped spans (pacestop.go); nil when none ever was.
	stops [][]stop
}

// setupSwitches builds the edge's switches store (loading --switches) and returns the
// HTTP settings with the admin endpoints wired to it.
func (s *Server) setupSwitches() (obs.Common, error) {
	s.sw = control.NewLive(s.compileSwitches(&ticket.DefaultSwitches().Edge))
	st, err := control.New(control.Config{Options: s.cfg.Switches, Role: "edge", Apply: s.applySwitches,
		// The edge knows the campaign's rounds and shard count from its shard header.
		Check:  func(d *ticket.Switches) error { return d.CheckAgainst(len(s.disp.rounds), s.hdr.Shards) },
		Logger: s.log, Registry: s.reg})
	if err != nil {
		return obs.Common{}, err
	}
	s.ctl = st
	s.mShed = s.reg.Counter("shake_edge_shed_total", "Shakes answered 429 retry by the shed_ratio switch.")
	return st.Wire(s.cfg.HTTP), nil
}

// applySwitches compiles doc's edge section and publishes it; it returns once no
// request is still running under the previous value.
func (s *Server) applySwitches(ctx context.Context, doc *ticket.Switches) error {
	return s.sw.Publish(ctx, s.compileSwitches(&doc.Edge))
}

func (s *Server) compileSwitches(e *ticket.EdgeSwitches) *edgeSwitches {
	c := &edgeSwitches{paused: e.Paused, per: s.per, paceFactor: e.PaceFactor}
	if len(e.ClosedRounds) > 0 {
		c.closed = make([]bool, len(s.disp.rounds))
		for _, r := range e.ClosedRounds {
			if r < len(c.closed) {
				c.closed[r] = true
			}
		}
	}
	c.paceScaled = s.cfg.Pace && e.PaceFactor < 1
	if e.ShedRatio > 0 {
		c.shed = uint64(math.Ldexp(e.ShedRatio, 64))
	}
	ms := max(e.RetryAfterMs, 1)
	c.retryBody = []byte(`{"result":"retry","retry_after_ms":` + strconv.FormatInt(ms, 10) + `}`)
	c.retryAfter = []byte(strconv.FormatInt(max((ms+999)/1000, 1), 10))
	if e.PerUser != nil {
		c.per = s.perUserView(*e.PerUser)
	}
	c.early = c.paused || c.shed != 0
	if s.cfg.Pace {
		c.stops = s.stopClock.record(s.now().UnixNano(), c.paused, c.closed, len(s.disp.rounds))
	}
	return c
}

// perUserView returns a table enforcing limit (nil for 0, no limit). It shares the
// entries of the configured table, so wins counted before the switch still count; an
// edge started without a limit gets a table of the default size the first time.
func (s *Server) perUserView(limit int) *perUser {
	if limit == 0 {
		return nil
	}
	base := s.per
	if base == nil {
		if s.swTable == nil {
			capacity := s.cfg.PerUserCapacity
			if capacity == 0 {
				capacity = int(min(max(s.hdr.Count+s.hdr.Count/4, 4096), maxPerUserCapacity))
			}
			s.swTable = newPerUser(capacity, limit)
		}
		base = s.swTable
	}
	return &perUser{slots: base.slots, limit: uint64(limit), seed: base.seed}
}

// early answers a shake the pause or shed switch decides, before the session check
// (both are meant to cost the edge as little as possible). It reports whether it did.
func (s *Server) early(ctx *fasthttp.RequestCtx, sw *edgeSwitches) bool {
	if sw.paused {
		s.m.closed.Inc()
		obs.WriteJSON(ctx, fasthttp.StatusOK, bodyPaused)
		return true
	}
	if sw.shed != 0 && rand.Uint64() < sw.shed {
		s.m.retry.Inc()
		s.mShed.Inc()
		ctx.Response.Header.SetCanonical(headerRetryAfter, sw.retryAfter)
		obs.WriteJSON(ctx, fasthttp.StatusTooManyRequests, sw.retryBody)
		return true
	}
	return false
}

// roundClosed answers closed for a round the closed_rounds switch closed, naming the
// next round that is neither closed nor over, and reports whether it did.
func (s *Server) roundClosed(ctx *fasthttp.RequestCtx, sw *edgeSwitches, r *round) bool {
	if sw.closed == nil || !sw.closed[r.index] {
		return false
	}
	s.m.closed.Inc()
	for i := r.index + 1; i < len(s.disp.rounds); i++ {
		if n := s.disp.rounds[i]; !sw.closed[i] && !n.always {
			var buf [96]byte
			b := append(buf[:0], `{"result":"closed","next_round_at":"`...)
			b = append(b, n.startAt...)
			b = append(b, `"}`...)
			obs.WriteJSON(ctx, fasthttp.StatusOK, b)
			return true
		}
	}
	obs.WriteJSON(ctx, fasthttp.StatusOK, bodyClosedNoNext)
	return true
}

// paceTime is the clock the paced release of r reads: time since the round opened,
// less the time its release was stopped (paused or closed), slowed by pace_factor.
func (sw *edgeSwitches) paceTime(r *round, ns int64) int64 {
	if sw.stops != nil && ns > r.start {
		ns -= stoppedWithin(sw.stops[r.index], r.start, ns)
	}
	if !sw.paceScaled || ns <= r.start {
		return ns
	}
	return r.start + int64(float64(ns-r.start)*sw.paceFactor)
}

// AdminAddr returns the admin listener's address ("" without one).
func (s *Server) AdminAddr() string { return s.srv.AdminAddr() }
