package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"shake/bench"
	"shake/broker"
	ikafka "shake/internal/kafka"
	"shake/internal/obs"
	"shake/internal/proc"
	"shake/settler"
	"shake/settler/ledger"
	"shake/ticket"
	"shake/ticketgen"
)

func init() {
	register(command{name: "demo", summary: "run the whole event on one machine and prove the money reconciles", run: runDemo})
}

const demoUsage = `
Usage: shake demo [--out DIR] [--tickets N] [--edges E] [--users U] [--duration D]
                  [--rate R] [--ledger URL] [--brokers HOST:PORT|embedded]
                  [--min-replication 1] [Kafka security flags]

Runs the whole event on this machine, with nothing installed, through the real chain:

  1. writes the keys 'shake keys init' writes and generates a campaign of N red packets
     (budget N x 188 fen, amounts in [1, 2000] fen, one prize of 1888 fen per 1000
     tickets) split over E edge shards, into DIR,
     with one round that spans the load; edges pace its tickets evenly over the round
     (--pace), so wins and opens arrive at a steady rate, as at the gala;
  2. starts an embedded Kafka-protocol broker on loopback (its address is printed: any
     Kafka client, e.g. kcat -b ADDR -t shake.claims -C, can watch the claims), unless
     --brokers names a real one (whose shake.claims and .dlq must exist; the servers
     get --min-replication, default 1 here, and the Kafka security flags given:
     --kafka-tls-ca, --kafka-tls-cert, --kafka-tls-key, --kafka-sasl, --kafka-user,
     --kafka-password-file);
  3. starts E edges, one verifier and one settler as child processes of this binary
     (logs in DIR/logs), with an SQLite ledger at DIR/ledger.db unless --ledger is given;
  4. drives U simulated users at R shakes per second for D (open loop, see shake bench);
     winners open their tickets; from 40% of D, for an eighth of D (0.5 s to 5 s), it
     closes the whole event through the edges' admin listeners as 'shake ctl pause'
     does, checks that the edges issue no ticket meanwhile, and reopens it (D >= 3 s);
  5. waits until the settler has posted every opened ticket, stops the servers in order
     (SIGTERM), and reconciles the ledger against the manifest;
  6. checks every ticket a user was told it opened against the ledger, ticket by ticket;
  7. gives its verdict, target by target (k6 style): shake p99 (--max-shake-p99, default
     25ms), open p99 (--max-open-p99, 50ms), drop rate (--max-drop-rate, 0.001: the share
     of shakes and opens never answered: "dropped" because the load generator's bound of
     requests in flight was full, timed out, or not connected), settlement lag p99 (from
     a claim reaching Kafka to its posting committed; --max-settle-lag, 5s) and money
     (reconcile and the ticket-by-ticket cross-check);
  8. writes DIR/report.html (the pause shaded on its charts) and DIR/summary.json and
     prints a summary.

Exit codes: 0 the money reconciles, every opened ticket is settled exactly once and every
target held; 1 a target was missed, a check failed, a server failed, or the run was
interrupted (Ctrl-C stops everything cleanly and says what was reached); 2 bad usage.
`

// demoStartup is the time the round allows for starting the servers before the load.
const demoStartup = 3 * time.Second

// demoConfig is a checked set of demo flags.
type demoConfig struct {
	out          string
	tickets      uint64
	edges        int
	users        int
	duration     time.Duration
	rate         float64
	ledgerURL    string   // the ledger to open ("": DIR/ledger.db)
	ledgerArgs   []string // how the settler is given it, with no password on its command line
	brokers      string
	kafkaArgs    []string // security and --min-replication flags for the verifier and settler
	settleWithin time.Duration
	targets      demoTargets
	progress     io.Writer
	args         []string // as given, for the report's record of what ran
}

