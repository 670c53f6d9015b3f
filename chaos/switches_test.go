//go:build chaos

package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"shake/internal/control"
	"shake/ticket"
)

// A switch fault flips a switch on the running chain through the admin API (the same
// client as `shake ctl`), holds it a while, and flips it back. The episode remembers when
// each server confirmed the change (the PUT answers 200 only once it is in force) and when
// the release was sent, so that the checks can hold every answer given in between to what
// docs/switches.md says the switch does.
type episode struct {
	kind    faultKind
	target  int    // sw-shed: percent; sw-revoke-shard: the shard; sw-edge-per-user: the rule
	value   string // what was set, for the log
	message string // sw-degrade-open's message
	retryMs int64  // sw-shed's retry_after_ms

	put     time.Time             // the change was sent
	on      map[string]time.Time  // by server name: the change was confirmed in force
	off     time.Time             // the release was sent
	offDone time.Time             // every server confirmed the release
	before  map[string]float64    // by server: the watched counter just after "on"
	after   map[string]float64    // and just before "off"
	starts  map[string][2]int     // by server: starts at "on" and at "off" (a restart voids the counter check)
	probes  map[string]readyProbe // sw-pause-settler: /readyz in the middle of the window
	reopen  map[string]int        // sw-degrade-open, sw-revoke-shard: answers to the held tokens opened again after the release
}

type readyProbe struct {
	status int
	body   string
	starts int
}

// switchKind reports whether k is one of the switch faults.
func switchKind(k faultKind) bool { return k >= fSwPause && k <= fSwEdgePerUser }

// adminClient is the control-plane client with the campaign's admin token.
func (r *chaosRun) adminClient() *control.Client {
	return &control.Client{Key: r.c.adminKey, Timeout: 15 * time.Second}
}

// setSwitches applies change to every server in svcs through PUT /admin/switches and
// returns when each has confirmed it, with the moment it did. A server that is down (a
// process fault in the other lane) is tried again every 200 ms until it is back.
func (r *chaosRun) setSwitches(ctx context.Context, svcs []*service, change func(*ticket.Switches)) (map[string]time.Time, error) {
	cl := r.adminClient()
	on := map[string]time.Time{}
	pending := append([]*service{}, svcs...)
	deadline := time.Now().Add(3 * time.Minute)
	for {
		urls := make([]string, len(pending))
		for i, s := range pending {
			urls[i] = s.admin
		}
		res := cl.Change(urls, func(d *ticket.Switches) error { change(d); return nil })
		now := time.Now()
		var left []*service
		var errs []string
		for i, s := range pending {
			if res[i].Err != nil {
				left = append(left, s)
				errs = append(errs, s.name+": "+res[i].Err.Error())
				continue
			}
			on[s.name] = now
		}
		if len(left) == 0 {
			return on, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return on, fmt.Errorf("switches not confirmed: %s", strings.Join(errs, "; "))
		}
		pending = left
		sleep(ctx, 200*time.Millisecond)
	}
}

// watched reads the counter an episode of kind k holds still on s: tickets issued (edge
// paused or round closed), claims made durable (opens paused), tickets posted (settler
// paused). ok is false when it cannot be read (the server is down).
func (r *chaosRun) watched(ctx context.Context, k faultKind, s *service) (float64, bool) {
	switch k {
	case fSwPause, fSwCloseRound:
		page, err := httpGet("http://" + s.admin + "/metrics")
		if err != nil {
			return 0, false
		}
		return metricValue(page, "shake_edge_tickets_issued_total")
	case fSwDegradeOpen:
		page, err := httpGet("http://" + s.admin + "/metrics")
		if err != nil {
			return 0, false
		}
		a, ok1 := metricValue(page, "shake_verifier_claims_produced_total")
		b, ok2 := metricValue(page, "shake_verifier_claims_spooled_total")
		return a + b, ok1 && ok2
	case fSwPauseSettler:
		st, err := r.ledger.Stats(ctx, r.c.id)
		if err != nil {
			return 0, false
		}
		return float64(st.Tickets), true
	}
	return 0, false
}

