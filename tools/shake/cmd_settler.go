package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	ikafka "shake/internal/kafka"
	"shake/internal/obs"
	"shake/settler"
	"shake/settler/ledger"
	"shake/ticket"
)

func init() {
	register(command{name: "settler", summary: "post claims from Kafka to the ledger, exactly once", run: runSettler})
}

const settlerUsage = `
Usage: shake settler --brokers HOST:PORT[,...] --ledger URL --manifest DIR/manifest.json
                     --key campaign.key [--topic shake.claims] [--group shake-settler]
                     [--listen 127.0.0.1:8082] [--admin-key admin-settler.key] [--switches FILE]
                     [--batch 2000] [--linger 50ms] [--min-replication 3] [Kafka security flags]
                     [--ledger-wait 60s] [--dry-run]

Consumes claims from the Kafka topic as a member of a consumer group (several settlers
in one group share the partitions), checks each claim against the manifest, and posts
the good ones to the ledger in batches: one ledger transaction per batch, and the Kafka
offsets are committed only after the ledger has committed. Posting is idempotent on
(campaign, ticket), so a claim delivered again (redelivery, crash, rebalance) is posted
once. Each posting moves the amount from the campaign's budget account to the user's
wallet account (double entry); the budget is funded from the sponsor account at start.

--key campaign.key is required: the manifest's signature, every claim's verifier
signature (over all its fields, uid included) and every ticket MAC are checked with keys
derived from it. A claim without a valid signature is never trusted (reason
bad_signature); nor is one whose campaign, ticket, shard, round, currency or amount
disagrees with the manifest, whose ticket MAC is not the generator's, whose issue time
is outside its round's window or whose open time is after its expiry (5 s of clock skew
allowed): each goes to the dead-letter topic <topic>.dlq as a JSON envelope
{"reason","detail","topic","partition","offset","claim"} (header "reason" too); the
detail never states the expected value. Amounts are also checked against the shard
files next to the manifest when they are there (4 bytes of memory per ticket).

A claim for a ticket already posted to another user (a ticket handed out twice) is not
paid: it is dead-lettered "conflict", counted (shake_settler_conflicts_total) and
recorded in the ledger, so reconcile reports it. The ledger never lets the campaign's
budget go below zero; a claim it cannot cover is dead-lettered "over_budget".

At start the settler records the campaign's generation and manifest digest in the
ledger; it refuses (exit 2) a ledger that settles another generation of the same
campaign id, or that was funded with another manifest.

A ledger that cannot be reached at start (connection refused or timed out, PostgreSQL
starting up or out of connection slots) is retried for --ledger-wait (default 60s; 0 =
fail at once) with exponential backoff and jitter, one WARN line per failed attempt;
meanwhile --listen answers /healthz 200 and /readyz 503 {"reason":"ledger_unreachable"},
and SIGTERM exits 0 at once. Still unreachable after it: exit 2 with one line. A wrong
password, a missing database, a schema newer than this shake, or another generation of
the campaign is never retried: exit 2 at once. The same applies to the migration
and the registration, which are part of the start.

Kafka: neither the claims topic nor <topic>.dlq is ever created here (see 'shake topics
create'). At start the settler checks both and refuses (exit 2) a topic that is missing,
has fewer than --min-replication replicas (a one-broker setup passes --min-replication
1), or has several replicas but min.insync.replicas below 2. Kafka unreachable for 5 s
at start is not a refusal: the settler starts, waits for it, and logs that the topics
were not checked. --kafka-tls-ca/--kafka-tls-cert/--kafka-tls-key turn TLS on;
--kafka-sasl with --kafka-user and --kafka-password-file (or SHAKE_KAFKA_PASSWORD)
authenticate; they apply to the group reader, the dead-letter writer and the lag queries.

--ledger postgres://user@host:5432/db?sslmode=disable   PostgreSQL
--ledger sqlite:///path/ledger.db                         embedded SQLite (WAL)

While the ledger fails, the batch is retried with exponential backoff and jitter; after
--breaker-failures consecutive failures the circuit breaker opens and the settler stops
consuming until a probe after --breaker-cooldown succeeds. Nothing is skipped and nothing
is committed early. SIGTERM finishes (posts and commits) the batch in hand, then exits 0.
A rejected claim goes to <topic>.dlq, cut to a bounded size (the record stays in the
claims topic); if the dead-letter topic refuses writes for --dlq-timeout, the settler logs
each rejected claim, counts it (shake_settler_dlq_unwritten_total), commits and goes on.
GET /healthz, /readyz (503 {"status":"not_ready","reason":...}: ledger_unreachable,
unfunded, starting, ledger_breaker_open, stalled, dlq_unwritable; 503
{"status":"paused"} while the settler.paused switch is set), /metrics, /debug/pprof/ and
/admin/switches on --listen.

With --dry-run the settler checks the flags, the admin key, the switches file,
campaign.key, the manifest's signature, the shard files (checksums, headers against the
manifest), that --listen can be bound, the ledger (one read-only look within 5s:
reachable, its schema version against this shake's, and the campaign's registration;
an unreachable ledger is reported at once, not awaited for --ledger-wait) and the
topics (Kafka unreachable for 5s is a problem here).
` + dryRunUsage + serverFlagsUsage

