package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"shake/bench"
	"shake/internal/obs"
	"shake/internal/proc"
	"shake/ticket"
)

func init() {
	register(command{name: "bench", summary: "drive simulated users against edges and a verifier, with baselines", run: runBench})
}

const benchUsage = `
Usage: shake bench --edge URL[,URL...] --verifier URL --session-key session.key
                   [--users N] [--rate R] [--duration D] [--ramp D] [--think D]
                   [--connections C] [--json FILE] [--report FILE.html]
                   [--baseline bare,redis,postgres] [--redis HOST:PORT] [--postgres URL]
                   [--query URL] [--no-open] [--no-retry] [--max-in-flight N] [--timeout D] [--seed S]
                   [--farm ACCOUNTS:DEVICES]

Simulated users shake at a fixed arrival rate (open loop): arrival i is due at i/R
seconds (after an optional linear ramp from 0 to R over --ramp), whatever the servers are
doing. Each arrival picks a user among uids 1..N (session tokens are minted once from
session.key), POSTs /v1/shake to the next edge (round robin) and, on "won", waits --think
and POSTs /v1/open to the verifier with the ticket token.

With --query URL (a shake query server), every user whose open succeeded then asks
GET /v1/packets for their red packets, --think later, as the app would; the endpoint is
reported as "packets" (result "page"; a 503 is retried once).

Latency is measured from each request's intended send time, so a stalled server cannot
hide its queueing (no coordinated omission). At most --max-in-flight requests are
outstanding; an arrival beyond that is not sent and counts as a "dropped" error. A 429
shake (and a 503 open) is retried once after its retry_after_ms unless --no-retry.

--rate 0 selects closed-loop saturation: --connections clients each send their next shake
as soon as the last one is answered; use it (with --no-open, so the verifier does not
share the CPU) to compare requests per second with the baselines.

--baseline runs the same load shape, with the same client, against what people build
instead, each on loopback, shakes only:
  bare      a bare fasthttp handler answering a constant body (the ceiling)
  redis     LPOP from a precomputed Redis list, then seal (--redis, SHAKE_TEST_REDIS or
            127.0.0.1:6379; skipped, and said so, when unreachable)
  postgres  UPDATE ... WHERE id = (SELECT ... FOR UPDATE SKIP LOCKED LIMIT 1), then seal
            (--postgres or SHAKE_TEST_POSTGRES; skipped, and said so, when unset)
and reports shake's /v1/shake throughput as a ratio of each.

--farm ACCOUNTS:DEVICES adds a red-packet farm: ACCOUNTS accounts (uids after the users)
on DEVICES devices, each session token naming its device (farm-device-NNNN). Every
second, for the whole run, it shakes once with every account, always in the same order
and at once, as bots do; its wins are opened like anyone's. The result shows the farm's
shakes, tickets won and opened, its money, and its share of all tickets won and all money
opened ("farm" in --json, a line in the summary, a section in --report). Against an edge
with --per-device 1 it wins at most DEVICES tickets a round; with no device rule, one per
account (the per-user rule).

Prints a summary on stdout (a live progress line on stderr when it is a terminal).
--json writes the whole result (per-endpoint counts, latency percentiles in ms, the
per-second series, baselines, and up to --max-opened opened tickets) as JSON; --report
writes one self-contained HTML page with inline SVG charts (no network needed).

Exit codes: 0 the run completed; 1 no edge answered at all, the run was interrupted
(SIGINT/SIGTERM: what was reached is still printed and written) or an output could not be
written; 2 bad usage or input.

Example:
  shake bench --edge http://127.0.0.1:8080 --verifier http://127.0.0.1:8081 \
      --session-key keys/session.key --rate 5000 --duration 30s --report bench.html
`

