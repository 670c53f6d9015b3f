package main

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"shake/bench"
	"shake/ticket"
)

// chain is a whole event on loopback: a broker, edges, a verifier and a settler, all
// real processes started with --admin-key.
type chain struct {
	f                 *campaignFixture
	edges, edgeAdmins []string
	verifier, verAdm  string
	settlerAdm        string
	ledger            string // the settler's SQLite ledger URL
	procs             map[string]*serverProc
}

func startChain(t *testing.T, tickets, edges int) *chain {
	t.Helper()
	f := newCampaign(t, tickets, edges)
	c := &chain{f: f, procs: map[string]*serverProc{}}
	br := startServer(t, 0, "broker", "--listen", "127.0.0.1:0", "--partitions", "4")
	brokers := br.waitLine(t, brokerRE, 20*time.Second)
	adminKey := func(role string) string { return f.key(ticket.AdminRoleKeyFile(role)) }
	for i := 0; i < edges; i++ {
		p := startServer(t, 0, f.edgeArgs(t, i, "--admin-key", adminKey("edge"), "--drain", "0s")...)
		c.edges = append(c.edges, p.waitLine(t, edgeReadyRE, 20*time.Second))
		c.edgeAdmins = append(c.edgeAdmins, p.adminAddr(t))
		c.procs[fmt.Sprintf("edge-%d", i)] = p
	}
	man := filepath.Join(f.out, "manifest.json")
	v := startServer(t, 0, "verifier", "--manifest", man, "--key", f.key("campaign.key"), "--session-key", f.key("session.key"),
		"--brokers", brokers, "--spool", filepath.Join(t.TempDir(), "spool"), "--listen", "127.0.0.1:0",
		"--admin-key", adminKey("verifier"), "--drain", "0s", "--min-replication", "1")
	c.verifier, c.verAdm = v.waitLine(t, verifierRE, 20*time.Second), v.adminAddr(t)
	c.procs["verifier"] = v
	c.ledger = "sqlite://" + filepath.Join(t.TempDir(), "ledger.db")
	s := startServer(t, 0, "settler", "--brokers", brokers, "--ledger", c.ledger,
		"--manifest", man, "--key", f.key("campaign.key"), "--listen", "127.0.0.1:0", "--admin-key", adminKey("settler"), "--min-replication", "1")
	c.settlerAdm = s.adminAddr(t)
	c.procs["settler"] = s
	waitStatus(t, c.settlerAdm, 200, `{"status":"ready"}`)
	return c
}

func (c *chain) admins() []string {
	return append(append(append([]string{}, c.edgeAdmins...), c.verAdm), c.settlerAdm)
}

// waitStatus polls an admin /readyz until it answers code and body.
func waitStatus(t *testing.T, admin string, code int, body string) {
	t.Helper()
	var gc int
	var gb string
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if gc, gb = get(t, "http://"+admin+"/readyz"); gc == code && gb == body {
			return
		}
	}
	t.Fatalf("%s /readyz: %d %s, want %d %s", admin, gc, gb, code, body)
}

// sumMetric adds one series over several admin listeners.
func sumMetric(t *testing.T, admins []string, series string) float64 {
	t.Helper()
	var s float64
	for _, a := range admins {
		s += metricValue(t, a, series)
	}
	return s
}

// winOn shakes edge public as fresh users until one wins and returns its token and uid.
func (c *chain) winOn(t *testing.T, public string, uid *uint64) (string, uint64) {
	t.Helper()
	for i := 0; i < 200; i++ {
		*uid++
		code, body, _ := post(t, "http://"+public+"/v1/shake", c.f.session(*uid), "")
		var r struct{ Result, Token string }
		json.Unmarshal([]byte(body), &r)
		if code == 200 && r.Result == "won" {
			return r.Token, *uid
		}
	}
	t.Fatalf("no win on %s", public)
	return "", 0
}

func (c *chain) open(t *testing.T, tok string, uid uint64) (int, string) {
	t.Helper()
	code, body, _ := post(t, "http://"+c.verifier+"/v1/open", c.f.session(uid), `{"token":"`+tok+`"}`)
	return code, body
}

