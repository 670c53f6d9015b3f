package edge

// Faults and attacks against the edge, each reproduced first:
// repeated kill -9 of a small shard, a request caught at the end of a round, a state
// file gone missing, and a user winning again after a restart.

import (
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"shake/internal/testbin"
	"shake/ticket"
)

// backToBackHeader is a shard of two rounds where the second opens the instant the
// first closes.
func backToBackHeader(count uint64, start time.Time) *ticket.ShardHeader {
	h := &ticket.ShardHeader{
		Version: ticket.ShardVersion, Campaign: "c1", Currency: "CNY", Shard: 0, Shards: 1,
		FirstTicket: 1, Count: 2 * count, Amount: int64(2 * count), TTLSeconds: 60,
		CreatedAt: start.Add(-time.Hour), Generation: ticket.NewGeneration(),
	}
	for i := 0; i < 2; i++ {
		s := start.Add(time.Duration(i) * time.Minute)
		h.Rounds = append(h.Rounds, ticket.RoundWindow{Index: i, Start: s, End: s.Add(time.Minute)})
		h.RoundRanges = append(h.RoundRanges, ticket.RoundRange{Round: i, FirstTicket: 1 + uint64(i)*count, Count: count, Amount: int64(count)})
	}
	if err := h.Validate(); err != nil {
		panic(err)
	}
	return h
}

// TestRoundEndWaiterGetsMiss: a request picks round 0 just before it ends and finds
// its reservation used up. The reserver has moved on to round 1 (its clock is past
// round 0's end) and will never reserve round 0 again: the request must get a miss
// at once, not wait out the reservation timeout and get 429.
func TestRoundEndWaiterGetsMiss(t *testing.T) {
	h := backToBackHeader(1000, time.Unix(1_900_000_000, 0).UTC())
	waitAtTheEnd(t, h, h.Rounds[0].End.UnixNano())
}

// TestIssueEndWaiterGetsMiss is the same for an always-open campaign, whose one round
// ends when issuing ends (created_at + ttl).
func TestIssueEndWaiterGetsMiss(t *testing.T) {
	created := time.Unix(1_900_000_000, 0).UTC()
	h := &ticket.ShardHeader{
		Version: ticket.ShardVersion, Campaign: "c1", Currency: "CNY", Shard: 0, Shards: 1,
		FirstTicket: 1, Count: 1000, Amount: 1000, TTLSeconds: 60, CreatedAt: created,
		Generation: ticket.NewGeneration(), Rounds: []ticket.RoundWindow{{Index: 0}},
		RoundRanges: []ticket.RoundRange{{Round: 0, FirstTicket: 1, Count: 1000, Amount: 1000}},
	}
	if err := h.Validate(); err != nil {
		t.Fatal(err)
	}
	waitAtTheEnd(t, h, created.Add(time.Minute).UnixNano())
}

// waitAtTheEnd uses up round 0's reservation 1 ms before end, runs the reserver with
// a clock 1 ms after it, and checks that one more take at the earlier time is a miss.
func waitAtTheEnd(t *testing.T, h *ticket.ShardHeader, end int64) {
	t.Helper()
	justBefore := end - int64(time.Millisecond)
	after := time.Unix(0, end+int64(time.Millisecond))
	d, _ := dispenserOn(t, h, false, 3*time.Second, func() time.Time { return after })
	r := d.rounds[0]
	if err := d.reserve(r, 10); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 10; i++ {
		if _, res := d.take(r, justBefore); res != takeWon {
			t.Fatalf("take %d: %v", i, res)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); d.run(ctx, func() time.Time { return after }) }()
	defer func() { cancel(); <-done }()
	if _, res := d.take(r, justBefore); res != takeMiss {
		t.Fatalf("request 1 ms before the end: %v, want miss (%d reservation timeouts)", res, d.nwaitFail.Load())
	}
}