func runSettler(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("settler", settlerUsage, stderr)
	brokers := fs.String("brokers", "", "Kafka bootstrap brokers, comma-separated `HOST:PORT` list (required)")
	topic := fs.String("topic", settler.DefaultTopic, "claims `topic`; dead letters go to TOPIC.dlq")
	group := fs.String("group", settler.DefaultGroup, "consumer `group`")
	lf := addLedgerFlags(fs, "ledger `URL`: postgres://... or sqlite:///path/ledger.db (required)")
	manifestPath := fs.String("manifest", "", "campaign `DIR/manifest.json` (required)")
	keyPath := fs.String("key", "", "campaign.key `FILE` (required): checks the manifest, every claim's signature and ticket MAC")
	listen := fs.String("listen", "127.0.0.1:8082", "admin listener `HOST:PORT`: /healthz, /readyz, /metrics, /debug/pprof/, /admin/switches")
	batch := fs.Int("batch", settler.DefaultBatch, fmt.Sprintf("most claims per ledger transaction (1..%d)", settler.MaxBatch))
	linger := fs.Duration("linger", settler.DefaultLinger, "how long a batch waits for more claims after its first")
	checkAmounts := fs.Bool("check-amounts", true, "load the shard files next to the manifest to check every amount exactly")
	failures := fs.Int("breaker-failures", settler.DefaultBreakerFails, "consecutive ledger failures that open the circuit breaker")
	cooldown := fs.Duration("breaker-cooldown", settler.DefaultCooldown, "how long the breaker stays open before a probe")
	session := fs.Duration("session-timeout", settler.DefaultSessionTimeout, "consumer group session timeout (how soon a dead member's partitions move)")
	stall := fs.Duration("stall-timeout", settler.DefaultStallTimeout, "a partition whose committed offset stands still this long while claims wait on it (ledger healthy): recreate the group reader")
	dlqTimeout := fs.Duration("dlq-timeout", settler.DefaultDLQTimeout, "dead letters failing to be written this long: log them, count them, commit the batch, answer 503 on /readyz")
	logFormat := logFormatFlag(fs, "log format: `json` or text")
	ledgerWait := fs.Duration("ledger-wait", settler.DefaultLedgerWait, "at start, how long to retry a ledger that cannot be reached (0 = fail at once)")
	dryRun := fs.Bool("dry-run", false, "load and check everything (keys, manifest, shards, switches, listen address, ledger, topics), print what was checked, exit 0 or 2; serve and write nothing")
	sf := addServerFlags(fs, false)
	logLvl := logLevelFlag(fs)
	kf := addKafkaFlags(fs, true)
	if ok, code := parseFlags(fs, args); !ok {
		return code
	}
	chk := newStartCheck(fs, *dryRun, stdout)
	httpCfg, swOpts, err := sf.build(*listen, ticket.RoleSettler)
	if err != nil {
		return chk.fail("%v", err)
	}
	if err := requireFlag(fs, "brokers", "ledger", "manifest", "key"); err != nil {
		return chk.fail("%v", err)
	}
	ledgerURL, err := lf.resolve()
	if err != nil {
		return chk.fail("%v", err)
	}
	switch {
	case *batch < 1 || *batch > settler.MaxBatch:
		return chk.fail("--batch must be in 1..%d, not %d", settler.MaxBatch, *batch)
	case *linger <= 0 || *linger > time.Minute:
		return chk.fail("--linger must be in (0, 1m], not %v", *linger)
	case *failures < 1:
		return chk.fail("--breaker-failures must be >= 1")
	case *cooldown <= 0 || *session < time.Second:
		return chk.fail("--breaker-cooldown must be > 0 and --session-timeout >= 1s")
	case *stall < time.Second:
		return chk.fail("--stall-timeout must be >= 1s")
	case *dlqTimeout < time.Second:
		return chk.fail("--dlq-timeout must be >= 1s")
	case *ledgerWait < 0:
		return chk.fail("--ledger-wait must be >= 0")
	}
	bl, err := ikafka.ParseBrokers(*brokers)
	if err != nil {
		return chk.fail("%v", err)
	}
	sec, err := kf.load()
	if err != nil {
		return chk.fail("%v", err)
	}
	chk.ok("flags", "brokers %v, topic %s, group %s, security %s", bl, *topic, *group, sec.String())
	if *sf.adminKey != "" {
		chk.ok("admin key", "%s", *sf.adminKey)
	}
	// Before the ledger is opened (a start creates and migrates it): a bad file writes
	// nothing. settler.New loads it again (control.New).
	if code := 0; !chk.switches(swOpts.File, &code) {
		return code
	}
	log := obs.NewLogger(stderr, *logFormat, logLvl.Level())
	key, err := ticket.ReadKeyFile(*keyPath)
	if err != nil {
		return chk.fail("--key: %v", err)
	}
	if err := ticket.CheckKeyFileMode(*keyPath); errors.Is(err, ticket.ErrKeyExposed) {
		log.Warn("campaign.key is readable by other users: anyone who reads it can forge claims", "err", err)
		chk.warn("key", "%s is readable by other users: chmod 600 it", *keyPath)
	} else {
		chk.ok("key", "%s", *keyPath)
	}
	m, err := ticket.LoadManifestKey(*manifestPath, key)
	if err != nil {
		return chk.fail("--manifest: %v", err)
	}
	chk.ok("manifest", "%s: campaign %s generation %s, %d tickets in %d shards, budget %d %s, signature valid",
		*manifestPath, m.Campaign, m.Generation, m.Count, len(m.Shards), m.Budget, m.Currency)
	var amounts []uint32
	if *checkAmounts {
		amounts, err = settler.LoadAmounts(m, filepath.Dir(*manifestPath))
		switch {
		case errors.Is(err, settler.ErrNoShards):
			log.Warn("shard files absent: amounts checked by the claim signature and the ticket MAC only", "err", err)
			chk.warn("shards", "shard files absent next to the manifest: amounts checked by signature and MAC only")
			amounts = nil
		case err != nil:
			return chk.fail("--manifest: %v", err)
		default:
			chk.ok("shards", "%d amounts loaded from the shard files, checksums and headers match the manifest", len(amounts))
		}
	}
	v, err := settler.NewValidator(settler.ValidatorConfig{Manifest: m, CampaignKey: key, Amounts: amounts})
	if err != nil {
		return chk.fail("%v", err)
	}

	if *dryRun {
		return settlerDryRun(chk, log, sec, bl, *topic, ikafka.PolicyFor(*kf.minRepl, m.ExpiresAt), *listen, ledgerURL, m)
	}
	ctx, stop := obs.SignalContext(context.Background())
	defer stop()

	// The admin listener comes up first, so that while the ledger is awaited /healthz
	// answers 200 and /readyz 503 ledger_unreachable; the settler is plugged in once built.
	reg := obs.NewRegistry()
	var live atomic.Pointer[settler.Settler]
	var waiting atomic.Bool
	srv, err := obs.Listen(obs.ServerConfig{Name: "settler", Listen: *listen, Logger: log, Registry: reg,
		Status: func() string {
			if s := live.Load(); s != nil {
				return s.Status()
			}
			return ""
		},
		NotReady: func() string {
			if s := live.Load(); s != nil {
				return s.NotReadyReason()
			}
			if waiting.Load() {
				return settler.ReadyLedgerUnreachable
			}
			return settler.ReadyStarting
		},
		AdminOnly: true, Common: lateAdmin(httpCfg, &live)}, func(c *fasthttp.RequestCtx) { obs.NotFound(c) })
	if err != nil {
		return chk.fail("--listen: %v", err)
	}
	srvDone := make(chan error, 1)
	sctx, stopSrv := context.WithCancel(context.Background())
	go func() { srvDone <- srv.Serve(sctx) }()
	stopServing := func() {
		stopSrv()
		if err := <-srvDone; err != nil {
			log.Error("http server", "err", err)
		}
	}

	l, err := settler.OpenLedger(ctx, ledgerURL, m, settler.LedgerStart{Wait: *ledgerWait, Logger: log, Waiting: waiting.Store})
	if err != nil {
		stopServing()
		switch {
		case ctx.Err() != nil:
			return 0 // SIGTERM while starting: nothing was consumed, a clean stop
		case errors.Is(err, ledger.ErrOtherGeneration), errors.Is(err, ledger.ErrManifestChanged):
			return chk.fail("--manifest: %v", err)
		}
		return chk.fail("--ledger: %v", err)
	}
	defer l.Close()
	// Kafka last: every local input (files, the ledger) is judged first, whatever Kafka's state.
	policy := ikafka.PolicyFor(*kf.minRepl, m.ExpiresAt)
	if err := checkClaimsTopicAtStart(ctx, log, sec, bl, *topic, policy, false); err != nil {
		stopServing()
		return chk.fail("%v", err)
	}

	s, err := settler.New(settler.Config{Brokers: bl, Kafka: sec, Topic: *topic, Group: *group, Manifest: m, Validator: v, Ledger: l,
		Batch: *batch, Linger: *linger, BreakerFailures: *failures, BreakerCooldown: *cooldown, SessionTimeout: *session, StallTimeout: *stall, DLQTimeout: *dlqTimeout,
		Registry: reg, Logger: log, Switches: swOpts, TopicPolicy: &policy})
	if err != nil {
		stopServing()
		return chk.fail("%v", err)
	}
	defer s.Close()
	live.Store(s)

	runErr := s.Run(ctx)
	stopServing()
	if runErr != nil {
		log.Error("settler stopped", "err", runErr)
		return 1
	}
	return 0
}

