package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"shake/edge"
	"shake/internal/obs"
	"shake/ticket"
)

func init() {
	register(command{name: "edge", summary: "serve POST /v1/shake from one shard held in memory", run: runEdge})
}

const edgeUsage = `
Usage: shake edge --tickets DIR/edge-NNN.tickets --key DIR/edge-NNN.key
                  --session-key session.key --state FILE [--init-state]
                  [--listen 127.0.0.1:8080] [--admin-listen ADDR] [--admin-key admin-edge.key]
                  [--switches FILE] [--drain 2s] [--per-user N] [--per-device N] [--pace]
                  [--log-format text|json]
                  [--log-level info]

Holds one shard of precomputed tickets in memory and hands them out on POST /v1/shake,
each sealed to the user whose session asked (Authorization: Bearer <session token>),
with no database and no call to any other service.

Answers: 200 won (token, campaign, expires_at) / miss / closed (next_round_at),
429 retry (Retry-After) when more than --max-in-flight requests are inside,
401 unauthorized, 405, 413 (any request body), 404. GET /healthz and /readyz are served
on the same address; /metrics (Prometheus text) on the admin listener.

--state is the edge's memory across restarts. Before any ticket is handed out its
position is reserved in this file with fdatasync, ahead of demand; a restart (even
after kill -9) resumes after the last reservation, so no ticket is ever issued twice.
Tickets reserved but not issued before a crash are lost to the pool and counted
(shake_edge_tickets_lost_total); the reservation ahead is at most 1/64 of what the
round has left (at least 1/128 of the round, or 1 ticket), so that is all a kill -9
can forfeit. A clean stop (SIGTERM) records the exact position and loses nothing.
The file is locked while the edge runs and refused if it belongs to another shard.

The state file must exist. --init-state creates it, for the shard's very first start
only, and refuses a file that exists; without --init-state a missing file is refused
(exit 2): starting afresh on a shard that was served before would hand its tickets
out again. After the first start, drop --init-state from the command line.
--init-only (with --init-state) creates the state file and exits 0 without serving: the
first start as a one-shot step (compose run, a Kubernetes Job) before the edge is
started for good without --init-state.

--per-device N caps wins per device per round on this edge, for sessions whose token
names a device (default: the campaign's per_device; 0 = no rule). Sessions whose risk
level is above the campaign's max_risk get miss. Both refusals are plain misses to the
client and are counted by reason in shake_edge_refused_total{reason}.

--per-user N caps wins per user per round on this edge (0 = no limit; default: the
campaign's per_user from the shard header) in a fixed table of 8-byte entries
(--per-user-capacity, default 1.25 x the shard's tickets); when the table has no room
the answer is a miss. The cap is held in memory only: it restarts empty with the
edge, so after a restart a user can win again here; the verifier enforces the
campaign's rule on every open, whichever edge the tickets came from.

--pace releases a timed round's tickets evenly over its window (plus a burst of 0.1%
of the round, 1..1000 tickets); an always-open campaign is not paced.

Refuses to start, with one line on stderr and exit code 2, on a missing or corrupt
shard, a key that does not seal and open tokens for this shard, a bad session key, a
state file that is missing (without --init-state), exists (with it), is corrupt,
locked, unwritable or another shard's, or a listen address that cannot be bound.
SIGTERM or SIGINT: stop accepting, finish in-flight requests, sync the state file,
exit 0.

With --dry-run the edge loads the shard (checksum, header, records against the header's
total), proves the shard key on a probe token, reads the session key, checks the state
file read-only (absent with --init-state and its directory writable; present without
it, not locked by a running edge, this shard's, not corrupt) and the switches file, and
binds and closes --listen and --admin-listen.
` + dryRunUsage + serverFlagsUsage