// TestSwitchesUnderLoad runs the bench engine at a few thousand shakes per second
// against two edges (winners open through the verifier, the settler posts) and flips
// the switches while it runs: pause stops the issued counters the moment shake ctl
// returns and resume starts them again; shed_ratio=0.5 answers about half the shakes
// 429 with Retry-After; revoked_shards makes that shard's opens 422 while the other's
// open; open_paused answers 503 with the message; settler.paused holds settlement and
// /readyz says paused.
func TestSwitchesUnderLoad(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("whole-process test")
	}
	c := startChain(t, 200000, 2)
	f := c.f
	sk, _ := ticket.ReadKeyFile(f.key("session.key"))
	all := c.admins()
	issued := func() float64 { return sumMetric(t, c.edgeAdmins, "shake_edge_tickets_issued_total") }

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	resc := make(chan *bench.Result, 1)
	go func() {
		urls := []string{"http://" + c.edges[0], "http://" + c.edges[1]}
		res, err := bench.Run(ctx, bench.Config{EdgeURLs: urls, VerifierURL: "http://" + c.verifier, SessionKey: sk,
			Users: 200_000, Rate: 3000, Duration: 15 * time.Second, Think: time.Millisecond, NoRetry: true, Seed: 14})
		if err != nil {
			t.Errorf("bench: %v", err)
		}
		resc <- res
	}()
	// The bench mints its users' sessions first (200,000 HMACs under -race, which takes
	// seconds on a busy machine, with other whole-process tests running beside this one):
	// wait for the load to arrive.
	for deadline := time.Now().Add(90 * time.Second); issued() < 500; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no load arrived")
		}
	}

	// pause: not one ticket after shake ctl returns.
	ctl(t, f.keys, all, "pause")
	atPause := issued()
	closedAt := sumMetric(t, c.edgeAdmins, `shake_edge_shakes_total{result="closed"}`)
	time.Sleep(time.Second)
	afterPause := issued()
	closedNow := sumMetric(t, c.edgeAdmins, `shake_edge_shakes_total{result="closed"}`)
	t.Logf("pause: issued %v when shake ctl returned, %v one second later (%v shakes answered closed meanwhile)",
		atPause, afterPause, closedNow-closedAt)
	if afterPause != atPause {
		t.Errorf("%v tickets issued after shake ctl pause returned", afterPause-atPause)
	}
	if closedNow-closedAt < 300 {
		t.Errorf("only %v shakes answered closed in a second of pause at 3000/s: the load did not arrive", closedNow-closedAt)
	}
	ctl(t, f.keys, all, "resume")
	time.Sleep(500 * time.Millisecond)
	if got := issued(); got <= afterPause {
		t.Errorf("issued did not move after resume: %v", got)
	}

	// shed_ratio=0.5: about half the shakes get 429 with Retry-After.
	shakes := func() float64 {
		var s float64
		for _, r := range []string{"won", "miss", "closed", "retry"} {
			s += sumMetric(t, c.edgeAdmins, `shake_edge_shakes_total{result="`+r+`"}`)
		}
		return s
	}
	ctl(t, f.keys, all, "set", "edge.shed_ratio=0.5")
	code, _, retry := post(t, "http://"+c.edges[0]+"/v1/shake", f.session(1), "")
	for i := 0; i < 50 && code != 429; i++ {
		code, _, retry = post(t, "http://"+c.edges[0]+"/v1/shake", f.session(1), "")
	}
	if code != 429 || retry != "1" {
		t.Errorf("no 429 with Retry-After: 1 under shed_ratio=0.5: %d %q", code, retry)
	}
	// Counted at answer time: let the shakes begun before the change drain first. A shed
	// answer is quicker than a full one, so on a saturated machine a short window still
	// leans a little towards sheds; the decision itself is an exact coin.
	time.Sleep(300 * time.Millisecond)
	s0, shed0 := shakes(), sumMetric(t, c.edgeAdmins, "shake_edge_shed_total")
	time.Sleep(2 * time.Second)
	s1, shed1 := shakes(), sumMetric(t, c.edgeAdmins, "shake_edge_shed_total")
	ratio := (shed1 - shed0) / (s1 - s0)
	t.Logf("shed_ratio set 0.5, measured %.3f (%v of %v shakes)", ratio, shed1-shed0, s1-s0)
	if ratio < 0.42 || ratio > 0.58 {
		t.Errorf("shed ratio %.3f, want about 0.5", ratio)
	}
	ctl(t, f.keys, all, "set", "edge.shed_ratio=0")

	// revoked_shards=1: shard 1's tokens are refused, shard 0's still open.
	uid := uint64(50_000_000)
	tok0, u0 := c.winOn(t, c.edges[0], &uid)
	tok1, u1 := c.winOn(t, c.edges[1], &uid)
	ctl(t, f.keys, all, "set", "verifier.revoked_shards=1")
	if code, body := c.open(t, tok1, u1); code != 422 || body != `{"error":"revoked"}` {
		t.Errorf("open of a revoked shard's token: %d %s", code, body)
	}
	if code, body := c.open(t, tok0, u0); code != 200 {
		t.Errorf("open of shard 0 while shard 1 is revoked: %d %s", code, body)
	}
	if v := metricValue(t, c.verAdm, `shake_verifier_opens_total{result="revoked"}`); v < 1 {
		t.Errorf("revoked opens not counted: %v", v)
	}
	ctl(t, f.keys, all, "set", "verifier.revoked_shards=")
	if code, body := c.open(t, tok1, u1); code != 200 {
		t.Errorf("open after the revocation was lifted: %d %s", code, body)
	}

	// open_paused: 503 with the message; the token stays valid.
	tok2, u2 := c.winOn(t, c.edges[0], &uid)
	ctl(t, f.keys, all, "set", "verifier.open_paused=true", "verifier.message=payments resume at 21:00")
	code, body, retry := post(t, "http://"+c.verifier+"/v1/open", f.session(u2), `{"token":"`+tok2+`"}`)
	if code != 503 || body != `{"error":"unavailable","retry_after_ms":1000,"message":"payments resume at 21:00"}` || retry == "" {
		t.Errorf("open while open_paused: %d %s Retry-After %q", code, body, retry)
	}
	ctl(t, f.keys, all, "set", "verifier.open_paused=false", "verifier.message=")
	if code, body := c.open(t, tok2, u2); code != 200 {
		t.Errorf("open after open_paused was lifted: %d %s", code, body)
	}

	// settler.paused: nothing more is posted while opens go on; /readyz says paused.
	ctl(t, f.keys, all, "set", "settler.paused=true")
	posted := metricValue(t, c.settlerAdm, "shake_settler_posted_total")
	waitStatus(t, c.settlerAdm, 503, `{"status":"paused"}`)
	opens := metricValue(t, c.verAdm, `shake_verifier_opens_total{result="opened"}`)
	time.Sleep(time.Second)
	if got := metricValue(t, c.settlerAdm, "shake_settler_posted_total"); got != posted {
		t.Errorf("settler posted %v claims while paused", got-posted)
	}
	if got := metricValue(t, c.verAdm, `shake_verifier_opens_total{result="opened"}`); got <= opens {
		t.Errorf("no opens during the settler pause (the check proves nothing): %v", got)
	}
	ctl(t, f.keys, all, "set", "settler.paused=false")
	waitStatus(t, c.settlerAdm, 200, `{"status":"ready"}`)
	for deadline := time.Now().Add(10 * time.Second); metricValue(t, c.settlerAdm, "shake_settler_posted_total") <= posted; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the settler posted nothing after resume")
		}
	}

	res := <-resc
	if res != nil {
		st, _ := json.Marshal(res.Shake.Status)
		t.Logf("bench: %d shakes, status %s", res.Arrivals, st)
	}
	out := ctl(t, f.keys, all, "show")
	// Ten changes were fanned out (pause, resume, shed on and off, revoke and lift,
	// open_paused on and off, settler pause and resume): every server is at version 10.
	if strings.Count(out, "  10  ") != len(all) {
		t.Errorf("servers disagree on the version:\n%s", out)
	}
}