// lateAdmin wires the admin endpoints of c to the settler once it is built: before, while
// the ledger is awaited, /admin/switches answers 503 and /debug/pprof/ is refused.
func lateAdmin(c obs.Common, live *atomic.Pointer[settler.Settler]) obs.Common {
	c.Admin = func(ctx *fasthttp.RequestCtx) {
		if s := live.Load(); s != nil {
			s.Wire(obs.Common{}).Admin(ctx)
			return
		}
		obs.WriteJSON(ctx, fasthttp.StatusServiceUnavailable, []byte(`{"error":"unavailable","reason":"starting"}`))
	}
	c.AdminAuth = func(ctx *fasthttp.RequestCtx) bool {
		if s := live.Load(); s != nil {
			return s.Wire(obs.Common{}).AdminAuth(ctx)
		}
		return false
	}
	return c
}

// settlerDryRun ends the settler's --dry-run: the listener can be bound, the ledger is
// reachable, at a schema this binary knows and not registered to another generation
// or manifest (looked at read-only, within dryRunLedgerTimeout, never migrated), and the
// topics pass the start-up policy (Kafka unreachable is a problem here).
func settlerDryRun(chk *startCheck, log *slog.Logger, sec *ikafka.Security, brokers []string, topic string, policy ikafka.Policy,
	listen, ledgerURL string, m *ticket.Manifest) int {
	if a, err := bindCheck(listen); err != nil {
		return chk.fail("--listen: %v", err)
	} else {
		chk.ok("listen", "%s can be bound", a)
	}
	if code, ok := ledgerDryRun(chk, ledgerURL, m, "a start creates it and migrates it to schema version %d"); !ok {
		return code
	}
	if err := checkClaimsTopicAtStart(context.Background(), log, sec, brokers, topic, policy, true); err != nil {
		return chk.fail("%v", err)
	}
	chk.ok("topics", "%s and %s.dlq exist with --min-replication %d and keep their claims", topic, topic, policy.MinReplication)
	return chk.done()
}