// injectSwitch runs one switch fault to completion (switched on, held, switched off).
func (r *chaosRun) injectSwitch(ctx context.Context, f fault) error {
	ep := &episode{kind: f.kind, target: f.target, before: map[string]float64{}, after: map[string]float64{},
		starts: map[string][2]int{}, probes: map[string]readyProbe{}}
	var svcs []*service
	var on, off func(*ticket.Switches)
	switch f.kind {
	case fSwPause:
		svcs, ep.value = r.edges, "edge.paused=true"
		on = func(d *ticket.Switches) { d.Edge.Paused = true }
		off = func(d *ticket.Switches) { d.Edge.Paused = false }
	case fSwCloseRound:
		svcs, ep.value = r.edges, "edge.closed_rounds=[0]"
		on = func(d *ticket.Switches) { d.Edge.ClosedRounds = []int{0} }
		off = func(d *ticket.Switches) { d.Edge.ClosedRounds = []int{} }
	case fSwShed:
		ep.retryMs = int64(100 + 10*f.target) // 400-800 ms
		svcs, ep.value = r.edges, fmt.Sprintf("edge.shed_ratio=0.%02d edge.retry_after_ms=%d", f.target, ep.retryMs)
		on = func(d *ticket.Switches) { d.Edge.ShedRatio, d.Edge.RetryAfterMs = float64(f.target)/100, ep.retryMs }
		off = func(d *ticket.Switches) { d.Edge.ShedRatio, d.Edge.RetryAfterMs = 0, 1000 }
	case fSwEdgePerUser:
		svcs, ep.value = r.edges, fmt.Sprintf("edge.per_user=%d", f.target)
		on = func(d *ticket.Switches) { n := f.target; d.Edge.PerUser = &n }
		off = func(d *ticket.Switches) { d.Edge.PerUser = nil }
	case fSwDegradeOpen:
		ep.message = fmt.Sprintf("chaos maintenance %d", f.at.Milliseconds())
		svcs, ep.value = r.vers, fmt.Sprintf("verifier.open_paused=true verifier.message=%q", ep.message)
		on = func(d *ticket.Switches) { d.Verifier.OpenPaused, d.Verifier.Message = true, ep.message }
		off = func(d *ticket.Switches) { d.Verifier.OpenPaused, d.Verifier.Message = false, "" }
	case fSwRevoke:
		svcs, ep.value = r.vers, fmt.Sprintf("verifier.revoked_shards=[%d]", f.target)
		on = func(d *ticket.Switches) { d.Verifier.RevokedShards = []int{f.target} }
		off = func(d *ticket.Switches) { d.Verifier.RevokedShards = []int{} }
	case fSwPauseSettler:
		svcs, ep.value = []*service{r.set}, "settler.paused=true"
		on = func(d *ticket.Switches) { d.Settler.Paused = true }
		off = func(d *ticket.Switches) { d.Settler.Paused = false }
	default:
		return fmt.Errorf("not a switch fault: %s", faultNames[f.kind])
	}
	ep.put = time.Now()
	var err error
	if ep.on, err = r.setSwitches(ctx, svcs, on); err != nil {
		return fmt.Errorf("%s: %w", ep.value, err)
	}
	for _, s := range svcs {
		if v, ok := r.watched(ctx, f.kind, s); ok {
			ep.before[s.name] = v
		}
		ep.starts[s.name] = [2]int{s.startCount(), 0}
	}
	if f.kind == fSwPauseSettler {
		sleep(ctx, f.down/2)
		st, body := readyz(r.set.admin)
		ep.probes[r.set.name] = readyProbe{status: st, body: body, starts: r.set.startCount()}
		sleep(ctx, f.down-f.down/2)
	} else {
		sleep(ctx, f.down)
	}
	for _, s := range svcs {
		if v, ok := r.watched(ctx, f.kind, s); ok {
			ep.after[s.name] = v
		}
		st := ep.starts[s.name]
		st[1] = s.startCount()
		ep.starts[s.name] = st
	}
	ep.off = time.Now()
	// The release must happen even when the run is ending: the final checks need a
	// running chain.
	relCtx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	_, err = r.setSwitches(relCtx, svcs, off)
	ep.offDone = time.Now()
	if err == nil && (f.kind == fSwDegradeOpen || f.kind == fSwRevoke) {
		ep.reopen = r.reopenHeld(relCtx, ep)
	}
	r.mu.Lock()
	r.episodes = append(r.episodes, ep)
	r.mu.Unlock()
	if err != nil {
		return fmt.Errorf("releasing %s: %w", ep.value, err)
	}
	return nil
}

