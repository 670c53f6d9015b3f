//go:build chaos

package chaos

import (
	"fmt"
	"testing"
	"time"
)

// recorder is a testing.TB whose Errorf records instead of failing.
type recorder struct {
	testing.TB
	msgs []string
}

func (r *recorder) Errorf(format string, args ...any) {
	r.msgs = append(r.msgs, fmt.Sprintf(format, args...))
}
func (r *recorder) Helper() {}

// TestChaosChecksCatch feeds the switch and routing checks answers that keep each rule
// and answers that break it, and requires a breach for exactly the broken ones: a check
// that cannot fail would pass the whole chaos run without testing anything. It needs
// no processes.
func TestChaosChecksCatch(t *testing.T) {
	rec := &recorder{TB: t}
	r := &chaosRun{t: rec, replay: "synthetic",
		edges: []*service{{name: "edge-000"}}, vers: []*service{{name: "verifier-0"}, {name: "verifier-1"}},
		set: &service{name: "settler"}}
	base := time.Now()
	at := func(ms int) int64 { return base.Add(time.Duration(ms) * time.Millisecond).UnixNano() }
	tm := func(ms int) time.Time { return time.Unix(0, at(ms)) }
	ep := func(k faultKind, target, put, on, off int, servers ...string) *episode {
		e := &episode{kind: k, target: target, value: faultNames[k], put: tm(put), on: map[string]time.Time{},
			off: tm(off), offDone: tm(off + 10), before: map[string]float64{}, after: map[string]float64{},
			starts: map[string][2]int{}, probes: map[string]readyProbe{}}
		for _, s := range servers {
			e.on[s] = tm(on)
			e.starts[s] = [2]int{1, 1}
		}
		return e
	}
	pause := ep(fSwPause, 0, 0, 10, 100, "edge-000")
	pause.before["edge-000"], pause.after["edge-000"] = 5, 6 // 1: issued while paused
	shed := ep(fSwShed, 50, 300, 310, 400, "edge-000")
	shed.retryMs = 600
	degrade := ep(fSwDegradeOpen, 0, 600, 610, 700, "verifier-1")
	degrade.message = "m"
	degrade.reopen = map[string]int{"200 opened": 3, "409 limit_reached": 1, "503 unavailable": 1}
	revoke := ep(fSwRevoke, 0, 900, 910, 1000, "verifier-0", "verifier-1")
	revoke.reopen = map[string]int{"200 opened": 2, "422 revoked": 1} // 11: still revoked after the release
	settler := ep(fSwPauseSettler, 0, 1100, 1110, 1150, "settler")
	settler.probes["settler"] = readyProbe{status: 200, body: `{"status":"ready"}`, starts: 1} // 2: ready while paused
	r.episodes = []*episode{pause, shed, degrade, revoke, settler}

	truth := newLedgerOfTruth(nil)
	truth.verifiers = 2
	sh := func(sent, recv, status int, result, hdr string, ms int64) shakeEv {
		return shakeEv{sent: at(sent), recv: at(recv), status: status, result: result, retryHdr: hdr, retryMs: ms, nextNull: true}
	}
	truth.shakes["edge-000"] = []shakeEv{
		sh(20, 30, 200, "closed", "", -1),   // paused: as it should
		sh(5, 15, 200, "closed", "", -1),    // around the change: either is right
		sh(40, 50, 200, "won", "", -1),      // 3: won while paused
		sh(200, 210, 200, "closed", "", -1), // 4: closed with nothing in force
		sh(320, 330, 429, "retry", "1", 600),
		sh(340, 350, 429, "retry", "1", 1000), // 5: not the shed's retry_after_ms
		sh(360, 370, 200, "won", "", -1),
		sh(500, 510, 429, "retry", "", 1000), // 6: 429 without Retry-After
	}
	op := func(sent, recv, v, status int, code, msg string, shard int) openEv {
		return openEv{sent: at(sent), recv: at(recv), verifier: v, status: status, code: code, message: msg, shard: shard}
	}
	truth.opens = []openEv{
		op(620, 630, 1, 503, "unavailable", "m", 0),
		op(620, 630, 0, 200, "opened", "", 0),       // verifier-0 was not paused
		op(640, 650, 1, 200, "opened", "", 1),       // 7: opened while opens paused
		op(800, 810, 1, 503, "unavailable", "m", 1), // 8: a paused answer with nothing in force
		op(920, 930, 0, 422, "revoked", "", 0),
		op(920, 930, 1, 503, "unavailable", "", 0), // rebuilding
		op(940, 950, 1, 200, "opened", "", 0),      // 9: a revoked shard's token opened
		op(940, 950, 0, 200, "opened", "", 1),      // the other shard is not revoked
		op(1200, 1210, 0, 422, "revoked", "", 0),   // 10: revoked with nothing in force
	}
	truth.probes = []probeEv{
		{sent: at(1), recv: at(2), verifier: 1, status: 421, body: `{"error":"misdirected","uid_shard":"1/2"}`},
		{sent: at(1), recv: at(2), verifier: 0, status: 421, body: `{"error":"misdirected","uid_shard":"1/2"}`}, // r1: names the wrong shard
		{sent: at(1), recv: at(2), verifier: 0, status: 200, body: `{"result":"opened"}`},                       // r2: opened by the wrong verifier
		{sent: at(1), recv: at(2), verifier: 0, status: 503, body: `{"error":"unavailable"}`},
	}
	r.checkSwitches(truth)
	r.checkRouting(truth, map[string]int64{"misdirected": 1}) // r3: the routed bench met a 421

	if got := r.breaches[invSwitches]; got != 11 {
		t.Errorf("switches-hold breaches: %d, want 11", got)
	}
	if got := r.breaches[invRouting]; got != 3 {
		t.Errorf("uid-routing breaches: %d, want 3", got)
	}
	if t.Failed() {
		for _, m := range rec.msgs {
			t.Log(m)
		}
	}
}