// demoSummary is DIR/summary.json.
type demoSummary struct {
	Campaign     string        `json:"campaign"`
	Out          string        `json:"out"`
	Brokers      string        `json:"brokers"`
	Ledger       string        `json:"ledger"`
	Edges        int           `json:"edges"`
	Tickets      uint64        `json:"tickets"`
	Budget       int64         `json:"budget"`
	GenSeconds   float64       `json:"gen_seconds"`
	SettleWait   float64       `json:"settle_wait_seconds"`
	TotalSeconds float64       `json:"total_seconds"`
	Bench        *bench.Result `json:"bench"` // without the opened tickets: see OpenedFile
	// OpenedFile is the file (in Out) listing every ticket a user was told was opened,
	// one JSON object a line: {"ticket":"<id>","uid":"<uid>","amount":N}.
	OpenedFile string `json:"opened_file"`
	// ServersSeries is the servers' own counters about once a second (see demoReading).
	ServersSeries []demoReading     `json:"servers_series,omitempty"`
	Reconcile     *settler.Report   `json:"reconcile"`
	CrossCheck    demoCrossCheck    `json:"cross_check"`
	Servers       map[string]string `json:"servers"`
	Admin         map[string]string `json:"admin"` // each server's admin listener
	Pause         *demoPause        `json:"pause,omitempty"`
	Targets       []bench.Check     `json:"targets"`
	OK            bool              `json:"ok"`
	Failures      []string          `json:"failures"`
}

// demoCrossCheck compares the tickets users were told they opened with the ledger.
type demoCrossCheck struct {
	OpenedTickets  int64 `json:"opened_tickets"`
	OpenedAmount   int64 `json:"opened_amount"`
	Checked        int   `json:"checked"`
	Missing        int   `json:"missing"`
	WrongAmount    int   `json:"wrong_amount"`
	NotOpened      int64 `json:"posted_but_not_opened"`
	ExactlyMatched bool  `json:"exactly_matched"`
}

func runDemo(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("demo", demoUsage, stderr)
	c := demoConfig{args: args}
	fs.StringVar(&c.out, "out", "", "output `DIR` (default: a new directory under $TMPDIR)")
	fs.Uint64Var(&c.tickets, "tickets", 50000, "red packets in the campaign")
	fs.IntVar(&c.edges, "edges", 2, "edge servers (one shard each)")
	fs.IntVar(&c.users, "users", 200000, "simulated users")
	fs.DurationVar(&c.duration, "duration", 40*time.Second, "how long users keep arriving")
	fs.Float64Var(&c.rate, "rate", 5000, "shakes per second offered (open loop)")
	lf := addLedgerFlags(fs, "ledger `URL` (default sqlite:///DIR/ledger.db)")
	fs.StringVar(&c.brokers, "brokers", "embedded", "Kafka `HOST:PORT[,...]`, or embedded")
	fs.DurationVar(&c.settleWithin, "settle-timeout", 60*time.Second, "how long to wait for settlement after the load")
	minRepl := fs.Int("min-replication", 1, "the servers' --min-replication (the demo is one machine)")
	c.targets.addFlags(fs)
	kf := addKafkaFlags(fs, false)
	if ok, code := parseFlags(fs, args); !ok {
		return code
	}
	if msg := c.targets.check(); msg != "" {
		return usageError(stderr, "demo: %s", msg)
	}
	_, err := kf.load()
	if err == nil {
		c.ledgerURL, c.ledgerArgs, err = lf.forChild()
	}
	if err != nil {
		return usageError(stderr, "demo: %v", err)
	}
	if len(kf.sec.Args()) > 0 && c.brokers == "embedded" {
		return usageError(stderr, "demo: the Kafka security flags need --brokers (the embedded broker is plain text)")
	}
	if err := ikafka.CheckMinReplication(*minRepl); err != nil {
		return usageError(stderr, "demo: %v", err)
	}
	c.kafkaArgs = append(kf.sec.Args(), "--min-replication", strconv.Itoa(*minRepl))
	switch {
	case c.tickets == 0:
		return usageError(stderr, "demo: --tickets must be at least 1")
	case c.edges < 1 || uint64(c.edges) > c.tickets || c.edges > 64:
		return usageError(stderr, "demo: --edges must be in 1..min(64, --tickets)")
	case c.users < 1:
		return usageError(stderr, "demo: --users must be at least 1")
	case c.duration <= 0 || c.settleWithin <= 0:
		return usageError(stderr, "demo: --duration and --settle-timeout must be positive")
	case c.rate <= 0:
		return usageError(stderr, "demo: --rate must be positive")
	case c.brokers == "":
		return usageError(stderr, "demo: --brokers must be HOST:PORT[,...] or embedded")
	}
	if c.tickets > ticket.MaxTicketAmount/188 {
		return usageError(stderr, "demo: --tickets too large for the demo's budget")
	}
	if c.out == "" {
		dir, err := os.MkdirTemp("", "shake-demo-")
		if err != nil {
			return usageError(stderr, "demo: cannot create an output directory: %v", err)
		}
		c.out = dir
	} else if err := prepareOutDir(c.out); err != nil {
		return usageError(stderr, "demo: --out: %v", err)
	}
	if isTerminal(stderr) {
		c.progress = stderr
	}
	ctx, cancel := obs.SignalContext(context.Background())
	defer cancel()
	d := &demo{cfg: c, stdout: stdout, stderr: stderr}
	return d.run(ctx)
}

