package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"shake/internal/proc"
	"shake/ticket"
)

// fleet is a campaign made by the real generator and a set of real shake processes
// (broker, edges, verifiers, settler) started from the built binary, each logging to
// a file in its directory.
type fleet struct {
	t                        *testing.T
	bin, dir, camp, manifest string
	ckPath, skPath           string
	man                      *ticket.Manifest
	sess                     *ticket.SessionKey
	broker                   string
	client                   *fasthttp.Client
	retried                  atomic.Int64 // opens retried (no connection, or 503)
	ledgerURL, settlerAddr   string
	edgeAddrs, verifierAddrs []string
}

// newFleet generates campaign id with the given gen flags and starts an embedded broker.
func newFleet(t *testing.T, id string, genArgs ...string) *fleet {
	t.Helper()
	if testing.Short() {
		t.Skip("whole-process fleet test (builds the binary)")
	}
	dir := t.TempDir()
	f := &fleet{t: t, bin: shakeBinary(t), dir: dir, camp: filepath.Join(dir, "camp"),
		ckPath: filepath.Join(dir, "campaign.key"), skPath: filepath.Join(dir, "session.key"),
		client: &fasthttp.Client{MaxConnsPerHost: 512, ReadTimeout: 15 * time.Second, WriteTimeout: 5 * time.Second,
			MaxIdemponentCallAttempts: 1}}
	f.manifest = filepath.Join(f.camp, "manifest.json")
	for _, args := range [][]string{{"keys", "init", "--out", dir},
		append([]string{"gen", "--campaign", id, "--key", f.ckPath, "--out", f.camp}, genArgs...)} {
		if code, out, errOut := runBinary(t, args...); code != 0 {
			t.Fatalf("shake %v: exit %d\n%s%s", args, code, out, errOut)
		}
	}
	var err error
	if f.man, err = ticket.LoadManifest(f.manifest); err != nil {
		t.Fatal(err)
	}
	sk, err := ticket.ReadKeyFile(f.skPath)
	if err != nil {
		t.Fatal(err)
	}
	if f.sess, err = ticket.NewSessionKey(sk); err != nil {
		t.Fatal(err)
	}
	f.broker = f.freeAddr()
	p := f.start("broker", "broker", "--listen", f.broker, "--partitions", "4")
	f.waitTCP(p, f.broker)
	return f
}

func (f *fleet) freeAddr() string {
	a, err := proc.FreeAddr()
	if err != nil {
		f.t.Fatal(err)
	}
	return a
}

// start starts one process, logging to DIR/name.log, and kills it at the end of the test.
func (f *fleet) start(name string, args ...string) *proc.Proc {
	f.t.Helper()
	p, err := proc.Start(name, f.bin, args, filepath.Join(f.dir, name+".log"))
	if err != nil {
		f.t.Fatal(err)
	}
	f.t.Cleanup(func() {
		p.Kill()
		if f.t.Failed() {
			b, _ := os.ReadFile(filepath.Join(f.dir, name+".log"))
			f.t.Logf("%s log (tail):\n%s", name, tail(string(b), 3000))
		}
	})
	return p
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

func (f *fleet) waitTCP(p *proc.Proc, addr string) {
	f.t.Helper()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return
		}
		select {
		case <-p.Done():
			f.t.Fatalf("%s exited: %v", p.Name, p.Err())
		default:
		}
	}
	f.t.Fatalf("%s never listened on %s", p.Name, addr)
}

func (f *fleet) waitReady(p *proc.Proc, addr string) {
	f.t.Helper()
	if err := p.WaitReady(context.Background(), "http://"+addr+"/readyz", 60*time.Second); err != nil {
		f.t.Fatal(err)
	}
}

// startEdges starts one edge per shard with --per-user perUser.
func (f *fleet) startEdges(perUser int) {
	f.t.Helper()
	for i, sh := range f.man.Shards {
		addr := f.freeAddr()
		p := f.start(fmt.Sprintf("edge-%d", i), "edge", "--tickets", filepath.Join(f.camp, sh.File),
			"--key", filepath.Join(f.camp, sh.KeyFile), "--session-key", f.skPath,
			"--state", filepath.Join(f.dir, fmt.Sprintf("edge-%d.state", i)), "--listen", addr,
			"--init-state", "--per-user", strconv.Itoa(perUser))
		f.waitReady(p, addr)
		f.edgeAddrs = append(f.edgeAddrs, addr)
	}
}

// verifierArgs is the command line of the verifier of uid shard "I/V" on addr.
func (f *fleet) verifierArgs(shard, addr string) []string {
	return []string{"verifier", "--manifest", f.manifest, "--key", f.ckPath, "--session-key", f.skPath,
		"--brokers", f.broker, "--min-replication", "1", "--spool", filepath.Join(f.dir, "spool-"+strings.ReplaceAll(shard, "/", "of")),
		"--listen", addr, "--uid-shard", shard}
}

