//go:build chaos

package chaos

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"shake/bench"
	"shake/internal/testproxy"
	"shake/settler/ledger"
)

// Fault kinds, each injected at least once per run.
type faultKind int

const (
	fKillEdge          faultKind = iota // SIGKILL one edge, restart it
	fKillVerifier                       // SIGKILL the verifier, restart it
	fKillSettler                        // SIGKILL the settler, restart it
	fKillBroker                         // SIGKILL the broker, restart it (same --data)
	fBrokerStop                         // SIGTERM the broker, leave it down a while, restart
	fPGDown                             // cut the settler off PostgreSQL a while
	fTermPeak                           // SIGTERM an edge, the verifier or the settler under load, restart
	fKillSettler2                       // seed 777: SIGKILL the settler, restart, SIGKILL it again while it rejoins, restart
	fHoleVerifierKafka                  // black-hole the verifier's Kafka traffic (nothing forwarded, nothing closed)
	fHoleSettlerKafka                   // black-hole the settler's Kafka traffic
	fHolePG                             // black-hole the settler's PostgreSQL traffic
	fSlowLedger                         // add 20-200 ms to every chunk between the settler and PostgreSQL
	fSpoolFull                          // black-hole the verifier's Kafka long enough to fill its (small) spool
	// Switches, flipped on the running chain through the admin API (switches_test.go).
	fSwPause        // edge.paused: every shake answers closed, nothing is issued
	fSwCloseRound   // edge.closed_rounds=[0]: the round closed early, nothing of it is issued
	fSwShed         // edge.shed_ratio 0.30-0.70: that share of shakes answers 429 with Retry-After
	fSwDegradeOpen  // verifier.open_paused + message: every open 503 with the message, nothing claimed
	fSwRevoke       // verifier.revoked_shards=[k]: shard k's tokens answer 422 revoked
	fSwPauseSettler // settler.paused: nothing posted, /readyz 503 paused
	fSwEdgePerUser  // edge.per_user=0 (no limit on the edges): the verifiers alone hold the per-user rule
	nFaultKinds
)

var faultNames = [nFaultKinds]string{"kill-edge", "kill-verifier", "kill-settler", "kill-broker",
	"broker-stop", "pg-down", "term-under-load", "kill-settler-twice", "hole-verifier-kafka",
	"hole-settler-kafka", "hole-pg", "slow-ledger", "spool-full",
	"sw-pause", "sw-close-round", "sw-shed", "sw-degrade-open", "sw-revoke-shard", "sw-pause-settler", "sw-edge-per-user"}

// Faults run in three lanes at once, so that they overlap: processes die while links are
// partitioned, slowed or full, and while switches pause, shed, close or revoke.
var lanes = [][]faultKind{
	{fKillEdge, fKillVerifier, fKillSettler, fKillBroker, fBrokerStop, fTermPeak, fKillSettler2},
	{fPGDown, fHoleVerifierKafka, fHoleSettlerKafka, fHolePG, fSlowLedger, fSpoolFull},
	{fSwPause, fSwCloseRound, fSwShed, fSwDegradeOpen, fSwRevoke, fSwPauseSettler, fSwEdgePerUser},
}

// verifiers is how many uid-sharded verifiers the chain runs (--uid-shard I/V).
const verifiers = 2

// spoolMaxBytes is the verifier's --spool-max-bytes in chaos runs: small, so that a
// Kafka outage under load fills it (opens get 503) in seconds.
const spoolMaxBytes = 256 << 10

// fault is one scheduled injection.
type fault struct {
	at     time.Duration // from the start of the load
	kind   faultKind
	target int           // kill-edge, kill-verifier: index; term-under-load: edge index, then verifiers, then the settler; see makeSchedule for the switches
	down   time.Duration // broker-stop, pg-down: how long the component stays away
}

func (f fault) String() string {
	return fmt.Sprintf("%s@%v(target %d, down %v)", faultNames[f.kind], f.at.Truncate(time.Millisecond), f.target, f.down.Truncate(time.Millisecond))
}