// reopenHeld sends again, through the verifiers' tap, up to 20 of the opens the episode's
// switch refused (tokens stay valid: docs/switches.md), once its release is confirmed everywhere,
// and counts the answers by status and code.
func (r *chaosRun) reopenHeld(ctx context.Context, ep *episode) map[string]int {
	var picked []heldOpen
	r.truth.mu.Lock()
	for _, h := range r.truth.held {
		if len(picked) == 20 {
			break
		}
		if h.at >= ep.put.UnixNano() && h.at < ep.off.UnixNano() &&
			((ep.kind == fSwDegradeOpen && h.code == "unavailable") || (ep.kind == fSwRevoke && h.code == "revoked" && h.shard == ep.target)) {
			picked = append(picked, h)
		}
	}
	r.truth.mu.Unlock()
	out := map[string]int{}
	cl := &http.Client{Timeout: 10 * time.Second}
	for _, h := range picked {
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, r.openURL+"/v1/open", bytes.NewReader(h.body))
		req.Header.Set("Authorization", string(h.auth))
		req.Header.Set("Content-Type", "application/json")
		resp, err := cl.Do(req)
		if err != nil {
			out["transport"]++
			continue
		}
		var b struct {
			Result  string `json:"result"`
			Error   string `json:"error"`
			Message string `json:"message"`
		}
		_ = json.NewDecoder(io.LimitReader(resp.Body, 4096)).Decode(&b)
		resp.Body.Close()
		k := fmt.Sprintf("%d %s%s", resp.StatusCode, b.Result, b.Error)
		if b.Message != "" {
			k += " with a message"
		}
		out[k]++
	}
	return out
}

// resetSwitches puts every server's switches back to the defaults (at a new version).
func (r *chaosRun) resetSwitches(ctx context.Context) error {
	_, err := r.setSwitches(ctx, r.servers(), func(d *ticket.Switches) {
		v := d.Version
		*d = *ticket.DefaultSwitches()
		d.Version = v
	})
	return err
}

// readyz returns the status and body of GET /readyz (0 when it cannot be read).
func readyz(addr string) (int, string) {
	cl := &http.Client{Timeout: 5 * time.Second}
	resp, err := cl.Get("http://" + addr + "/readyz")
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	var b strings.Builder
	buf := make([]byte, 512)
	n, _ := resp.Body.Read(buf)
	b.Write(buf[:n])
	return resp.StatusCode, strings.TrimSpace(b.String())
}

// within reports whether an answer (request forwarded at sent, answer back at recv) was
// surely given under the switch: sent after the server confirmed it, back before its
// release was sent.
func within(sent, recv int64, on time.Time, off time.Time) bool {
	return sent >= on.UnixNano() && recv < off.UnixNano()
}

// overlaps reports whether an answer may have been given under the switch: any part of
// it between the change being sent and the release being confirmed.
func overlaps(sent, recv int64, ep *episode) bool {
	return recv >= ep.put.UnixNano() && sent <= ep.offDone.UnixNano()
}