// prepareOutDir creates dir, or accepts it if it exists and is empty: the demo never
// mixes a new campaign with an old one's files.
func prepareOutDir(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	if len(ents) > 0 {
		return fmt.Errorf("%s is not empty", dir)
	}
	return nil
}

type demo struct {
	cfg     demoConfig
	stdout  io.Writer
	stderr  io.Writer
	procs   []*proc.Proc
	summary demoSummary
	// adminKeyPath is the operator's admin.key (shake ctl needs it); each server is
	// started with its role's admin-ROLE.key beside it.
	adminKeyPath string
	// settleLag is the settler's claim-to-commit p99 over settleLagClaims claims, read
	// from its metrics before it stops (settleLagErr when it could not be).
	settleLag       time.Duration
	settleLagClaims float64
	settleLagErr    error
}

func (d *demo) say(format string, args ...any) {
	fmt.Fprintf(d.stdout, format+"\n", args...)
}

func (d *demo) fail(format string, args ...any) {
	d.summary.Failures = append(d.summary.Failures, fmt.Sprintf(format, args...))
}

func (d *demo) run(ctx context.Context) int {
	start := time.Now()
	c := &d.cfg
	s := &d.summary
	s.Out, s.Edges, s.Tickets, s.Servers, s.Failures = c.out, c.edges, c.tickets, map[string]string{}, []string{}
	s.Admin = map[string]string{}
	defer d.stopAll()
	loadBefore := loadAverage()

	// 1. Keys and campaign.
	_, keys, err := writeKeySet(c.out, keySetNames())
	if err != nil {
		fmt.Fprintf(d.stderr, "shake demo: %v\n", err)
		return 1
	}
	campaignKey, sessionKey, adminKey := keys["campaign.key"], keys["session.key"], keys["admin.key"]
	ckPath, skPath := filepath.Join(c.out, "campaign.key"), filepath.Join(c.out, "session.key")
	d.adminKeyPath = filepath.Join(c.out, "admin.key")
	// One timed round that covers the load, with its tickets paced evenly over the
	// window, as at the gala: wins (and so opens) arrive at a steady rate instead of all
	// in the first seconds. The round opens now and allows demoStartup for the servers.
	genStart := time.Now()
	round := ticket.RoundWindow{Start: genStart.Truncate(time.Second), End: genStart.Add(demoStartup + c.duration).Truncate(time.Second)}
	m, err := ticketgen.Generate(ctx, ticketgen.Config{
		Campaign: "demo", CampaignKey: campaignKey, Budget: int64(c.tickets) * 188, Count: c.tickets,
		Edges: c.edges, Min: 1, Max: 2000, Rounds: []ticket.RoundWindow{round}, OutDir: c.out, Now: genStart,
		Prizes: demoPrizes(c.tickets),
	})
	if err != nil {
		fmt.Fprintf(d.stderr, "shake demo: generating the campaign: %v\n", err)
		return 1
	}
	s.Campaign, s.Budget, s.GenSeconds = m.Campaign, m.Budget, time.Since(genStart).Seconds()
	d.say("campaign %q: %d red packets, budget %s, %d edge shards, generated in %.2fs into %s",
		m.Campaign, m.Count, ticket.FormatAmount(m.Budget, m.Currency), len(m.Shards), s.GenSeconds, c.out)
	d.say("round 0 open %s to %s, tickets paced evenly over it", round.Start.Format(time.TimeOnly), round.End.Format(time.TimeOnly))

	// 2. Broker.
	brokers := c.brokers
	if brokers == "embedded" {
		b, err := broker.Start(broker.Config{Listen: "127.0.0.1:0", Partitions: 8, Topics: []string{broker.DefaultTopic}})
		if err != nil {
			fmt.Fprintf(d.stderr, "shake demo: starting the embedded broker: %v\n", err)
			return 1
		}
		defer b.Close()
		brokers = b.Addr()
		d.say("embedded Kafka-protocol broker on %s (watch the claims: kcat -b %s -t shake.claims -C)", brokers, brokers)
	}
	s.Brokers = brokers
	ledgerURL := c.ledgerURL
	if ledgerURL == "" {
		ledgerURL = "sqlite://" + filepath.Join(c.out, "ledger.db")
		c.ledgerArgs = []string{"--ledger", ledgerURL}
	}
	s.Ledger = redactLedgerURL(ledgerURL)

	// 3. Servers.
	if err := d.startServers(ctx, m, ckPath, skPath, brokers, ledgerURL); err != nil {
		fmt.Fprintf(d.stderr, "shake demo: %v (logs in %s)\n", err, filepath.Join(c.out, "logs"))
		return 1
	}

	// 4. Load.
	var edgeURLs []string
	for i := 0; i < c.edges; i++ {
		edgeURLs = append(edgeURLs, "http://"+s.Servers[fmt.Sprintf("edge-%03d", i)])
	}
	d.say("driving %d users at %.0f shakes/s for %v ...", c.users, c.rate, c.duration)
	// Mid-load, the control plane closes the whole event for a few seconds.
	pctx, stopPause := context.WithCancel(ctx)
	pausec := make(chan *demoPause, 1)
	if at, hold, ok := pauseWindow(c.duration); ok {
		var edgeAdmins []string
		for i := 0; i < c.edges; i++ {
			edgeAdmins = append(edgeAdmins, s.Admin[fmt.Sprintf("edge-%03d", i)])
		}
		go func() { pausec <- d.runPause(pctx, adminKey, edgeAdmins, at, hold) }()
	} else {
		pausec <- nil
	}
	stopSampler := d.startSampler(c.edges)
	res, err := bench.Run(ctx, bench.Config{
		Label: "shake", EdgeURLs: edgeURLs, VerifierURL: "http://" + s.Servers["verifier"],
		SessionKey: sessionKey, Users: c.users, Rate: c.rate, Duration: c.duration,
		Think: 20 * time.Millisecond, MaxOpened: int(c.tickets), Progress: c.progress,
	})
	stopPause()
	pause := <-pausec
	if c.progress != nil {
		fmt.Fprintln(c.progress)
	}
	if err != nil {
		stopSampler()
		fmt.Fprintf(d.stderr, "shake demo: load: %v\n", err)
		return 1
	}
	if pause != nil {
		pause.mark(res)
		s.Pause = pause
		d.say("paused the event with shake ctl from %.1fs to %.1fs of the load: %.0f tickets issued meanwhile",
			pause.From, pause.To, pause.IssuedInside)
	}
	s.Bench = res
	if res.Interrupted || ctx.Err() != nil {
		d.fail("interrupted during the load")
	}
	d.say("load done: %d shakes, %d opened (%s)", res.Shake.Requests, res.OpenedN, ticket.FormatAmount(res.OpenedSum, m.Currency))

	// 5. Settlement, then stop the servers in order and reconcile.
	l, err := ledger.Open(context.Background(), ledgerURL)
	if err != nil {
		fmt.Fprintf(d.stderr, "shake demo: opening the ledger: %v\n", err)
		return 1
	}
	defer l.Close()
	settleStart := time.Now()
	d.waitSettled(ctx, l, m.Campaign, res.OpenedN)
	s.SettleWait = time.Since(settleStart).Seconds()
	d.showPackets(ctx, skPath, sessionKey, ledgerURL, res)
	d.settleLag, d.settleLagClaims, d.settleLagErr = scrapeSettleLag(ctx, s.Admin["settler"])
	samples := stopSampler()
	d.stopAll()

	rep, err := settler.Reconcile(context.Background(), m, c.out, l)
	if err != nil {
		fmt.Fprintf(d.stderr, "shake demo: reconcile: %v\n", err)
		return 1
	}
	s.Reconcile = rep
	if !rep.OK {
		d.fail("reconcile failed: %s", strings.Join(rep.Problems, "; "))
	}
	d.crossCheck(l, m.Campaign, res)

	// 6. Verdict and report.
	s.TotalSeconds = time.Since(start).Seconds()
	s.Targets = d.verdict(res, rep)
	s.OK = len(s.Failures) == 0 && len(failedTargets(s.Targets)) == 0
	if err := d.writeOutputs(res, m, rep, d.event(m, loadBefore, samples)); err != nil {
		fmt.Fprintf(d.stderr, "shake demo: writing the summary and report into %s: %v\n", c.out, err)
		s.OK = false
	}
	d.printSummary(m, res, rep)
	if !s.OK {
		return 1
	}
	return 0
}