// TestProcessKillForfeitsSmallShare bounds what kills forfeit: a 5,000-ticket shard,
// a crowd shaking it, kill -9 twelve times in a row. Each kill forfeits the tickets
// reserved ahead and not yet handed out; the reservation must stay a small share of
// what is left (1/64, or a few tickets at the very end), whatever the rate did.
func TestProcessKillForfeitsSmallShare(t *testing.T) {
	t.Parallel()
	needBinary(t)
	const count, kills = 5000, 12
	f := newFixture(t, shardSpec{count: count})
	state := filepath.Join(f.dir, "edge.state")
	c := newCrowd(f, 300)
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 12))
	var leftAtStart, lostBefore uint64 = count, 0
	var perKill []uint64
	for k := 0; k <= kills; k++ {
		p := startProc(t, f, state, firstStart(k == 0, "--per-user", "0")...)
		lost, left := p.metric(t, "shake_edge_tickets_lost_total"), p.metric(t, "shake_edge_tickets_left")
		if k > 0 {
			forfeited := lost - lostBefore
			perKill = append(perKill, forfeited)
			// Every reservation of the last run was made with at most leftAtStart
			// tickets remaining, and reserves at most its aheadLimit ahead.
			if bound := max(leftAtStart/aheadShare, count/tailShare, 1); forfeited > bound {
				t.Errorf("kill %d forfeited %d tickets with %d left, want at most %d", k, forfeited, leftAtStart, bound)
			}
		}
		lostBefore, leftAtStart = lost, left
		if k == kills {
			break
		}
		stop := make(chan struct{})
		go func() {
			time.Sleep(time.Duration(20+rng.IntN(150)) * time.Millisecond)
			p.cmd.Process.Kill()
			close(stop)
		}()
		c.shakeUntil(p.addr, stop)
		<-p.done
	}
	var total uint64
	for _, n := range perKill {
		total += n
	}
	t.Logf("forfeited per kill %v: %d of %d tickets in %d kills; %d left", perKill, total, count, kills, leftAtStart)
	c.check(t)
}

// TestBackToBackNextRoundReservedAhead: with rounds back to back there is no gap in
// which the next round looks "about to open", yet its first requests must not all
// wait on the disk: the reserver gives it its first block within preOpenWindow of
// its start while the current round is still open.
func TestBackToBackNextRoundReservedAhead(t *testing.T) {
	start := time.Unix(1_900_000_000, 0).UTC()
	h := backToBackHeader(10_000, start)
	d, _ := dispenserOn(t, h, false, time.Second, func() time.Time { return start })
	r0, r1 := d.rounds[0], d.rounds[1]
	if err := d.reserveAhead(r0.end - int64(2*preOpenWindow)); err != nil {
		t.Fatal(err)
	}
	if r0.reserved.Load() == 0 || r1.reserved.Load() != 0 {
		t.Fatalf("well before the end: round 0 reserved %d, round 1 %d", r0.reserved.Load(), r1.reserved.Load())
	}
	if err := d.reserveAhead(r0.end - int64(preOpenWindow/2)); err != nil {
		t.Fatal(err)
	}
	if r1.reserved.Load() == 0 {
		t.Fatal("round 1 opens in half a second and has no reservation")
	}
}

// runEdgeOnce runs `shake edge` that is expected to refuse to start, and returns its
// exit code and output.
func runEdgeOnce(t *testing.T, f *fixture, state string, extra ...string) (int, string) {
	t.Helper()
	args := append([]string{"edge", "--tickets", f.tickets, "--key", f.key, "--session-key", f.sessPath,
		"--state", state, "--listen", "127.0.0.1:0"}, extra...)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, testbin.Shake(t), args...).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), string(out)
	}
	if err != nil {
		t.Fatal(err)
	}
	return 0, string(out)
}

// TestProcessStateFileLifecycle is a lost state file, through the binary: a
// missing --state is exit 2 with one line that says why and how to do a genuine
// first start; --init-state creates it; --init-state again (a command line left
// unchanged, or a wiped volume's replacement run on an old one) is exit 2; a start
// without the flag resumes where the last one stopped, after SIGTERM or kill -9.
func TestProcessStateFileLifecycle(t *testing.T) {
	t.Parallel()
	needBinary(t)
	f := newFixture(t, shardSpec{count: 1000})
	state := filepath.Join(f.dir, "edge.state")
	code, out := runEdgeOnce(t, f, state)
	if code != 2 || strings.Count(out, "\n") != 1 || !strings.Contains(out, "does not exist") ||
		!strings.Contains(out, "again") || !strings.Contains(out, "--init-state") {
		t.Fatalf("missing state file: exit %d %q", code, out)
	}
	if _, err := os.Stat(state); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a refused start left a state file: %v", err)
	}
	p := startProc(t, f, state, "--init-state", "--per-user", "0")
	c := newCrowd(f, 20)
	stop := make(chan struct{})
	go func() { time.Sleep(50 * time.Millisecond); close(stop) }()
	c.shakeUntil(p.addr, stop)
	issued := p.metric(t, "shake_edge_tickets_issued_total")
	p.cmd.Process.Signal(syscall.SIGTERM)
	if err := <-p.done; err != nil {
		t.Fatalf("SIGTERM: %v", err)
	}
	code, out = runEdgeOnce(t, f, state, "--init-state")
	if code != 2 || strings.Count(out, "\n") != 1 || !strings.Contains(out, "already exists") {
		t.Fatalf("--init-state on an existing file: exit %d %q", code, out)
	}
	p = startProc(t, f, state, "--per-user", "0")
	if got := p.metric(t, "shake_edge_tickets_issued_total"); got != issued || issued == 0 {
		t.Fatalf("resumed with %d issued, the first run issued %d", got, issued)
	}
	p.cmd.Process.Kill()
	<-p.done
	code, out = runEdgeOnce(t, f, state, "--init-state")
	if code != 2 || !strings.Contains(out, "already exists") {
		t.Fatalf("--init-state after kill -9: exit %d %q", code, out)
	}
	p = startProc(t, f, state, "--per-user", "0")
	c.shakeUntil(p.addr, nil)
	c.check(t)
	if left := p.metric(t, "shake_edge_tickets_left"); left != 0 {
		t.Fatalf("%d tickets left after draining", left)
	}
}