// makeSchedule draws the faults of one lane from rng: every kind of the lane once, then
// random kinds of it, one about every 5 s, spread over the load with jitter. The same
// seed gives the same schedule (the moments are offsets from the start of the load; how
// long a restart takes on the machine can delay the ones after it in its lane).
func makeSchedule(rng *rand.Rand, d time.Duration, edges int, lane []faultKind) []fault {
	n := max(len(lane), int(d/(5*time.Second)))
	kinds := append([]faultKind{}, lane...)
	for len(kinds) < n {
		kinds = append(kinds, lane[rng.IntN(len(lane))])
	}
	rng.Shuffle(len(kinds), func(i, j int) { kinds[i], kinds[j] = kinds[j], kinds[i] })
	start, span := 2*time.Second, d-5*time.Second
	if span < time.Second {
		span = time.Second
	}
	slot := span / time.Duration(n)
	out := make([]fault, n)
	for i, k := range kinds {
		f := fault{kind: k, at: start + time.Duration(i)*slot + time.Duration(rng.Int64N(int64(slot/2)+1))}
		switch k {
		case fKillEdge:
			f.target = rng.IntN(edges)
		case fKillVerifier:
			f.target = rng.IntN(verifiers)
		case fTermPeak:
			f.target = rng.IntN(edges + verifiers + 1)
		case fSwPause, fSwCloseRound, fSwDegradeOpen, fSwPauseSettler, fSwShed, fSwRevoke:
			f.down = 2*time.Second + time.Duration(rng.Int64N(int64(3*time.Second)))
			switch k {
			case fSwShed:
				f.target = 30 + rng.IntN(41) // percent shed
			case fSwRevoke:
				f.target = rng.IntN(edges) // the shard
			}
		case fSwEdgePerUser:
			f.down = 3*time.Second + time.Duration(rng.Int64N(int64(3*time.Second)))
		case fBrokerStop, fPGDown, fHoleVerifierKafka, fHoleSettlerKafka, fHolePG:
			f.down = time.Second + time.Duration(rng.Int64N(int64(4*time.Second)))
		case fKillSettler2:
			// The second kill lands while the restarted settler's join waits for the
			// first one's session (6 s) to end.
			f.down = 500*time.Millisecond + time.Duration(rng.Int64N(int64(2500*time.Millisecond)))
		case fSlowLedger:
			f.down = 3*time.Second + time.Duration(rng.Int64N(int64(5*time.Second)))
			f.target = 20 + rng.IntN(181) // ms per chunk
		case fSpoolFull:
			f.down = 5*time.Second + time.Duration(rng.Int64N(int64(3*time.Second)))
		}
		out[i] = f
	}
	return out
}

// chaosRun is one TestChaos run in progress.
type chaosRun struct {
	t       testing.TB
	replay  string
	c       *campaign
	bin     string
	edges   []*service
	vers    []*service // uid-sharded: vers[i] runs --uid-shard i/len(vers)
	set     *service
	brk     *service
	proxy   *testproxy.Proxy
	vkafka  *kafkaProxy // between the verifiers and the broker
	skafka  *kafkaProxy // between the settler and the broker
	pgURL   string
	ledger  ledger.Ledger // read directly (not through the proxy), for the settler-pause check
	truth   *ledgerOfTruth
	openURL string // the verifiers' tap

	mu       sync.Mutex
	counts   [nFaultKinds]int
	events   []string
	section  string         // the invariant being checked, for the soak table
	breaches map[string]int // by invariant

	opened, posted int // tickets answered 200, tickets posted
	drainSeconds   float64
	earlyExits     int // restarts after a fault that exited before ready and were started again
	episodes       []*episode
}

// Invariants, as the soak table names them.
const (
	invSigterm   = "sigterm-exit-0"
	invIssueOnce = "issued-once"
	invOpens     = "opens-genuine"
	invDrain     = "settles-drain"
	invPostings  = "posted-exactly"
	invResources = "bounded-resources"
	invReconcile = "reconciles"
	invLogs      = "logs-clean"
	invSwitches  = "switches-hold"
	invPerUser   = "per-user-limit"
	invRouting   = "uid-routing"
)

var invariants = []string{invIssueOnce, invOpens, invDrain, invPostings, invReconcile, invPerUser, invSwitches, invRouting,
	invResources, invSigterm, invLogs}

// breach reports one violated invariant, with the seed to replay it.
func (r *chaosRun) breach(format string, args ...any) {
	r.t.Helper()
	r.mu.Lock()
	sec := r.section
	if sec == "" {
		sec = invSigterm // during the run, only a SIGTERM that did not exit 0 is a breach
	}
	if r.breaches == nil {
		r.breaches = map[string]int{}
	}
	r.breaches[sec]++
	r.mu.Unlock()
	r.t.Errorf("BREACH: "+format+" ["+r.replay+"]", args...)
}

// checking names the invariant the next breaches belong to.
func (r *chaosRun) checking(inv string) {
	r.mu.Lock()
	r.section = inv
	r.mu.Unlock()
}

// services returns every process, in the order that loses nothing on a stop.
func (r *chaosRun) services() []*service {
	return append(r.servers(), r.brk)
}

// servers returns the edges, the verifiers and the settler: the servers with switches.
func (r *chaosRun) servers() []*service {
	return append(append(append([]*service{}, r.edges...), r.vers...), r.set)
}