// startVerifiers starts n verifiers, uid shards 0/n .. n-1/n, and waits until each is ready.
func (f *fleet) startVerifiers(n int) []*proc.Proc {
	f.t.Helper()
	var ps []*proc.Proc
	for i := 0; i < n; i++ {
		addr := f.freeAddr()
		p := f.start(fmt.Sprintf("verifier-%d", i), f.verifierArgs(fmt.Sprintf("%d/%d", i, n), addr)...)
		f.verifierAddrs = append(f.verifierAddrs, addr)
		ps = append(ps, p)
	}
	for i, p := range ps {
		f.waitReady(p, f.verifierAddrs[i])
	}
	return ps
}

// startSettler starts a settler with an SQLite ledger.
func (f *fleet) startSettler() {
	f.t.Helper()
	f.ledgerURL = "sqlite://" + filepath.Join(f.dir, "ledger.db")
	f.settlerAddr = f.freeAddr()
	p := f.start("settler", "settler", "--brokers", f.broker, "--min-replication", "1", "--ledger", f.ledgerURL, "--manifest", f.manifest,
		"--key", f.ckPath, "--listen", f.settlerAddr)
	f.waitReady(p, f.settlerAddr)
}

// waitSettled waits until the ledger holds want tickets of the campaign.
func (f *fleet) waitSettled(want int64) {
	f.t.Helper()
	var got int64
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if got = settledTickets(f.t, f.ledgerURL, f.man.Campaign); got >= want {
			break
		}
	}
	if got != want {
		f.t.Fatalf("ledger holds %d tickets, want %d", got, want)
	}
}

// reconcile runs shake reconcile and returns its exit code and JSON.
func (f *fleet) reconcile() (int, map[string]any) {
	e := &settlerEnv{bin: f.bin, dir: f.dir, manifest: f.manifest, broker: f.broker, m: f.man}
	return e.reconcile(f.t, f.ledgerURL)
}

func (f *fleet) bearer(uid uint64) string {
	return "Bearer " + string(f.sess.Mint(nil, uid, time.Now().Add(time.Hour).Unix()))
}

// post sends one request and returns the status and body (status 0 on a transport error).
func (f *fleet) post(addr, path, auth, body string) (int, string) {
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI("http://" + addr + path)
	req.Header.SetMethod("POST")
	req.Header.Set("Authorization", auth)
	req.SetBodyString(body)
	if err := f.client.DoTimeout(req, resp, 15*time.Second); err != nil {
		return 0, err.Error()
	}
	return resp.StatusCode(), string(resp.Body())
}

// open opens tok for uid at addr, retrying (for up to 45 s) what a verifier being
// restarted answers: no connection, or 503.
func (f *fleet) open(addr string, uid uint64, tok string) (int, string) {
	deadline := time.Now().Add(45 * time.Second)
	for {
		st, b := f.post(addr, "/v1/open", f.bearer(uid), `{"token":"`+tok+`"}`)
		if (st != 0 && st != 503) || time.Now().After(deadline) {
			return st, b
		}
		f.retried.Add(1)
		time.Sleep(20 * time.Millisecond)
	}
}

// shakeToken shakes edge addr as uid and returns the token when it won.
func (f *fleet) shakeToken(addr string, uid uint64) (string, bool) {
	for attempt := 0; attempt < 50; attempt++ {
		st, b := f.post(addr, "/v1/shake", f.bearer(uid), "")
		switch {
		case st == 200 && strings.Contains(b, `"won"`):
			i := strings.Index(b, `"token":"`) + len(`"token":"`)
			return b[i : i+strings.IndexByte(b[i:], '"')], true
		case st == 200:
			return "", false
		case st == 429 || st == 0:
			time.Sleep(20 * time.Millisecond)
		default:
			f.t.Errorf("shake at %s: %d %s", addr, st, b)
			return "", false
		}
	}
	f.t.Errorf("shake at %s: no answer after 50 tries", addr)
	return "", false
}

// fleetAnswer is one open and what it got.
type fleetAnswer struct {
	uid    uint64
	token  string
	status int
	body   string
}

// TestFleetPerUserRule: 3 edges and 2 verifiers (uid shards 0/2 and 1/2) on one topic,
// 2,000 users who each shake every edge several times and open every ticket they win
// (the edges allow per_user wins each, so a user holds up to 3 x per_user tokens).
// Verifier 0 is killed with SIGKILL in the middle of the run and restarted. For per_user
// 1 and 2: no user opens more than per_user tickets in the round, every user who won
// enough opens exactly per_user, every answer is the same when asked again after the
// restart, and the settler's ledger and reconcile agree (no user over the rule).
func TestFleetPerUserRule(t *testing.T) {
	t.Parallel()
	for _, perUser := range []int{1, 2} {
		t.Run(fmt.Sprintf("per_user_%d", perUser), func(t *testing.T) { t.Parallel(); runFleetRule(t, perUser) })
	}
}

