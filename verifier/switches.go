package verifier

import (
	"context"
	"strconv"
	"time"

	"github.com/valyala/fasthttp"

	"shake/internal/control"
	"shake/internal/obs"
	"shake/ticket"
)

// verifierSwitches is the verifier's section of the switches document compiled for the
// hot path: immutable once published, read through one atomic load (control.Live).
type verifierSwitches struct {
	openPaused bool
	pausedBody []byte // the 503 of a paused open, with the operator's message
	revoked    []bool // by shard index (nil: none revoked)
}

// setupSwitches builds the verifier's switches store (loading --switches) and returns
// the HTTP settings with the admin endpoints wired to it.
func (s *Server) setupSwitches() (obs.Common, error) {
	s.sw = control.NewLive(s.compileSwitches(&ticket.DefaultSwitches().Verifier))
	st, err := control.New(control.Config{Options: s.cfg.Switches, Role: "verifier", Apply: s.applySwitches,
		Check:  func(d *ticket.Switches) error { return d.CheckAgainst(len(s.man.Rounds), len(s.man.Shards)) },
		Logger: s.log, Registry: s.cfg.Registry})
	if err != nil {
		return obs.Common{}, err
	}
	s.ctl = st
	return st.Wire(s.cfg.HTTP), nil
}

// applySwitches compiles doc's verifier section and publishes it; it returns once no
// open is still running under the previous value.
func (s *Server) applySwitches(ctx context.Context, doc *ticket.Switches) error {
	return s.sw.Publish(ctx, s.compileSwitches(&doc.Verifier))
}

func (s *Server) compileSwitches(v *ticket.VerifierSwitches) *verifierSwitches {
	c := &verifierSwitches{openPaused: v.OpenPaused}
	b := append([]byte(nil), `{"error":"unavailable","retry_after_ms":`...)
	b = strconv.AppendInt(b, s.cfg.RetryAfter.Milliseconds(), 10)
	b = append(b, `,"message":`...)
	b = strconv.AppendQuote(b, v.Message) // the message is valid UTF-8 without control characters
	c.pausedBody = append(b, '}')
	if len(v.RevokedShards) > 0 {
		c.revoked = make([]bool, len(s.man.Shards))
		for _, sh := range v.RevokedShards {
			if sh < len(c.revoked) {
				c.revoked[sh] = true
			}
		}
	}
	return c
}

// pausedOpen answers an open while open_paused is set: 503 with the message; the token
// stays valid for later.
func (s *Server) pausedOpen(ctx *fasthttp.RequestCtx, sw *verifierSwitches) {
	s.opens[resUnavailable].Inc()
	secs := (s.cfg.RetryAfter + time.Second - 1) / time.Second
	ctx.Response.Header.Set(fasthttp.HeaderRetryAfter, strconv.Itoa(int(secs)))
	obs.WriteJSON(ctx, fasthttp.StatusServiceUnavailable, sw.pausedBody)
}

// revoked reports whether shard's key has been revoked by the revoked_shards switch.
func (s *Server) revoked(shard int) bool {
	r := s.sw.Load().revoked
	return r != nil && shard < len(r) && r[shard]
}

// AdminAddr returns the admin listener's address ("" without one).
func (s *Server) AdminAddr() string { return s.srv.AdminAddr() }