// TestPerUserDefaultsToTheCampaign: without an explicit limit the edge takes the
// campaign's per_user from the shard header; an explicit one overrides it,
// 0 included.
func TestPerUserDefaultsToTheCampaign(t *testing.T) {
	wins := func(perUser int, cfgPerUser int) int {
		f := newFixture(t, shardSpec{count: 100, perUser: perUser})
		s := startEdge(t, f, func(c *Config) { c.PerUser = cfgPerUser })
		auth := "Bearer " + f.session(7)
		n := 0
		for i := 0; i < 10; i++ {
			if _, body, _ := do(s.Handler(), "POST", ShakePath, auth, nil); strings.Contains(body, `"won"`) {
				n++
			}
		}
		return n
	}
	for _, c := range []struct{ campaign, flag, want int }{
		{2, PerUserFromShard, 2}, {1, PerUserFromShard, 1}, {0, PerUserFromShard, 10},
		{2, 5, 5}, {2, 0, 10},
	} {
		if got := wins(c.campaign, c.flag); got != c.want {
			t.Errorf("campaign per_user %d, edge limit %d: %d wins of 10, want %d", c.campaign, c.flag, got, c.want)
		}
	}
}

// shakeOnce sends one shake for auth and returns the result and the token.
func shakeOnce(t *testing.T, addr, auth string) (string, string) {
	t.Helper()
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.Header.SetMethod("POST")
	req.SetRequestURI("http://" + addr + ShakePath)
	req.Header.Set("Authorization", auth)
	if err := fasthttp.DoTimeout(req, resp, 5*time.Second); err != nil || resp.StatusCode() != 200 {
		t.Fatalf("shake: %v %d %s", err, resp.StatusCode(), resp.Body())
	}
	w := decode(t, string(resp.Body()))
	return w.Result, w.Token
}

// TestProcessRestartForgetsWins is the edge's half of "an edge restart does not let a
// user open beyond the rule". The edge's per-user table is in memory only,
// so after a restart (SIGTERM or kill -9) a user who had reached the campaign's
// per_user wins again here, with another ticket: that is by design, the edge is the
// cheap first line. What stops the excess open is the verifier's campaign-wide rule
// (limit_reached), asserted by the verifier's tests; this test pins the edge side, so
// that nobody mistakes the edge's table for the rule.
func TestProcessRestartForgetsWins(t *testing.T) {
	t.Parallel()
	needBinary(t)
	f := newFixture(t, shardSpec{count: 100, perUser: 1})
	state := filepath.Join(f.dir, "edge.state")
	auth := "Bearer " + f.session(42)
	var tickets []uint64
	for run, stop := range []func(*edgeProc){
		func(p *edgeProc) { p.cmd.Process.Signal(syscall.SIGTERM) },
		func(p *edgeProc) { p.cmd.Process.Kill() },
		nil,
	} {
		// No --per-user: the campaign's per_user (1) from the shard header.
		p := startProc(t, f, state, firstStart(run == 0)...)
		res, tok := shakeOnce(t, p.addr, auth)
		if res != "won" {
			t.Fatalf("run %d: first shake %q", run, res)
		}
		tickets = append(tickets, f.checkToken(t, tok, 42))
		if res, _ := shakeOnce(t, p.addr, auth); res != "miss" {
			t.Fatalf("run %d: second shake in the round %q, want miss (per_user 1)", run, res)
		}
		if stop == nil {
			p.cmd.Process.Signal(syscall.SIGTERM)
			<-p.done
			break
		}
		stop(p)
		<-p.done
	}
	if tickets[0] == tickets[1] || tickets[1] == tickets[2] || tickets[0] == tickets[2] {
		t.Fatalf("the same ticket twice across restarts: %v", tickets)
	}
	t.Logf("user 42 won tickets %v in three runs of one edge with per_user 1: the verifier must refuse all but one open", tickets)
}