func runFleetRule(t *testing.T, perUser int) {
	const users, edges, shakesPerEdge = 2000, 3, 4
	count := users * edges * perUser * 6 / 5
	f := newFleet(t, fmt.Sprintf("fleet-%d", perUser), "--budget", strconv.Itoa(count*100), "--count", strconv.Itoa(count),
		"--edges", strconv.Itoa(edges), "--per-user", strconv.Itoa(perUser), "--seed", "11", "--verifiers", "2")
	f.startEdges(perUser)
	vers := f.startVerifiers(2)
	f.startSettler()

	// A uid sent to the wrong verifier is 421, naming the verifier's own shard.
	if st, b := f.post(f.verifierAddrs[0], "/v1/open", f.bearer(1), `{"token":"x"}`); st != 421 ||
		b != `{"error":"misdirected","uid_shard":"0/2"}` {
		t.Fatalf("uid 1 at verifier 0/2: %d %s", st, b)
	}

	var (
		mu       sync.Mutex
		answers  []fleetAnswer
		shakes   atomic.Int64
		done     atomic.Int64
		restarts = make(chan struct{})
		atKill   int64
	)
	// Kill verifier 0 with SIGKILL once a third of the users are through, and restart it
	// on the same address and spool while the others keep opening.
	go func() {
		defer close(restarts)
		for done.Load() < users/3 {
			time.Sleep(5 * time.Millisecond)
		}
		vers[0].Kill()
		atKill = done.Load()
		time.Sleep(200 * time.Millisecond)
		p := f.start("verifier-0-restarted", f.verifierArgs("0/2", f.verifierAddrs[0])...)
		f.waitReady(p, f.verifierAddrs[0])
	}()
	work := make(chan uint64)
	var wg sync.WaitGroup
	for w := 0; w < 48; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for uid := range work {
				var toks []string
				for k := 0; k < shakesPerEdge; k++ {
					for _, e := range f.edgeAddrs {
						shakes.Add(1)
						if tok, ok := f.shakeToken(e, uid); ok {
							toks = append(toks, tok)
						}
					}
				}
				for _, tok := range toks {
					st, b := f.open(f.verifierAddrs[uid%2], uid, tok)
					mu.Lock()
					answers = append(answers, fleetAnswer{uid, tok, st, b})
					mu.Unlock()
				}
				done.Add(1)
			}
		}()
	}
	for uid := uint64(1); uid <= users; uid++ {
		work <- uid * 7919 // spread over both uid shards and the hash
	}
	close(work)
	wg.Wait()
	<-restarts
	if atKill >= users || f.retried.Load() == 0 {
		t.Fatalf("the kill did not land mid-run: %d users done at the kill, %d opens retried", atKill, f.retried.Load())
	}
	rebuild, _ := metric(f.verifierAddrs[0], "shake_verifier_rebuild_seconds")

	tokens, opened, limited := map[uint64]int{}, map[uint64]int{}, map[uint64]int{}
	openedTickets := map[string]uint64{}
	for _, a := range answers {
		tokens[a.uid]++
		switch {
		case a.status == 200:
			opened[a.uid]++
			i := strings.Index(a.body, `"ticket":"`) + len(`"ticket":"`)
			id := a.body[i : i+strings.IndexByte(a.body[i:], '"')]
			if prev, dup := openedTickets[id]; dup {
				t.Fatalf("ticket %s opened by uids %d and %d", id, prev, a.uid)
			}
			openedTickets[id] = a.uid
		case a.status == 409 && a.body == `{"error":"limit_reached"}`:
			limited[a.uid]++
		default:
			t.Fatalf("uid %d: open answered %d %s", a.uid, a.status, a.body)
		}
	}
	for uid, n := range tokens {
		if want := min(n, perUser); opened[uid] != want {
			t.Fatalf("uid %d won %d tickets and opened %d, want %d (per_user %d)", uid, n, opened[uid], want, perUser)
		}
	}
	// Every answer again, now that verifier 0 was restarted: the same, to the byte.
	changed := 0
	for _, a := range answers {
		if st, b := f.open(f.verifierAddrs[a.uid%2], a.uid, a.token); st != a.status || b != a.body {
			changed++
			if changed < 5 {
				t.Errorf("uid %d: first %d %s, after the restart %d %s", a.uid, a.status, a.body, st, b)
			}
		}
	}
	if changed > 0 {
		t.Fatalf("%d of %d answers changed after the restart", changed, len(answers))
	}
	f.waitSettled(int64(len(openedTickets)))
	code, rep := f.reconcile()
	// over_limit_users is reconcile's second check of the rule, from the ledger.
	if code != 0 || rep["ok"] != true || rep["over_limit_users"] != float64(0) {
		t.Fatalf("reconcile: exit %d, %v", code, rep)
	}
	nLimited, maxOpened := 0, 0
	for _, n := range limited {
		nLimited += n
	}
	for _, n := range opened {
		maxOpened = max(maxOpened, n)
	}
	t.Logf("per_user %d: %d users, %d shakes, %d tokens won, %d opened (200), %d limit_reached, %d postings, "+
		"at most %d opened per user; verifier 0 killed with SIGKILL after %d users (%d opens retried), rebuilt in %.3fs; "+
		"%d answers asked again: 0 changed",
		perUser, len(tokens), shakes.Load(), len(answers), len(openedTickets), nLimited,
		len(openedTickets), maxOpened, atKill, f.retried.Load(), rebuild, len(answers))
}