// inject runs one fault to completion: the component is back and ready when it returns.
func (r *chaosRun) inject(ctx context.Context, f fault) error {
	restart := func(s *service) error {
		early, err := s.restart(ctx)
		if early > 0 {
			r.mu.Lock()
			r.earlyExits++
			r.events = append(r.events, fmt.Sprintf("%s exited before it was ready %d times after %s (restarted, as a supervisor would; see %s)",
				s.name, early, faultNames[f.kind], s.logPath))
			r.mu.Unlock()
		}
		if err != nil {
			return fmt.Errorf("restarting %s after %s: %w", s.name, faultNames[f.kind], err)
		}
		return nil
	}
	term := func(s *service) error {
		if err := s.stop(30 * time.Second); err != nil {
			r.breach("%s did not exit 0 on SIGTERM under load: %v (see %s)", s.name, err, s.logPath)
		}
		return restart(s)
	}
	switch f.kind {
	case fKillEdge:
		r.edges[f.target].kill()
		return restart(r.edges[f.target])
	case fKillVerifier:
		r.vers[f.target].kill()
		return restart(r.vers[f.target])
	case fKillSettler:
		r.set.kill()
		return restart(r.set)
	case fKillBroker:
		r.brk.kill()
		return restart(r.brk)
	case fBrokerStop:
		if err := r.brk.stop(30 * time.Second); err != nil {
			r.breach("broker did not exit 0 on SIGTERM: %v (see %s)", err, r.brk.logPath)
		}
		sleep(ctx, f.down)
		return restart(r.brk)
	case fPGDown:
		r.proxy.Down()
		sleep(ctx, f.down)
		return r.proxy.Up()
	case fTermPeak:
		switch {
		case f.target < len(r.edges):
			return term(r.edges[f.target])
		case f.target < len(r.edges)+len(r.vers):
			return term(r.vers[f.target-len(r.edges)])
		default:
			return term(r.set)
		}
	case fKillSettler2:
		r.set.kill()
		if err := restart(r.set); err != nil {
			return err
		}
		sleep(ctx, f.down)
		r.set.kill()
		return restart(r.set)
	case fHoleVerifierKafka, fSpoolFull:
		r.vkafka.gate.Hole(true)
		sleep(ctx, f.down)
		r.vkafka.gate.Hole(false)
		return nil
	case fHoleSettlerKafka:
		r.skafka.gate.Hole(true)
		sleep(ctx, f.down)
		r.skafka.gate.Hole(false)
		return nil
	case fHolePG:
		r.proxy.Gate.Hole(true)
		sleep(ctx, f.down)
		r.proxy.Gate.Hole(false)
		return nil
	case fSlowLedger:
		r.proxy.Gate.Slow(time.Duration(f.target) * time.Millisecond)
		sleep(ctx, f.down)
		r.proxy.Gate.Slow(0)
		return nil
	}
	if switchKind(f.kind) {
		return r.injectSwitch(ctx, f)
	}
	return fmt.Errorf("unknown fault kind %d", f.kind)
}

// runFaults injects the schedule, in order, until it is done or ctx ends.
func (r *chaosRun) runFaults(ctx context.Context, loadStart time.Time, sched []fault) error {
	for _, f := range sched {
		sleep(ctx, time.Until(loadStart.Add(f.at)))
		if ctx.Err() != nil {
			return nil
		}
		t0 := time.Now()
		if err := r.inject(ctx, f); err != nil {
			return err
		}
		r.mu.Lock()
		r.counts[f.kind]++
		r.events = append(r.events, fmt.Sprintf("%v %s took %v", time.Since(loadStart).Truncate(time.Millisecond), f, time.Since(t0).Truncate(time.Millisecond)))
		r.mu.Unlock()
	}
	return nil
}

func envDuration(t *testing.T, name string, def time.Duration) time.Duration {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		t.Fatalf("%s=%q: want a positive Go duration", name, v)
	}
	return d
}

func envFloat(t *testing.T, name string, def float64) float64 {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || f <= 0 {
		t.Fatalf("%s=%q: want a positive number", name, v)
	}
	return f
}