func runBench(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("bench", benchUsage, stderr)
	edges := fs.String("edge", "", "edge base `URL`s, comma-separated (required)")
	verifier := fs.String("verifier", "", "verifier base `URL` (required unless --no-open)")
	queryURL := fs.String("query", "", "query server base `URL`: every user who opened asks GET /v1/packets once, after --think")
	keyPath := fs.String("session-key", "", "session.key `file` (required)")
	users := fs.Int("users", bench.DefaultUsers, "number of simulated users (uids 1..N)")
	rate := fs.Float64("rate", 1000, "arrivals (shakes) per second; 0 = closed loop, as fast as --connections clients go")
	duration := fs.Duration("duration", 10*time.Second, "how long arrivals are generated (ramp included)")
	ramp := fs.Duration("ramp", 0, "raise the rate linearly from 0 over this long first")
	think := fs.Duration("think", 200*time.Millisecond, "how long a winner waits before opening")
	conns := fs.Int("connections", bench.DefaultConnections, "connections per target (open loop) or clients (closed loop)")
	inflight := fs.Int("max-in-flight", bench.DefaultMaxInFlight, "most requests outstanding at once; beyond, arrivals are dropped")
	timeout := fs.Duration("timeout", bench.DefaultTimeout, "per-request timeout")
	noOpen := fs.Bool("no-open", false, "shake only: do not open won tickets (pure shake throughput, as the baselines measure)")
	noRetry := fs.Bool("no-retry", false, "do not retry a 429 shake or a 503 open once")
	maxOpened := fs.Int("max-opened", bench.DefaultMaxOpened, "most opened tickets listed in --json (totals count all)")
	seed := fs.Uint64("seed", 1, "seed of the user choice")
	var farm farmFlag
	fs.Var(&farm, "farm", "add a farm of `ACCOUNTS:DEVICES` (many accounts on few devices) shaking every second")
	jsonPath := fs.String("json", "", "write the result as JSON to `FILE`")
	reportPath := fs.String("report", "", "write an HTML report to `FILE.html`")
	baselines := fs.String("baseline", "", "comma-separated baselines to run too: bare, redis, postgres")
	redisAddr := fs.String("redis", "", "Redis `HOST:PORT` for the redis baseline (default SHAKE_TEST_REDIS or "+bench.DefaultRedisAddr+")")
	pgURL := fs.String("postgres", "", "PostgreSQL `URL` for the postgres baseline (default SHAKE_TEST_POSTGRES)")
	if ok, code := parseFlags(fs, args); !ok {
		return code
	}
	required := []string{"edge", "verifier", "session-key"}
	if *noOpen {
		required = []string{"edge", "session-key"} // nothing is opened, so no verifier is needed
	}
	if err := requireFlag(fs, required...); err != nil {
		return usageError(stderr, "bench: %v", err)
	}
	var edgeURLs []string
	for _, u := range strings.Split(*edges, ",") {
		if u = strings.TrimSpace(u); u != "" {
			edgeURLs = append(edgeURLs, u)
		}
	}
	kinds, err := bench.ParseBaselines(*baselines)
	if err != nil {
		return usageError(stderr, "bench: --baseline: %v", errors.Unwrap(err))
	}
	if err := checkOutDirs(map[string]string{"json": *jsonPath, "report": *reportPath}); err != nil {
		return usageError(stderr, "bench: %v", err)
	}
	key, err := ticket.ReadKeyFile(*keyPath)
	if err != nil {
		return usageError(stderr, "bench: --session-key: %v", err)
	}
	cfg := bench.Config{
		EdgeURLs: edgeURLs, VerifierURL: *verifier, QueryURL: *queryURL, SessionKey: key, Users: *users, Rate: *rate,
		Ramp: *ramp, Duration: *duration, Think: *think, Connections: *conns, MaxInFlight: *inflight,
		Timeout: *timeout, NoRetry: *noRetry, MaxOpened: *maxOpened, Seed: *seed, Farm: farm.farm,
	}
	if *noOpen {
		cfg.VerifierURL = ""
	}
	// Check the whole config before starting anything, so bad flags exit 2 at once.
	if err := checkBenchFlags(&cfg); err != nil {
		return usageError(stderr, "bench: %v", err)
	}
	if isTerminal(stderr) {
		cfg.Progress = stderr
	}
	ctx, stop := obs.SignalContext(context.Background())
	defer stop()

	res, runErr := bench.Run(ctx, cfg)
	if res == nil {
		if errors.Is(runErr, bench.ErrConfig) {
			return usageError(stderr, "bench: %v", runErr)
		}
		fmt.Fprintf(stderr, "shake bench: %v\n", runErr)
		return 1
	}
	if runErr == nil && len(kinds) > 0 {
		bcfg := cfg
		var logw io.Writer
		if cfg.Progress != nil {
			logw = stderr
		}
		opt := bench.BaselineOptions{Kinds: kinds, RedisAddr: *redisAddr, PostgresURL: *pgURL, Log: logw}
		if slices.Contains(kinds, bench.BaselineBare) {
			// The edge runs in a process of its own, so the bare ceiling does too.
			url, stop, err := startBareBaseline(ctx)
			if err != nil {
				fmt.Fprintf(stderr, "shake bench: bare baseline in its own process failed (%v); measuring it in this process\n", err)
			} else {
				defer stop()
				opt.BareURL = url
			}
		}
		res.Baselines, runErr = bench.RunBaselines(ctx, bcfg, opt)
		for _, b := range res.Baselines {
			if b.Skipped != "" {
				fmt.Fprintf(stderr, "shake bench: baseline %s skipped: %s\n", b.Name, b.Skipped)
			}
		}
		if runErr != nil {
			res.Interrupted = true
		}
	}
	code := 0
	if *jsonPath != "" {
		b, err := json.MarshalIndent(res, "", "  ")
		if err == nil {
			err = ticket.WriteFileAtomic(*jsonPath, append(b, '\n'), 0o644)
		}
		if err != nil {
			fmt.Fprintf(stderr, "shake bench: --json: %v\n", err)
			code = 1
		}
	}
	if *reportPath != "" {
		var b bytes.Buffer
		err := bench.WriteHTML(&b, res)
		if err == nil {
			err = ticket.WriteFileAtomic(*reportPath, b.Bytes(), 0o644)
		}
		if err != nil {
			fmt.Fprintf(stderr, "shake bench: --report: %v\n", err)
			code = 1
		}
	}
	bench.WriteText(stdout, res)
	if runErr != nil {
		fmt.Fprintf(stderr, "shake bench: %v\n", runErr)
		return 1
	}
	if res.Shake.Responses == 0 {
		fmt.Fprintf(stderr, "shake bench: no edge answered (errors: %v)\n", res.Shake.Errors)
		return 1
	}
	return code
}

