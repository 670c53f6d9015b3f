package main

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"shake/bench"
	"shake/internal/control"
	"shake/ticket"
)

// demoPause is the demo's exercise of the control plane: mid-load it closes the whole
// event with the same fan-out as `shake ctl pause`, holds it, and reopens it, checking
// on the edges' own counters that no ticket was handed out in between.
type demoPause struct {
	Start        time.Time `json:"-"`
	End          time.Time `json:"-"`
	From         float64   `json:"from_s"` // seconds since the load started
	To           float64   `json:"to_s"`
	IssuedAtStop float64   `json:"issued_when_pause_returned"`
	IssuedAtEnd  float64   `json:"issued_before_resume"`
	IssuedInside float64   `json:"issued_while_paused"`
	Confirmed    bool      `json:"confirmed"`
}

// pauseWindow returns when into a load of d the demo pauses and for how long: from 40%
// of the run, for an eighth of it (between 500 ms and 5 s); nothing under 3 s.
func pauseWindow(d time.Duration) (at, hold time.Duration, ok bool) {
	if d < 3*time.Second {
		return 0, 0, false
	}
	return d * 2 / 5, min(max(d/8, 500*time.Millisecond), 5*time.Second), true
}

// runPause pauses the edges at admins after at, holds for hold, and resumes them. It
// returns nil if the run ends first.
func (d *demo) runPause(ctx context.Context, adminKey []byte, admins []string, at, hold time.Duration) *demoPause {
	select {
	case <-ctx.Done():
		return nil
	case <-time.After(at):
	}
	c := &control.Client{Key: adminKey}
	p := &demoPause{Confirmed: true}
	set := func(paused bool) {
		for _, r := range c.Change(admins, func(s *ticket.Switches) error { s.Edge.Paused = paused; return nil }) {
			if r.Err != nil {
				p.Confirmed = false
				d.fail("control plane: %s did not confirm edge.paused=%v: %v", r.Server, paused, r.Err)
			}
		}
	}
	set(true)
	p.Start = time.Now()
	p.IssuedAtStop = sumIssued(admins)
	select {
	case <-ctx.Done():
	case <-time.After(hold):
	}
	p.IssuedAtEnd = sumIssued(admins)
	p.End = time.Now()
	set(false)
	p.IssuedInside = p.IssuedAtEnd - p.IssuedAtStop
	if p.IssuedInside != 0 {
		d.fail("control plane: %.0f tickets issued while the event was paused", p.IssuedInside)
	}
	return p
}

// mark records the pause on the load's charts.
func (p *demoPause) mark(res *bench.Result) {
	p.From, p.To = p.Start.Sub(res.Started).Seconds(), p.End.Sub(res.Started).Seconds()
	res.Windows = append(res.Windows, bench.Window{Label: "paused (shake ctl pause)", From: p.From, To: p.To})
}

// winRates returns the shakes won per second over the 2 s before the pause and the 2 s
// after the resume, from the load's per-second series: after a resume the edges should
// hand out at the paced rate, not the backlog of the paused seconds.
func (p *demoPause) winRates(res *bench.Result) (before, after float64) {
	const span = 2
	var nb, na, wb, wa float64
	for _, s := range res.Shake.Series {
		t := float64(s.T)
		switch {
		case t >= p.From-span && t+1 <= p.From:
			wb, nb = wb+float64(s.Won), nb+1
		case t >= p.To && t < p.To+span:
			wa, na = wa+float64(s.Won), na+1
		}
	}
	if nb > 0 {
		before = wb / nb
	}
	if na > 0 {
		after = wa / na
	}
	return before, after
}

// sumIssued adds shake_edge_tickets_issued_total over the edges' admin listeners (-1
// if one cannot be read).
func sumIssued(admins []string) float64 {
	var sum float64
	for _, a := range admins {
		v, err := scrapeMetric(control.NormalizeServer(a), "shake_edge_tickets_issued_total")
		if err != nil {
			return -1
		}
		sum += v
	}
	return sum
}

var scrapeClient = &http.Client{Timeout: 5 * time.Second}

// scrapeMetric reads one unlabelled sample from base/metrics.
func scrapeMetric(base, name string) (float64, error) {
	resp, err := scrapeClient.Get(base + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			return strconv.ParseFloat(v, 64)
		}
	}
	return 0, fmt.Errorf("%s/metrics has no %s", base, name)
}