// startServers starts the edges, the verifier and the settler and waits until each is ready.
func (d *demo) startServers(ctx context.Context, m *ticket.Manifest, ckPath, skPath, brokers, ledgerURL string) error {
	c := &d.cfg
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("cannot find this program to start the servers: %w", err)
	}
	logs := filepath.Join(c.out, "logs")
	if err := os.MkdirAll(logs, 0o755); err != nil {
		return err
	}
	manifest := filepath.Join(c.out, "manifest.json")
	type spec struct {
		name string
		args []string
	}
	var specs []spec
	for i, sh := range m.Shards {
		specs = append(specs, spec{fmt.Sprintf("edge-%03d", i), []string{"edge",
			"--tickets", filepath.Join(c.out, sh.File), "--key", filepath.Join(c.out, sh.KeyFile),
			"--session-key", skPath, "--state", filepath.Join(c.out, fmt.Sprintf("edge-%03d.state", i)), "--init-state", "--pace"}})
	}
	specs = append(specs,
		spec{"verifier", []string{"verifier", "--manifest", manifest, "--key", ckPath, "--session-key", skPath,
			"--brokers", brokers, "--spool", filepath.Join(c.out, "spool")}},
		spec{"settler", append([]string{"settler", "--brokers", brokers, "--manifest", manifest,
			"--key", ckPath}, d.cfg.ledgerArgs...)},
	)
	for i := range specs {
		role, _, _ := strings.Cut(specs[i].name, "-") // edge-000 is an edge
		specs[i].args = append(specs[i].args, "--admin-key", filepath.Join(c.out, ticket.AdminRoleKeyFile(role)))
	}
	for i := len(specs) - 2; i < len(specs); i++ {
		specs[i].args = append(specs[i].args, c.kafkaArgs...)
	}
	for _, sp := range specs {
		addr, err := proc.FreeAddr()
		if err != nil {
			return err
		}
		args := append(sp.args, "--listen", addr, "--log-format", "json")
		admin := addr // the settler's --listen is its admin listener
		if sp.args[0] != "settler" {
			// The default admin port (--listen's plus 1000) may be taken on a shared
			// machine; no load balancer watches the demo's /readyz, so no drain either.
			if admin, err = proc.FreeAddr(); err != nil {
				return err
			}
			args = append(args, "--admin-listen", admin, "--drain", "0s")
		}
		p, err := proc.Start(sp.name, self, args, filepath.Join(logs, sp.name+".log"))
		if err != nil {
			return err
		}
		d.procs = append(d.procs, p)
		if err := p.WaitReady(ctx, "http://"+addr+"/readyz", 30*time.Second); err != nil {
			return err
		}
		d.summary.Servers[sp.name] = addr
		d.summary.Admin[sp.name] = admin
	}
	d.say("started %d edges, a verifier and a settler (logs in %s)", len(m.Shards), logs)
	return nil
}