// TestChaos runs the whole chain as real processes under load while a seeded schedule
// kills, stops and cuts off its components, then checks the money invariants. See
// README.md for the knobs (SHAKE_CHAOS_SEED, SHAKE_CHAOS_DURATION, SHAKE_CHAOS_RATE).
func TestChaos(t *testing.T) {
	pgURL := os.Getenv("SHAKE_TEST_POSTGRES")
	if pgURL == "" {
		t.Skip("SHAKE_TEST_POSTGRES is unset: TestChaos needs a PostgreSQL ledger " +
			"(CI sets it, e.g. postgres://postgres@127.0.0.1:5432/test?sslmode=disable)")
	}
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("SHAKE_CHAOS_SEED"); v != "" {
		var err error
		if seed, err = strconv.ParseUint(v, 10, 64); err != nil {
			t.Fatalf("SHAKE_CHAOS_SEED=%q: want a decimal uint64", v)
		}
	}
	duration := envDuration(t, "SHAKE_CHAOS_DURATION", 60*time.Second)
	rate := envFloat(t, "SHAKE_CHAOS_RATE", 300)
	const edges = 2
	// Enough tickets that the pool lasts the whole load (about 0.6 per shake sent; a
	// switch that holds after the pool ran dry would test nothing), and half as many
	// users as tickets: many users win on both edges (and more while sw-edge-per-user
	// lifts the edges' rule), so the verifiers' per-user rule is met on every run.
	tickets := uint64(min(max(rate*duration.Seconds()*0.6, 20000), 150000))
	users := int(max(tickets/2, 10000))
	replay := fmt.Sprintf("replay with SHAKE_CHAOS_SEED=%d", seed)
	t.Logf("chaos seed %d, duration %v, rate %.0f/s (%s)", seed, duration, rate, replay)
	rng := rand.New(rand.NewPCG(seed, seed^0x6368616f73))

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if dl, ok := t.Deadline(); ok {
		ctx, cancel = context.WithDeadline(ctx, dl.Add(-30*time.Second))
		defer cancel()
	}

	bin := shakeBinary(t)
	work, err := os.MkdirTemp("", "shake-chaos-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() || os.Getenv("SHAKE_CHAOS_KEEP") != "" {
			t.Logf("work directory kept (logs in %s/logs) [%s]", work, replay)
			return
		}
		os.RemoveAll(work)
	})
	logs := filepath.Join(work, "logs")
	if err := os.MkdirAll(logs, 0o755); err != nil {
		t.Fatal(err)
	}
	id := "chaos-" + strconv.FormatUint(seed, 36) + "-" + strconv.FormatInt(time.Now().Unix(), 36)
	c := newCampaign(t, bin, filepath.Join(work, "campaign"), id, tickets, edges, verifiers, rng.Uint64())
	t.Logf("campaign %s: %d tickets, budget %d, %d shards, in %s", id, c.manifest.Count, c.manifest.Budget, len(c.manifest.Shards), c.dir)

	// PostgreSQL, reached by the settler only through the proxy.
	pu, err := url.Parse(pgURL)
	if err != nil {
		t.Fatalf("SHAKE_TEST_POSTGRES: %v", err)
	}
	target := pu.Host
	if pu.Port() == "" {
		target += ":5432"
	}
	proxy, err := testproxy.Start(target)
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.Close()
	su := *pu
	su.Host = proxy.Addr()
	settlerLedger := su.String()

	r := &chaosRun{t: t, replay: replay, c: c, bin: bin, proxy: proxy, pgURL: pgURL}
	mk := func(name string, args []string, http bool) *service {
		s, err := newService(name, bin, args, logs, http)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	if r.ledger, err = ledger.Open(ctx, pgURL); err != nil {
		t.Fatalf("opening the ledger: %v", err)
	}
	defer r.ledger.Close()
	// Every server takes switches from the admin API and keeps them in its own file, so
	// that one restarted under a switch comes back with it.
	swDir := filepath.Join(work, "switches")
	if err := os.MkdirAll(swDir, 0o755); err != nil {
		t.Fatal(err)
	}
	switches := func(name string) []string {
		return []string{"--admin-key", c.roleKeyPath(name), "--switches", filepath.Join(swDir, name+".json")}
	}
	r.brk = mk("broker", []string{"broker", "--data", filepath.Join(work, "broker"), "--partitions", "4", "--log-format", "json"}, false)
	for i := 0; i < edges; i++ {
		name := fmt.Sprintf("edge-%03d", i)
		r.edges = append(r.edges, mk(name, append(c.edgeArgs(i), switches(name)...), true))
	}
	// The verifier and the settler each reach the broker through a proxy of their own,
	// so that either one's Kafka traffic can be black-holed alone.
	if r.vkafka, err = startKafkaProxy("verifier", r.brk.addr); err != nil {
		t.Fatal(err)
	}
	defer r.vkafka.close()
	if r.skafka, err = startKafkaProxy("settler", r.brk.addr); err != nil {
		t.Fatal(err)
	}
	defer r.skafka.close()
	// uid-sharded verifiers, each with a spool of its own.
	for i := 0; i < verifiers; i++ {
		name := fmt.Sprintf("verifier-%d", i)
		args := withFlag(c.verifierArgs(r.vkafka.addr), "--spool", filepath.Join(work, "spool-"+strconv.Itoa(i)))
		args = append(append(args, "--spool-max-bytes", strconv.Itoa(spoolMaxBytes), "--uid-shard", fmt.Sprintf("%d/%d", i, verifiers)),
			switches(name)...)
		r.vers = append(r.vers, mk(name, args, true))
	}
	r.set = mk("settler", append([]string{"settler", "--brokers", r.skafka.addr, "--min-replication", "1", "--ledger", settlerLedger,
		"--manifest", c.manPath, "--key", c.ckPath, "--session-timeout", "6s", "--log-format", "json"}, switches("settler")...), true)
	r.set.readyPaused = true // a settler restarted under settler.paused is ready while it says paused
	defer func() {
		for _, s := range r.services() {
			if s.running() {
				s.kill()
			}
		}
	}()
	for _, s := range append([]*service{r.brk}, r.servers()...) {
		if err := s.start(ctx); err != nil {
			t.Fatalf("starting %s: %v (log %s)", s.name, err, s.logPath)
		}
	}

	// Taps between the bench and the servers: they see every token and every open.
	truth := newLedgerOfTruth(c)
	truth.verifiers = verifiers
	var edgeURLs []string
	var taps []*tap
	for i, s := range r.edges {
		tp, err := startTap(s.name, []string{s.addr}, nil, truth.onShake(s.name))
		if err != nil {
			t.Fatal(err)
		}
		taps = append(taps, tp)
		edgeURLs = append(edgeURLs, tp.url())
		_ = i
	}
	// The verifiers' tap routes every open by uid, as the load balancer does, and sends
	// some also to a verifier that does not own the uid (they must answer 421).
	var verAddrs []string
	for _, v := range r.vers {
		verAddrs = append(verAddrs, v.addr)
	}
	vtap, err := startTap("verifiers", verAddrs, truth.routeUID, truth.onOpen)
	if err != nil {
		t.Fatal(err)
	}
	vtap.probe = truth.probeMisdirected()
	r.truth, r.openURL = truth, vtap.url()
	taps = append(taps, vtap)
	defer func() {
		for _, tp := range taps {
			tp.close()
		}
	}()

	var scheds [][]fault
	for _, lane := range lanes {
		scheds = append(scheds, makeSchedule(rng, duration, edges, lane))
	}
	var windows []time.Duration
	for total := time.Duration(0); total < duration; {
		w := 4*time.Second + time.Duration(rng.Int64N(int64(5*time.Second)))
		w = min(w, duration-total)
		windows = append(windows, w)
		total += w
	}
	for i, sched := range scheds {
		t.Logf("schedule, lane %d (%d faults): %v", i, len(sched), sched)
	}

	// Load, in back-to-back bench windows, while the faults run.
	loadStart := time.Now()
	faultCtx, stopFaults := context.WithCancel(ctx)
	faultErr := make(chan error, len(scheds))
	for _, sched := range scheds {
		go func() { faultErr <- r.runFaults(faultCtx, loadStart, sched) }()
	}
	var results []*bench.Result
	for i, w := range windows {
		res, err := bench.Run(ctx, bench.Config{
			Label: fmt.Sprintf("w%d", i), EdgeURLs: edgeURLs, VerifierURL: vtap.url(),
			SessionKey: c.sessionKey, Users: users, Rate: rate, Ramp: w / 3, Duration: w,
			Think: 20 * time.Millisecond, Timeout: 5 * time.Second, Seed: rng.Uint64(),
		})
		if res != nil {
			results = append(results, res)
			t.Logf("window %d (%v): shakes %d %v errors %v | opens %d errors %v", i, w, res.Shake.Requests,
				res.Shake.Results, res.Shake.Errors, res.OpenedN, openErrors(res))
		}
		if err != nil {
			t.Errorf("bench window %d: %v [%s]", i, err, replay)
			break
		}
	}
	t.Logf("load done after %v", time.Since(loadStart).Truncate(time.Millisecond))
	// Let the schedule finish what is due: faults drawn inside the duration still run
	// even when the load windows ended a little early, so a seed always replays in full.
	late := time.After(time.Until(loadStart.Add(duration + 2*time.Minute)))
	for range scheds {
		var ferr error
		select {
		case ferr = <-faultErr:
		case <-late:
			stopFaults()
			ferr = <-faultErr
		}
		if ferr != nil {
			t.Errorf("fault injection: %v [%s]", ferr, replay)
		}
	}
	stopFaults()
	for k := faultKind(0); k < nFaultKinds; k++ {
		t.Logf("faults injected: %-16s %d", faultNames[k], r.counts[k])
	}
	for _, e := range r.events {
		t.Logf("  %s", e)
	}

	// Restore everything.
	for _, g := range []*testproxy.Gate{&proxy.Gate, &r.vkafka.gate, &r.skafka.gate} {
		g.Hole(false)
		g.Slow(0)
	}
	if err := proxy.Up(); err != nil {
		t.Fatalf("PostgreSQL proxy cannot listen again: %v", err)
	}
	for _, s := range append([]*service{r.brk}, r.servers()...) {
		if !s.running() {
			if err := s.start(ctx); err != nil {
				t.Fatalf("restoring %s: %v (log %s) [%s]", s.name, err, s.logPath, replay)
			}
		}
	}
	if err := r.resetSwitches(ctx); err != nil {
		t.Fatalf("restoring the switches: %v [%s]", err, replay)
	}

	r.check(ctx, results, truth)
	r.soakResult(seed, duration, rate)
}