// checkSwitches holds every answer to what the switch in force at that moment says, and
// every watched counter still while its switch held. truth.mu is held by the caller.
func (r *chaosRun) checkSwitches(truth *ledgerOfTruth) {
	t := r.t
	r.checking(invSwitches)
	maybe := func(kinds []faultKind, match func(*episode) bool, sent, recv int64) bool {
		for _, ep := range r.episodes {
			for _, k := range kinds {
				if ep.kind == k && (match == nil || match(ep)) && overlaps(sent, recv, ep) {
					return true
				}
			}
		}
		return false
	}
	// Answers outside any episode: no closed shake (the campaign's one round is always
	// open), no 503 with a message, no revoked open; every 429 carries Retry-After and
	// its retry_after_ms.
	strayClosed, strayMsg, strayRevoked, bad429 := 0, 0, 0, 0
	for edge, evs := range truth.shakes {
		for _, ev := range evs {
			if ev.status == 200 && ev.result == "closed" && !maybe([]faultKind{fSwPause, fSwCloseRound}, nil, ev.sent, ev.recv) {
				if strayClosed++; strayClosed <= 5 {
					r.breach("%s answered closed at %s with no pause or closed round in force", edge, stamp(ev.sent))
				}
			}
			if ev.status == 429 && (ev.retryHdr == "" || ev.retryMs < 0 || ev.result != "retry") {
				if bad429++; bad429 <= 5 {
					r.breach("%s answered 429 without Retry-After or retry_after_ms (header %q, retry_after_ms %d, result %q)", edge, ev.retryHdr, ev.retryMs, ev.result)
				}
			}
		}
	}
	for _, ev := range truth.opens {
		if ev.status == 503 && ev.message != "" && !maybe([]faultKind{fSwDegradeOpen}, nil, ev.sent, ev.recv) {
			if strayMsg++; strayMsg <= 5 {
				r.breach("verifier %d answered 503 with message %q at %s, opens not paused", ev.verifier, ev.message, stamp(ev.sent))
			}
		}
		if ev.code == "revoked" && !maybe([]faultKind{fSwRevoke}, func(ep *episode) bool { return ep.target == ev.shard }, ev.sent, ev.recv) {
			if strayRevoked++; strayRevoked <= 5 {
				r.breach("verifier %d answered revoked for a shard-%d token at %s, shard not revoked", ev.verifier, ev.shard, stamp(ev.sent))
			}
		}
	}

	// Each episode, on each server, from its confirmation to its release.
	var lines []string
	for _, ep := range r.episodes {
		held, seen := 0, 0
		var counters []string
		for name, on := range ep.on {
			st := ep.starts[name]
			if b, ok := ep.before[name]; ok && st[0] == st[1] {
				if a, ok := ep.after[name]; ok && a != b {
					r.breach("%s on %s: the watched counter moved from %.0f to %.0f while the switch held", ep.value, name, b, a)
				}
			}
			switch ep.kind {
			case fSwPause, fSwCloseRound, fSwShed:
				answered, shed := 0, 0
				for _, ev := range truth.shakes[name] {
					if !within(ev.sent, ev.recv, on, ep.off) || ev.status == 0 {
						continue
					}
					answered++
					switch {
					case ep.kind != fSwShed && (ev.status != 200 || ev.result != "closed" || !ev.nextNull):
						r.breach("%s on %s: a shake at %s answered %d %q, want 200 closed with next_round_at null",
							ep.value, name, stamp(ev.sent), ev.status, ev.result)
					case ep.kind != fSwShed:
						shed++ // closed, as the switch says
					case ep.kind == fSwShed && ev.status == 429:
						shed++
						if ev.retryMs != ep.retryMs || ev.retryHdr != "1" {
							r.breach("%s on %s: a shed answer carried retry_after_ms %d and Retry-After %q, want %d and \"1\"",
								ep.value, name, ev.retryMs, ev.retryHdr, ep.retryMs)
						}
					}
				}
				seen += answered
				held += shed
				if ep.kind == fSwShed && answered >= 100 {
					if share, want := float64(shed)/float64(answered), float64(ep.target)/100; share < want-0.15 || share > want+0.2 {
						r.breach("%s on %s: %d of %d shakes shed (%.2f), want about %.2f", ep.value, name, shed, answered, share, want)
					}
				}
			case fSwDegradeOpen, fSwRevoke:
				vi := -1
				for i, v := range r.vers {
					if v.name == name {
						vi = i
					}
				}
				for _, ev := range truth.opens {
					if ev.verifier != vi || ev.status == 0 || !within(ev.sent, ev.recv, on, ep.off) {
						continue
					}
					if ep.kind == fSwDegradeOpen {
						seen++
						if ev.status != 503 || ev.code != "unavailable" || ev.message != ep.message {
							r.breach("%s on %s: an open at %s answered %d %q message %q, want 503 unavailable with the message",
								ep.value, name, stamp(ev.sent), ev.status, ev.code, ev.message)
						} else {
							held++
						}
						continue
					}
					if ev.shard != ep.target {
						continue
					}
					seen++
					switch {
					case ev.status == 422 && ev.code == "revoked":
						held++
					case ev.status == 503 && ev.code == "unavailable": // rebuilding after a kill
					default:
						r.breach("%s on %s: an open of a shard-%d token at %s answered %d %q, want 422 revoked",
							ep.value, name, ev.shard, stamp(ev.sent), ev.status, ev.code)
					}
				}
				if ep.kind == fSwDegradeOpen {
					for _, p := range truth.probes {
						if p.verifier == vi && within(p.sent, p.recv, on, ep.off) && p.status != 0 && p.status != 503 {
							r.breach("%s on %s: a misdirected open at %s answered %d %s, want 503 while opens are paused",
								ep.value, name, stamp(p.sent), p.status, p.body)
						}
					}
				}
			case fSwPauseSettler:
				if p, ok := ep.probes[name]; ok && p.starts == st[0] && p.status != 0 {
					seen++
					if p.status != 503 || !strings.Contains(p.body, `"status":"paused"`) {
						r.breach("%s: the settler's /readyz answered %d %s while paused, want 503 {\"status\":\"paused\"}", ep.value, p.status, p.body)
					} else {
						held++
					}
				}
			case fSwEdgePerUser:
				// The edges' own rule lifted: count the wins of users who had already won on
				// that edge; the verifiers must still hold the campaign's rule (per-user-limit).
				won := map[uint64]int{}
				for _, is := range truth.issues {
					if is.edge == name && is.at < ep.off.UnixNano() {
						won[is.tok.UID]++
						if is.at >= on.UnixNano() && won[is.tok.UID] > 1 {
							held++
						}
					}
				}
				seen += len(won)
			}
			if b, ok := ep.before[name]; ok {
				a, ok2 := ep.after[name]
				counters = append(counters, fmt.Sprintf("%s %.0f->%.0f (restarted %v, read %v)", name, b, a, st[0] != st[1], ok2))
			}
		}
		for k, n := range ep.reopen {
			switch k {
			case "200 opened", "409 limit_reached", "503 unavailable", "transport":
				// opened now; the user opened another meanwhile; a Kafka or rebuild outage
			default:
				r.breach("%s: %d of the tokens it refused, opened again after its release, answered %s", ep.value, n, k)
			}
		}
		what := "answers under it, as the switch says"
		switch ep.kind {
		case fSwShed:
			what = "answers under it, shed (429 with the set retry)"
		case fSwPauseSettler:
			what = "/readyz read while it held, paused"
		case fSwEdgePerUser:
			what = "users won on an edge until its release, wins beyond the campaign's rule on one edge while it held"
		}
		line := fmt.Sprintf("%s for %v on %d servers: %d / %d %s; watched counters %v",
			ep.value, ep.off.Sub(ep.put).Truncate(time.Millisecond), len(ep.on), seen, held, what, counters)
		if ep.reopen != nil {
			line += fmt.Sprintf("; refused tokens opened again after the release: %v", ep.reopen)
		}
		lines = append(lines, line)
	}
	t.Logf("switch episodes: %d; stray closed %d, stray paused-open 503 %d, stray revoked %d, 429 without Retry-After %d",
		len(r.episodes), strayClosed, strayMsg, strayRevoked, bad429)
	for _, l := range lines {
		t.Logf("  %s", l)
	}
}