// waitSettled polls the ledger until it holds at least want tickets of the campaign, the
// settle timeout passes or the run is interrupted.
func (d *demo) waitSettled(ctx context.Context, l ledger.Ledger, campaign string, want int64) {
	deadline := time.Now().Add(d.cfg.settleWithin)
	for {
		st, err := l.Stats(ctx, campaign)
		if err == nil && st.Tickets >= want {
			return
		}
		if ctx.Err() != nil {
			d.fail("interrupted while waiting for settlement")
			return
		}
		if time.Now().After(deadline) {
			d.fail("settlement incomplete after %v: %d of %d opened tickets posted", d.cfg.settleWithin, st.Tickets, want)
			return
		}
		for _, p := range d.procs {
			if p.ExitCode() != -1 || p.Err() != nil {
				select {
				case <-p.Done():
					d.fail("%s exited early: %v", p.Name, p.Err())
					return
				default:
				}
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// crossCheck compares, ticket by ticket, what users were told they opened with what the
// ledger posted: every opened ticket posted once with its amount, nothing else posted.
func (d *demo) crossCheck(l ledger.Ledger, campaign string, res *bench.Result) {
	cc := &d.summary.CrossCheck
	cc.OpenedTickets, cc.OpenedAmount = res.OpenedN, res.OpenedSum
	opened := make(map[uint64]int64, len(res.Opened))
	for _, o := range res.Opened {
		opened[o.Ticket] = o.Amount
	}
	posted := make(map[uint64]int64, len(res.Opened))
	var rows int64
	err := l.Scan(context.Background(), campaign, func(id uint64, amount int64, _ string) error {
		rows++
		posted[id] = amount
		if _, ok := opened[id]; !ok {
			cc.NotOpened++
		}
		return nil
	})
	if err != nil {
		d.fail("cross-check: scanning the ledger: %v", err)
		return
	}
	for id, amount := range opened {
		cc.Checked++
		got, ok := posted[id]
		switch {
		case !ok:
			cc.Missing++
		case got != amount:
			cc.WrongAmount++
		}
	}
	if cc.Missing > 0 || cc.WrongAmount > 0 {
		d.fail("cross-check: %d opened tickets missing from the ledger, %d with another amount", cc.Missing, cc.WrongAmount)
	}
	// Opened holds every opened ticket unless the bench truncated it; then extra postings
	// cannot be told from unlisted opens, and only the totals are compared.
	if !res.OpenedTruncated && cc.NotOpened > 0 {
		d.fail("cross-check: %d tickets posted that no user was told were opened", cc.NotOpened)
	}
	if rows != res.OpenedN {
		d.fail("cross-check: %d users were told they opened a ticket, the ledger holds %d postings", res.OpenedN, rows)
	}
	cc.ExactlyMatched = cc.Missing == 0 && cc.WrongAmount == 0 && rows == res.OpenedN && (res.OpenedTruncated || cc.NotOpened == 0)
}

// stopAll stops the servers in the order that loses nothing: edges first (no new
// tickets), then the verifier (flushes its claims), then the settler (finishes its batch).
func (d *demo) stopAll() {
	for _, p := range d.procs {
		if err := p.Stop(15 * time.Second); err != nil {
			var exitErr interface{ ExitCode() int }
			if errors.As(err, &exitErr) || err != nil {
				d.fail("%s did not stop cleanly: %v", p.Name, err)
			}
		}
	}
	d.procs = nil
}

// reportSections puts the verdict, the money and the cross-check at the top of
// report.html, above the load charts.
func (d *demo) reportSections(m *ticket.Manifest, rep *settler.Report, res *bench.Result) []bench.ReportSection {
	s := &d.summary
	cc := &s.CrossCheck
	verdict := []bench.ReportSection{{Title: "Verdict", Verdict: &s.OK, Checks: s.Targets, Rows: [][2]string{
		{"campaign", fmt.Sprintf("%s: %d red packets, budget %s, %d edges", m.Campaign, m.Count, ticket.FormatAmount(m.Budget, m.Currency), len(m.Shards))},
		{"broker", s.Brokers}, {"ledger", s.Ledger},
		{"settlement wait after the load", fmt.Sprintf("%.1fs", s.SettleWait)},
		{"total time", fmt.Sprintf("%.1fs", s.TotalSeconds)},
	}}}
	for _, f := range s.Failures {
		verdict[0].Rows = append(verdict[0].Rows, [2]string{"failure", f})
	}
	ccOK := cc.ExactlyMatched
	if p := s.Pause; p != nil {
		ok := p.Confirmed && p.IssuedInside == 0
		verdict = append(verdict, bench.ReportSection{Title: "Control plane: the event paused mid-load", Verdict: &ok, Rows: [][2]string{
			{"shake ctl pause returned", fmt.Sprintf("%.1fs into the load", p.From)},
			{"shake ctl resume sent", fmt.Sprintf("%.1fs into the load (shaded on the charts)", p.To)},
			{"tickets issued by the edges in between", fmt.Sprintf("%.0f (issued counter %.0f, then %.0f)", p.IssuedInside, p.IssuedAtStop, p.IssuedAtEnd)},
		}})
		before, after := p.winRates(res)
		row := [2]string{"shakes won per second, 2 s before the pause and 2 s after the resume", fmt.Sprintf("%.0f, then %.0f", before, after)}
		if before > 0 {
			row[1] += fmt.Sprintf(" (%.2f×: above 1 the edges released the paused seconds' backlog at once)", after/before)
		}
		verdict[len(verdict)-1].Rows = append(verdict[len(verdict)-1].Rows, row)
	}
	return append(verdict,
		bench.ReportSection{Title: "Reconciliation", Verdict: &rep.OK, Rows: [][2]string{
			{"budget", ticket.FormatAmount(rep.Budget, m.Currency)},
			{"settled", fmt.Sprintf("%s in %d tickets", ticket.FormatAmount(rep.SettledAmount, m.Currency), rep.SettledTickets)},
			{"refunded", ticket.FormatAmount(rep.RefundedAmount, m.Currency)},
			{"outstanding", ticket.FormatAmount(rep.OutstandingAmount, m.Currency)},
			{"duplicates / mismatches / unknown tickets", fmt.Sprintf("%d / %d / %d", rep.Duplicates, rep.Mismatches, rep.UnknownTickets)},
			{"account balances sum to (double entry: zero)", ticket.FormatAmount(rep.BalanceSum, m.Currency)},
		}},
		bench.ReportSection{Title: "Every opened ticket against the ledger", Verdict: &ccOK, Rows: [][2]string{
			{"opened (answered 200)", fmt.Sprintf("%d tickets, %s", cc.OpenedTickets, ticket.FormatAmount(cc.OpenedAmount, m.Currency))},
			{"checked one by one", fmt.Sprintf("%d", cc.Checked)},
			{"missing from the ledger", fmt.Sprintf("%d", cc.Missing)},
			{"posted with another amount", fmt.Sprintf("%d", cc.WrongAmount)},
			{"posted but never opened", fmt.Sprintf("%d", cc.NotOpened)},
		}})
}

func (d *demo) printSummary(m *ticket.Manifest, res *bench.Result, rep *settler.Report) {
	s := &d.summary
	w := d.stdout
	fmt.Fprintln(w)
	if err := bench.WriteText(w, res); err != nil {
		fmt.Fprintf(d.stderr, "shake demo: %v\n", err)
	}
	fmt.Fprintf(w, "\nsettlement: %d tickets posted (%s) within %.1fs after the load\n",
		rep.SettledTickets, ticket.FormatAmount(rep.SettledAmount, m.Currency), s.SettleWait)
	fmt.Fprintf(w, "reconcile:  budget %s = settled %s + refunded %s + outstanding %s; duplicates %d, mismatches %d, unknown %d: %s\n",
		ticket.FormatAmount(rep.Budget, m.Currency), ticket.FormatAmount(rep.SettledAmount, m.Currency), ticket.FormatAmount(rep.RefundedAmount, m.Currency),
		ticket.FormatAmount(rep.OutstandingAmount, m.Currency), rep.Duplicates, rep.Mismatches, rep.UnknownTickets, okWord(rep.OK))
	fmt.Fprintf(w, "cross-check: %d opened tickets checked against the ledger: %d missing, %d wrong amount, %d posted but never opened: %s\n",
		s.CrossCheck.Checked, s.CrossCheck.Missing, s.CrossCheck.WrongAmount, s.CrossCheck.NotOpened, okWord(s.CrossCheck.ExactlyMatched))
	fmt.Fprintf(w, "report:     %s\nsummary:    %s\n\n", filepath.Join(s.Out, "report.html"), filepath.Join(s.Out, "summary.json"))
	writeVerdict(w, s.Targets)
	for _, f := range s.Failures {
		fmt.Fprintf(w, "FAILED: %s\n", f)
	}
	writeOutcome(w, s)
}