func runEdge(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("edge", edgeUsage, stderr)
	tickets := fs.String("tickets", "", "shard `file` (DIR/edge-NNN.tickets)")
	key := fs.String("key", "", "the shard's AEAD key `file` (DIR/edge-NNN.key)")
	sessionKeys := addSessionKeyFlag(fs)
	state := fs.String("state", "", "state `file` (must exist unless --init-state)")
	initState := fs.Bool("init-state", false, "create the state file: the shard's very first start only (refuses an existing file)")
	initOnly := fs.Bool("init-only", false, "with --init-state: create the state file and exit 0 without serving (a one-shot first start)")
	listen := fs.String("listen", edge.DefaultListen, "listen `address` host:port")
	var perUser, perDevice perUserFlag
	fs.Var(&perUser, "per-user", "at most `N` wins per user per round (0 = no limit; default: the campaign's per_user)")
	fs.Var(&perDevice, "per-device", "at most `N` wins per device per round (0 = no rule; default: the campaign's per_device)")
	pace := fs.Bool("pace", false, "spread each timed round's tickets evenly over its window")
	maxInFlight := fs.Int("max-in-flight", edge.DefaultMaxInFlight, "concurrent shakes before answering 429")
	perUserCap := fs.Int("per-user-capacity", 0, "per-user table `entries` (0 = 1.25 x the shard's tickets)")
	logFormat := logFormatFlag(fs, "log format: text or json")
	dryRun := fs.Bool("dry-run", false, "load and check everything (shard, keys, state file, switches, listen addresses), print what was checked, exit 0 or 2; serve and write nothing")
	sf := addServerFlags(fs, true)
	logLvl := logLevelFlag(fs)
	if ok, code := parseFlags(fs, args); !ok {
		return code
	}
	httpCfg, swOpts, err := sf.build(*listen, ticket.RoleEdge)
	if err != nil {
		return usageError(stderr, "edge: %v", err)
	}
	if err := requireFlag(fs, "tickets", "key", "session-key", "state"); err != nil {
		return usageError(stderr, "edge: %v", err)
	}
	if perUser.set && (perUser.n < 0 || perUser.n > edge.MaxPerUser) {
		return usageError(stderr, "edge: --per-user must be in 0..%d", edge.MaxPerUser)
	}
	if perDevice.set && (perDevice.n < 0 || perDevice.n > edge.MaxPerUser) {
		return usageError(stderr, "edge: --per-device must be in 0..%d", edge.MaxPerUser)
	}
	if *maxInFlight <= 0 {
		return usageError(stderr, "edge: --max-in-flight must be > 0")
	}
	if *perUserCap < 0 {
		return usageError(stderr, "edge: --per-user-capacity must be >= 0")
	}
	log := obs.NewLogger(stderr, *logFormat, logLvl.Level())
	cfg := edge.Config{
		Tickets: *tickets, Key: *key, SessionKey: sessionKeys.first, MoreSessionKeys: sessionKeys.more, State: *state, InitState: *initState, Listen: *listen,
		PerUser: perUser.value(), PerDevice: perDevice.value(), Pace: *pace, MaxInFlight: *maxInFlight, PerUserCapacity: *perUserCap,
		Logger: log, HTTP: httpCfg, Switches: swOpts,
	}
	if *initOnly && (!*initState || *dryRun) {
		return usageError(stderr, "edge: --init-only needs --init-state and no --dry-run")
	}
	if *dryRun {
		return edgeDryRun(newStartCheck(fs, true, stdout), cfg, *sf.adminKey)
	}
	if code := refuseBadSwitches(fs, cfg.Switches.File); code != 0 {
		return code
	}
	srv, err := edge.New(cfg)
	if err != nil {
		return usageError(stderr, "edge: %v", err)
	}
	if *initOnly {
		return edgeInitOnly(srv, cfg.State, stdout, stderr)
	}
	ctx, cancel := obs.SignalContext(context.Background())
	defer cancel()
	if err := srv.Run(ctx); err != nil {
		log.Error("edge stopped with an error", "err", err)
		return 1
	}
	return 0
}

// edgeInitOnly closes an edge that was built with --init-state (so its state file is
// created and synced) without serving: the one-shot first start of a shard, for layouts
// whose init step must end by itself (a compose run, a Kubernetes Job).
func edgeInitOnly(srv *edge.Server, state string, stdout, stderr io.Writer) int {
	if err := srv.Close(); err != nil {
		fmt.Fprintf(stderr, "shake edge: --init-only: closing the state file %s: %v\n", state, err)
		return 1
	}
	fmt.Fprintf(stdout, "state file created: %s (start the edge without --init-state from now on)\n", state)
	return 0
}

// edgeDryRun is the edge's --dry-run: edge.Check (the shard, the keys, the state file
// read-only), the switches file, and both listen addresses bound and closed.
func edgeDryRun(chk *startCheck, cfg edge.Config, adminKey string) int {
	if adminKey != "" {
		chk.ok("admin key", "%s", adminKey)
	}
	lines, err := edge.Check(cfg)
	for _, l := range lines {
		what, rest, _ := strings.Cut(l, " ")
		if strings.HasPrefix(l, "session key ") {
			what, rest = "session key", strings.TrimPrefix(l, "session key ")
		}
		chk.ok(what, "%s", rest)
	}
	if err != nil {
		return chk.fail("%s: %v", edgeErrFlag(err), err)
	}
	var code int
	if !chk.switches(cfg.Switches.File, &code) || !chk.binds(&code, "--listen", cfg.Listen, "--admin-listen", cfg.HTTP.AdminListen) {
		return code
	}
	return chk.done()
}

// edgeErrFlag names the flag an edge start-up error is about.
func edgeErrFlag(err error) string {
	switch {
	case errors.Is(err, edge.ErrShard):
		return "--tickets"
	case errors.Is(err, edge.ErrKey):
		return "--key"
	case errors.Is(err, edge.ErrSessionKey):
		return "--session-key"
	case errors.Is(err, edge.ErrConfig):
		return "config"
	}
	return "--state"
}

// perUserFlag is --per-user: unset means the campaign's per_user from the shard header.
type perUserFlag struct {
	n   int
	set bool
}

// String returns "" while unset, so the flag's help shows no misleading default.
func (f *perUserFlag) String() string {
	if f == nil || !f.set {
		return ""
	}
	return strconv.Itoa(f.n)
}

// Set parses N.
func (f *perUserFlag) Set(s string) error {
	n, err := strconv.Atoi(s)
	if err != nil {
		return errors.New("not a whole number")
	}
	f.n, f.set = n, true
	return nil
}

// value is the edge.Config.PerUser the flag asks for.
func (f *perUserFlag) value() int {
	if !f.set {
		return edge.PerUserFromShard
	}
	return f.n
}