// checkRouting holds the uid-sharded verifiers to their shards: an open sent to a
// verifier that does not own its uid is 421 naming that verifier's shard (or 503 while
// it rebuilds or its opens are paused), never anything else; the bench, routed by uid,
// never meets a 421.
func (r *chaosRun) checkRouting(truth *ledgerOfTruth, benchErr map[string]int64) {
	r.checking(invRouting)
	counts := map[int]int{}
	for _, p := range truth.probes {
		counts[p.status]++
		want := fmt.Sprintf(`{"error":"misdirected","uid_shard":"%d/%d"}`, p.verifier, len(r.vers))
		switch {
		case p.status == 0, p.status == 503:
		case p.status == 421 && p.body == want:
		default:
			r.breach("a misdirected open to verifier %d at %s answered %d %s, want 421 %s", p.verifier, stamp(p.sent), p.status, p.body, want)
		}
	}
	if len(truth.probes) > 0 && counts[421] == 0 {
		r.breach("none of %d misdirected opens was answered 421 (%v)", len(truth.probes), counts)
	}
	if benchErr["misdirected"] > 0 {
		r.breach("the bench, routed by uid, was answered misdirected %d times", benchErr["misdirected"])
	}
	r.t.Logf("misdirected opens (every 16th open, also sent to another verifier first): %d, answers %v", len(truth.probes), counts)
}

func stamp(ns int64) string { return time.Unix(0, ns).UTC().Format("15:04:05.000") }