// checkOutDirs checks that the directory of every output file given (flag name to path,
// "" when not given) exists.
func checkOutDirs(outs map[string]string) error {
	for _, name := range slices.Sorted(maps.Keys(outs)) {
		if p := outs[name]; p != "" {
			if st, err := os.Stat(filepath.Dir(p)); err != nil || !st.IsDir() {
				return fmt.Errorf("--%s: directory of %s does not exist", name, p)
			}
		}
	}
	return nil
}

// farmFlag is --farm ACCOUNTS:DEVICES.
type farmFlag struct{ farm *bench.Farm }

func (f *farmFlag) String() string {
	if f == nil || f.farm == nil {
		return ""
	}
	return fmt.Sprintf("%d:%d", f.farm.Accounts, f.farm.Devices)
}

func (f *farmFlag) Set(v string) error {
	a, d, ok := strings.Cut(v, ":")
	accounts, err1 := strconv.Atoi(a)
	devices, err2 := strconv.Atoi(d)
	switch {
	case !ok || err1 != nil || err2 != nil:
		return fmt.Errorf("want ACCOUNTS:DEVICES (e.g. 500:5), got %q", v)
	case accounts < 1 || accounts > bench.MaxFarmAccounts:
		return fmt.Errorf("accounts must be in 1..%d, have %d", bench.MaxFarmAccounts, accounts)
	case devices < 1 || devices > accounts:
		return fmt.Errorf("devices must be in 1..%d (the accounts), have %d", accounts, devices)
	}
	f.farm = &bench.Farm{Accounts: accounts, Devices: devices}
	return nil
}

// checkBenchFlags validates numeric flags with messages naming the flag.
func checkBenchFlags(c *bench.Config) error {
	switch {
	case len(c.EdgeURLs) == 0:
		return errors.New("--edge: no URL given")
	case c.Users < 1 || c.Users > bench.MaxUsers:
		return fmt.Errorf("--users: must be in 1..%d, have %d", bench.MaxUsers, c.Users)
	case c.Rate < 0 || c.Rate > 1e7 || c.Rate != c.Rate:
		return fmt.Errorf("--rate: must be in 0..1e7, have %v", c.Rate)
	case c.Duration <= 0:
		return fmt.Errorf("--duration: must be > 0, have %v", c.Duration)
	case c.Ramp < 0 || c.Ramp > c.Duration:
		return fmt.Errorf("--ramp: must be in 0..--duration, have %v", c.Ramp)
	case c.Think < 0:
		return fmt.Errorf("--think: must be >= 0, have %v", c.Think)
	case c.Connections < 1 || c.Connections > 100000:
		return fmt.Errorf("--connections: must be in 1..100000, have %d", c.Connections)
	case c.MaxInFlight < 1 || c.MaxInFlight > 1<<20:
		return fmt.Errorf("--max-in-flight: must be in 1..%d, have %d", 1<<20, c.MaxInFlight)
	case c.Timeout <= 0:
		return fmt.Errorf("--timeout: must be > 0, have %v", c.Timeout)
	case c.MaxOpened < 1:
		return fmt.Errorf("--max-opened: must be >= 1, have %d", c.MaxOpened)
	}
	return nil
}

// startBareBaseline runs `shake baseline` as a child process on a free loopback port and
// returns its URL once it answers /readyz.
func startBareBaseline(ctx context.Context) (url string, stop func(), err error) {
	self, err := os.Executable()
	if err != nil {
		return "", nil, err
	}
	addr, err := proc.FreeAddr()
	if err != nil {
		return "", nil, err
	}
	p, err := proc.Start("baseline", self, []string{"baseline", "--listen", addr}, os.DevNull)
	if err != nil {
		return "", nil, err
	}
	if err := p.WaitReady(ctx, "http://"+addr+"/readyz", 10*time.Second); err != nil {
		p.Kill()
		return "", nil, err
	}
	return "http://" + addr, func() { p.Stop(5 * time.Second) }, nil
}