// soakResult prints one machine-readable line for TestChaosSoak's table.
func (r *chaosRun) soakResult(seed uint64, d time.Duration, rate float64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	faults := map[string]int{}
	for k := faultKind(0); k < nFaultKinds; k++ {
		faults[faultNames[k]] = r.counts[k]
	}
	b, _ := json.Marshal(map[string]any{"seed": seed, "duration": d.String(), "rate": rate, "faults": faults,
		"breaches": r.breaches, "early_exits": r.earlyExits, "opened": r.opened, "posted": r.posted, "drain_s": r.drainSeconds,
		"failed": r.t.Failed()})
	fmt.Printf("SOAK-RESULT %s\n", b)
}

// openErrors returns a run's open errors (nil when it opened nothing).
func openErrors(res *bench.Result) map[string]int64 {
	if res.Open == nil {
		return nil
	}
	return res.Open.Errors
}

// opened is a ticket a client was answered 200 "opened" for.
type opened struct {
	uid    uint64
	amount int64
}

type postingRow struct {
	amount int64
	uid    string
	n      int
}

// check waits for settlement to drain and checks every invariant.
func (r *chaosRun) check(ctx context.Context, results []*bench.Result, truth *ledgerOfTruth) {
	t := r.t
	c := r.c
	truth.mu.Lock()
	defer truth.mu.Unlock()

	// 1. No ticket issued to two users: every won token the edges handed out, opened
	// with the shard keys derived from campaign.key.
	r.checking(invIssueOnce)
	issued := map[uint64][]issue{}
	for _, is := range truth.issues {
		issued[is.tok.Ticket] = append(issued[is.tok.Ticket], is)
		if is.tok.UID != is.sessUID {
			r.breach("%s sealed ticket %d for uid %d, but uid %d asked", is.edge, is.tok.Ticket, is.tok.UID, is.sessUID)
		}
		if fmt.Sprintf("edge-%03d", is.tok.Shard) != is.edge || !c.manifest.InShard(int(is.tok.Shard), is.tok.Ticket) {
			r.breach("%s handed out ticket %d sealed as shard %d, outside its range", is.edge, is.tok.Ticket, is.tok.Shard)
		}
	}
	for _, u := range truth.undecodable {
		r.breach("an edge handed out a token the campaign keys cannot open: %s", u)
	}
	doubleUsers, doubleSame := 0, 0
	for id, list := range issued {
		if len(list) < 2 {
			continue
		}
		uids := map[uint64]bool{}
		for _, is := range list {
			uids[is.tok.UID] = true
		}
		if len(uids) > 1 {
			doubleUsers++
			if doubleUsers <= 10 {
				r.breach("ticket %d issued to %d different users: %+v", id, len(uids), list)
			}
		} else {
			doubleSame++
			if doubleSame <= 10 {
				r.breach("ticket %d issued %d times (same user %d): %+v", id, len(list), list[0].tok.UID, list)
			}
		}
	}
	t.Logf("tokens handed out: %d (distinct tickets %d), undecodable %d, issued to two users %d, issued twice to one user %d; shake answers %v, hang-ups %d",
		len(truth.issues), len(issued), len(truth.undecodable), doubleUsers, doubleSame, truth.shakeStatus, truth.shakeErrs)

	// 2. What clients were answered 200 for, from the bench and from the tap.
	r.checking(invOpens)
	ok200 := map[uint64]opened{}
	var benchOpened int64
	benchErr := map[string]int64{}
	for _, res := range results {
		if res.OpenedTruncated {
			r.breach("bench run %s truncated its opened list; the cross-check would be partial", res.Label)
		}
		benchOpened += res.OpenedN
		for k, v := range openErrors(res) {
			benchErr[k] += v
		}
		for _, o := range res.Opened {
			if prev, ok := ok200[o.Ticket]; ok && (prev.uid != o.UID || prev.amount != o.Amount) {
				r.breach("ticket %d opened by uid %d (amount %d) and by uid %d (amount %d)", o.Ticket, prev.uid, prev.amount, o.UID, o.Amount)
			}
			ok200[o.Ticket] = opened{o.UID, o.Amount}
		}
	}
	for _, k := range []string{"already_opened", "not_your_ticket", "invalid_token", "expired", "bad_response", "http_error", "misdirected"} {
		if benchErr[k] > 0 {
			r.breach("the verifier answered %d genuine opens %q", benchErr[k], k)
		}
	}
	tapOnly := 0
	for id, a := range truth.attempts {
		if a.otherUID {
			r.breach("ticket %d was opened by two different sessions", id)
		}
		if a.ok200 == 0 {
			continue
		}
		if is, ok := issued[id]; ok && int64(is[0].tok.Amount) != a.amount {
			r.breach("ticket %d opened with amount %d, its token says %d", id, a.amount, is[0].tok.Amount)
		}
		if _, ok := ok200[id]; !ok {
			tapOnly++ // answered 200 after the bench's own timeout
			ok200[id] = opened{a.uid, a.amount}
		}
	}
	for _, w := range truth.wrong200 {
		r.breach("the verifier answered 200 for the wrong ticket or amount: %s", w)
	}
	if truth.badOpenBody > 0 || truth.badShakeBody > 0 {
		r.breach("%d open and %d shake 200 answers were not valid JSON", truth.badOpenBody, truth.badShakeBody)
	}
	t.Logf("opens answered 200: %d distinct tickets (bench counted %d, %d more seen only by the tap); open answers %v, hang-ups %d; bench open errors %v",
		len(ok200), benchOpened, tapOnly, truth.openStatus, truth.openErrs, benchErr)

	// 3. Settlement drains: poll the ledger until every opened ticket is posted and the
	// count has stopped moving.
	r.checking(invDrain)
	l, err := ledger.Open(ctx, r.pgURL)
	if err != nil {
		t.Fatalf("opening the ledger: %v", err)
	}
	defer l.Close()
	drainStart := time.Now()
	const drainBound = 3 * time.Minute
	var st ledger.Stats
	last, lastChange := int64(-1), time.Now()
	for {
		st, err = l.Stats(ctx, c.id)
		if err == nil && st.Tickets != last {
			last, lastChange = st.Tickets, time.Now()
		}
		if err == nil && st.Tickets >= int64(len(ok200)) && time.Since(lastChange) >= 5*time.Second {
			break
		}
		if time.Since(drainStart) > drainBound || ctx.Err() != nil {
			r.breach("settlement did not drain within %v: %d tickets posted, %d opened with 200 (last error %v)", drainBound, st.Tickets, len(ok200), err)
			break
		}
		sleep(ctx, 200*time.Millisecond)
	}
	t.Logf("settlement drained in %v: %+v", time.Since(drainStart).Truncate(time.Millisecond), st)
	r.drainSeconds = time.Since(drainStart).Seconds()

	// 4. The postings, straight from PostgreSQL.
	r.checking(invPostings)
	conn, err := pgx.Connect(ctx, r.pgURL)
	if err != nil {
		t.Fatalf("connecting to PostgreSQL: %v", err)
	}
	defer conn.Close(context.Background())
	rows, err := conn.Query(ctx, `SELECT ticket, amount, uid FROM postings WHERE campaign = $1`, c.id)
	if err != nil {
		t.Fatalf("querying postings: %v", err)
	}
	posted := map[uint64]*postingRow{}
	var postedSum int64
	for rows.Next() {
		var tid, amount int64
		var uid string
		if err := rows.Scan(&tid, &amount, &uid); err != nil {
			t.Fatalf("scanning postings: %v", err)
		}
		postedSum += amount
		if p, ok := posted[uint64(tid)]; ok {
			p.n++
			continue
		}
		posted[uint64(tid)] = &postingRow{amount: amount, uid: uid, n: 1}
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("reading postings: %v", err)
	}
	rows.Close()
	dupPost, missing, wrongAmount, wrongUID := 0, 0, 0, 0
	for id, p := range posted {
		if p.n > 1 {
			dupPost++
			r.breach("ticket %d posted %d times", id, p.n)
		}
	}
	for id, o := range ok200 {
		p, ok := posted[id]
		switch {
		case !ok:
			missing++
			if missing <= 10 {
				r.breach("ticket %d was opened (200, uid %d, amount %d) but is not in the ledger: a lost claim", id, o.uid, o.amount)
			}
		case p.amount != o.amount:
			wrongAmount++
			r.breach("ticket %d posted with amount %d, opened with %d", id, p.amount, o.amount)
		case p.uid != strconv.FormatUint(o.uid, 10):
			wrongUID++
			r.breach("ticket %d posted to uid %s, opened by uid %d", id, p.uid, o.uid)
		}
	}
	// Postings nobody was answered 200 for are acceptable only when a client did try to
	// open that ticket (its answer was lost to a timeout, a hang-up or a 503 while the
	// claim was in fact durable), and then only for that client and the token's amount.
	unanswered, invented := 0, 0
	for id, p := range posted {
		if _, ok := ok200[id]; ok {
			continue
		}
		a, tried := truth.attempts[id]
		if !tried {
			invented++
			if invented <= 10 {
				r.breach("ticket %d posted (uid %s, amount %d) but no client ever tried to open it", id, p.uid, p.amount)
			}
			continue
		}
		unanswered++
		if p.uid != strconv.FormatUint(a.uid, 10) {
			r.breach("ticket %d posted to uid %s, but uid %d tried to open it", id, p.uid, a.uid)
		}
		if is, ok := issued[id]; ok && int64(is[0].tok.Amount) != p.amount {
			r.breach("ticket %d posted with amount %d, its token says %d", id, p.amount, is[0].tok.Amount)
		}
	}
	t.Logf("ledger: %d postings (amount %d): opened-200 missing %d, wrong amount %d, wrong uid %d, posted twice %d; "+
		"posted after an unanswered open (timeout/hang-up/503, acceptable) %d; posted but never opened %d",
		len(posted), postedSum, missing, wrongAmount, wrongUID, dupPost, unanswered, invented)

	r.opened, r.posted = len(ok200), len(posted)

	// 4b. The per-user rule across the uid-sharded verifiers: no user opened more than
	// per_user tickets in a round, counted from the ledger and from the 200 answers.
	r.checking(invPerUser)
	if per := c.manifest.PerUser; per > 0 {
		rows, err := conn.Query(ctx, `SELECT uid, round, COUNT(*) FROM postings WHERE campaign = $1
			GROUP BY uid, round HAVING COUNT(*) > $2 ORDER BY COUNT(*) DESC LIMIT 10`, c.id, per)
		if err != nil {
			t.Fatalf("querying postings per user: %v", err)
		}
		for rows.Next() {
			var uid string
			var round, n int64
			if err := rows.Scan(&uid, &round, &n); err != nil {
				t.Fatalf("scanning postings per user: %v", err)
			}
			r.breach("uid %s has %d tickets posted in round %d, the campaign's per_user is %d", uid, n, round, per)
		}
		if err := rows.Err(); err != nil {
			t.Fatalf("reading postings per user: %v", err)
		}
		rows.Close()
		perUID := map[uint64]int{}
		for _, o := range ok200 {
			perUID[o.uid]++
		}
		over, most := 0, 0
		for uid, n := range perUID {
			most = max(most, n)
			if n > per {
				if over++; over <= 10 {
					r.breach("uid %d was answered 200 for %d tickets (one round), the campaign's per_user is %d", uid, n, per)
				}
			}
		}
		t.Logf("per-user rule %d: %d users opened tickets, at most %d each, %d over; limit_reached answers %d",
			per, len(perUID), most, over, benchErr["limit_reached"])
	}

	// 4c. Switches and uid routing.
	r.checkSwitches(truth)
	r.checkRouting(truth, benchErr)

	// 5. Resources, before the servers stop.
	r.checking(invResources)
	for _, s := range r.services() {
		p := s.current()
		if p == nil || !s.running() {
			r.breach("%s is not running at the end", s.name)
			continue
		}
		fds, ferr := fdCount(p.Pid())
		thr, terr := threadCount(p.Pid())
		if ferr != nil || terr != nil {
			t.Errorf("reading /proc for %s: %v %v", s.name, ferr, terr)
			continue
		}
		note := "goroutines not exposed on /metrics (no go_goroutines): not checked"
		if s.http {
			if page, err := httpGet("http://" + s.admin + "/metrics"); err == nil {
				if g, ok := metricValue(page, "go_goroutines"); ok {
					note = fmt.Sprintf("goroutines %.0f", g)
					if g > 10000 {
						r.breach("%s has %.0f goroutines (bound 10000)", s.name, g)
					}
				}
			}
		}
		t.Logf("%s (pid %d, started %d times): fds %d, threads %d; %s", s.name, p.Pid(), s.starts, fds, thr, note)
		if fds >= 1000 {
			r.breach("%s holds %d file descriptors (bound 1000)", s.name, fds)
		}
		if thr >= 500 {
			r.breach("%s runs %d OS threads (bound 500)", s.name, thr)
		}
	}

	// 6. Clean stop, in the order that loses nothing.
	r.checking(invSigterm)
	for _, s := range r.services() {
		if err := s.stop(30 * time.Second); err != nil {
			r.breach("%s did not exit 0 on the final SIGTERM: %v", s.name, err)
		}
	}

	// 7. shake reconcile, against PostgreSQL directly.
	r.checking(invReconcile)
	cmd := exec.CommandContext(ctx, r.bin, "reconcile", "--manifest", c.manPath, "--ledger", r.pgURL)
	out, err := cmd.Output()
	var rep struct {
		OK                bool   `json:"ok"`
		Budget            int64  `json:"budget"`
		SettledTickets    int64  `json:"settled_tickets"`
		SettledAmount     int64  `json:"settled_amount"`
		RefundedAmount    int64  `json:"refunded_amount"`
		OutstandingAmount int64  `json:"outstanding_amount"`
		OverLimitUsers    *int64 `json:"over_limit_users"`
	}
	if jerr := json.Unmarshal(out, &rep); err != nil || jerr != nil || !rep.OK {
		r.breach("shake reconcile: exit %v, ok %v, output %s", err, rep.OK, strings.TrimSpace(string(out)))
	} else if rep.Budget != rep.SettledAmount+rep.RefundedAmount+rep.OutstandingAmount || rep.SettledAmount != postedSum {
		r.breach("reconcile totals do not add up: %s (postings sum %d)", out, postedSum)
	}
	t.Logf("reconcile: %s", strings.TrimSpace(string(out)))
	r.checking(invPerUser)
	if rep.OverLimitUsers == nil || *rep.OverLimitUsers != 0 {
		r.breach("shake reconcile: over_limit_users %v, want 0: %s", rep.OverLimitUsers, strings.TrimSpace(string(out)))
	}

	// 8. No process panicked or broke an invariant it checks itself.
	r.checking(invLogs)
	for _, s := range r.services() {
		hits, err := scanLog(s.logPath, 5)
		if err != nil {
			t.Errorf("reading %s: %v", s.logPath, err)
		}
		for _, h := range hits {
			r.breach("%s log: %s", s.name, h)
		}
	}
	names := make([]string, 0, nFaultKinds)
	for k := faultKind(0); k < nFaultKinds; k++ {
		names = append(names, fmt.Sprintf("%s=%d", faultNames[k], r.counts[k]))
	}
	sort.Strings(names)
	t.Logf("summary: faults %s; opened %d, posted %d; %s", strings.Join(names, " "), len(ok200), len(posted), r.replay)
}

func httpGet(u string) ([]byte, error) {
	cl := &http.Client{Timeout: 5 * time.Second}
	resp, err := cl.Get(u)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	return io.ReadAll(io.LimitReader(resp.Body, 8<<20))
}

// withFlag returns args with the value of flag name replaced (or appended).
func withFlag(args []string, name, value string) []string {
	out := append([]string{}, args...)
	for i := 0; i+1 < len(out); i++ {
		if out[i] == name {
			out[i+1] = value
			return out
		}
	}
	return append(out, name, value)
}
