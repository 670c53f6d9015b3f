package settler

import (
	"context"
	"time"

	"shake/internal/control"
	"shake/internal/obs"
	"shake/ticket"
)

// settlerSwitches is the settler's section of the switches document, compiled.
type settlerSwitches struct {
	paused bool
}

// pausePoll is how often a paused settler looks whether it was resumed.
const pausePoll = 20 * time.Millisecond

// setupSwitches builds the settler's switches store (loading --switches).
func (s *Settler) setupSwitches() error {
	s.sw = control.NewLive(&settlerSwitches{})
	st, err := control.New(control.Config{Options: s.cfg.Switches, Role: "settler", Apply: s.applySwitches,
		Check: s.checkSwitches, Logger: s.log, Registry: s.reg})
	if err != nil {
		return err
	}
	s.ctl = st
	return nil
}

// checkSwitches refuses a document naming a round or shard the manifest does not have.
func (s *Settler) checkSwitches(d *ticket.Switches) error {
	if m := s.cfg.Manifest; m != nil {
		return d.CheckAgainst(len(m.Rounds), len(m.Shards))
	}
	return nil
}

// applySwitches publishes doc's settler section; it returns once the batch that was
// being settled under the previous value (if any) is committed, so that after a pause
// answers 200 nothing more is posted or committed.
func (s *Settler) applySwitches(ctx context.Context, doc *ticket.Switches) error {
	return s.sw.Publish(ctx, &settlerSwitches{paused: doc.Settler.Paused})
}

// Wire returns c with the admin endpoints (/admin/switches, the token check) set.
func (s *Settler) Wire(c obs.Common) obs.Common { return s.ctl.Wire(c) }

// Close releases the switches store (its SIGHUP watcher).
func (s *Settler) Close() { s.ctl.Close() }

// Status is /readyz's first word: "paused" while the paused switch is set, else ""
// (then NotReadyReason decides).
func (s *Settler) Status() string {
	if s.sw.Load().paused {
		return "paused"
	}
	return ""
}

// paused reports whether the paused switch is set.
func (s *Settler) paused() bool { return s.sw.Load().paused }

// enterUnpaused waits while the settler is paused and returns the epoch the batch in
// hand settles under (leave it with s.sw.Exit); ok is false when ctx ends first. The
// claims in hand stay uncommitted while paused: nothing is skipped.
func (s *Settler) enterUnpaused(ctx context.Context) (control.Epoch, bool) {
	logged := false
	for {
		sw, e := s.sw.Enter()
		if !sw.paused {
			if logged {
				s.log.Info("resumed: settling again")
			}
			return e, true
		}
		s.sw.Exit(e)
		if !logged {
			s.log.Info("paused by the switches: holding the batch in hand, nothing is committed until resumed")
			logged = true
		}
		select {
		case <-ctx.Done():
			return 0, false
		case <-time.After(pausePoll):
		}
	}
}
