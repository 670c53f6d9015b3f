package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"

	ikafka "shake/internal/kafka"
	"shake/internal/obs"
	"shake/ticket"
	"shake/verifier"
)

func init() {
	register(command{name: "verifier", summary: "open sealed tickets and make every claim durable (POST /v1/open)", run: runVerifier})
}

const verifierUsage = `
Usage: shake verifier --manifest DIR/manifest.json --key campaign.key --session-key session.key
                      --brokers HOST:PORT[,...] --spool DIR [--topic shake.claims]
                      [--listen 127.0.0.1:8081] [--uid-shard I/V] [--spool-max-bytes 1073741824]
                      [--admin-listen ADDR] [--admin-key admin-verifier.key] [--switches FILE] [--drain 2s]
                      [--min-replication 3] [Kafka security flags] [--log-format text|json] [--log-level info]

Serves POST /v1/open (Authorization: Bearer <session token>, body {"token":"..."}). It
opens a user's sealed ticket by local computation only: the session, the AEAD of the
shard named in the token (keys derived from campaign.key), that the ticket is bound to
this user, the generator's ticket MAC, that the ticket id lies in that shard's range of
the manifest, that the token was issued inside its round's window (5 s of clock skew
allowed) and expires no later than issued_at + ttl and the manifest's expires_at, and
that it has not expired. Answers:

  200 {"result":"opened",...}  once the claim is durable; the same user opening the same
                               ticket again gets the same 200
  401 unauthorized   400 bad_request   413 too_large   422 invalid_token
  403 not_your_ticket   410 expired   409 already_opened (same ticket, other user)
  409 limit_reached  the user already opened the campaign's per_user tickets (manifest)
                     in this round, on whichever edges they were won; the ticket stays
                     unclaimed and is refunded at expiry
  421 {"error":"misdirected","uid_shard":"I/V"}  the uid belongs to another verifier
  503 {"error":"unavailable","retry_after_ms":N}  the claim could be made durable nowhere
                               (Kafka and spool both failed, spool or queue full); retry

A claim is durable when every in-sync Kafka replica acknowledged it (topic --topic, key =
ticket id, value = the claim JSON of docs/formats.md), or, while Kafka is unreachable, when it is
fsynced to the append-only spool under --spool (at most --spool-max-bytes waiting). A
replayer moves spooled claims to Kafka in order once it is back; claims still spooled at
exit, including after kill -9, are replayed at the next start. Concurrent opens are
batched: one Kafka write (or one fsync) per batch.

--uid-shard I/V: verifiers scale out by user. This one opens tickets only for users with
uid mod V = I, and holds each of them to the per_user rule; run V of them side by side on
one topic, and route /v1/open by the same rule. V is the campaign's: 'shake gen
--verifiers V' signs it into the manifest ("verifiers", default 1), and a verifier whose
V differs, or that is started without --uid-shard when V > 1, refuses to start (exit 2):
no single misconfigured verifier can widen the per-user rule. With V = 1 the flag may be
left out (0/1).

At start, before /readyz says ready (opens answer 503 meanwhile), the verifier rebuilds
what it knows: it reads every partition of --topic from its start to its end offset
at start (no consumer group) and its spool, and marks every ticket of a claim of this
campaign with a valid verifier signature as opened by that claim's user, counting it
for the per_user rule when the user is of this uid shard. Every answer after a
restart, kill -9 included, is the same as before it. A topic that cannot be read is
retried with backoff (logged at each attempt); the verifier stays not ready meanwhile.

Kafka: the claims topic is never created here (see 'shake topics create'). At start the
verifier checks it and its .dlq and refuses (exit 2) a topic that is missing, has fewer
than --min-replication replicas (a one-broker setup passes --min-replication 1), or has
several replicas but min.insync.replicas below 2. Kafka unreachable for 5 s at start is
not a refusal: the verifier starts, spools, and logs that the topic was not checked.
--kafka-tls-ca/--kafka-tls-cert/--kafka-tls-key turn TLS on; --kafka-sasl with
--kafka-user and --kafka-password-file (or SHAKE_KAFKA_PASSWORD) authenticate.

Also serves GET /healthz and /readyz (rebuilt, and Kafka or the spool writable);
/metrics is on the admin listener. SIGTERM or SIGINT: /readyz answers 503 for --drain
while opens are still served, then it stops accepting, finishes in-flight opens, flushes
or spools every queued claim, exits 0.
` + serverFlagsUsage

func runVerifier(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("verifier", verifierUsage, stderr)
	manifest := fs.String("manifest", "", "campaign manifest.json (required)")
	key := fs.String("key", "", "campaign.key (required)")
	sessionKeys := addSessionKeyFlag(fs)
	brokers := fs.String("brokers", "", "Kafka bootstrap brokers, HOST:PORT[,...] (required)")
	topic := fs.String("topic", ikafka.ClaimsTopic, "claims topic")
	spool := fs.String("spool", "", "spool directory for claims while Kafka is unreachable (required)")
	listen := fs.String("listen", "127.0.0.1:8081", "HTTP listen address")
	spoolMax := fs.Int64("spool-max-bytes", verifier.DefaultSpoolMaxBytes, "most bytes the spool may hold waiting for Kafka")
	uidShard := fs.String("uid-shard", "", "this verifier's share of the users, I/V: uid mod V = I; V must be the manifest's verifiers (default 0/1, only when that is 1)")
	logFormat := logFormatFlag(fs, "log format: text or json")
	dryRun := fs.Bool("dry-run", false, "load and check everything (keys, manifest, spool, switches, listen addresses, topics), print what was checked, exit 0 or 2; serve, write and produce nothing")
	sf := addServerFlags(fs, true)
	logLvl := logLevelFlag(fs)
	kf := addKafkaFlags(fs, true)
	if ok, code := parseFlags(fs, args); !ok {
		return code
	}
	httpCfg, swOpts, err := sf.build(*listen, ticket.RoleVerifier)
	if err != nil {
		return usageError(stderr, "verifier: %v", err)
	}
	if err := requireFlag(fs, "manifest", "key", "session-key", "brokers", "spool"); err != nil {
		return usageError(stderr, "verifier: %v", err)
	}
	bl, err := ikafka.ParseBrokers(*brokers)
	if err != nil {
		return usageError(stderr, "verifier: %v", err)
	}
	sec, err := kf.load()
	if err != nil {
		return usageError(stderr, "verifier: %v", err)
	}
	if *spoolMax <= 0 {
		return usageError(stderr, "verifier: --spool-max-bytes must be > 0")
	}
	if *topic == "" {
		return usageError(stderr, "verifier: --topic must not be empty")
	}
	us, err := fleetUIDShard(*uidShard, *manifest, *key)
	if err != nil {
		return usageError(stderr, "verifier: --uid-shard: %v", err)
	}
	log := obs.NewLogger(stderr, *logFormat, logLvl.Level())
	cfg := verifier.Config{
		Manifest: *manifest, Key: *key, SessionKey: sessionKeys.first, MoreSessionKeys: sessionKeys.more, Brokers: bl, Topic: *topic, Kafka: sec,
		Spool: *spool, Listen: *listen, SpoolMaxBytes: *spoolMax, UIDShard: us, Logger: log, HTTP: httpCfg, Switches: swOpts,
	}
	// Bad local files are reported before Kafka is asked anything: at once, whatever
	// state Kafka is in. verifier.New checks them fully.
	if cfg.TopicPolicy, err = topicPolicy(*manifest, *kf.minRepl); err != nil && !*dryRun {
		return usageError(stderr, "verifier: %v", err)
	}
	if *dryRun {
		return verifierDryRun(newStartCheck(fs, true, stdout), cfg, log, *sf.adminKey)
	}
	if code := refuseBadSwitches(fs, cfg.Switches.File); code != 0 {
		return code
	}
	// The keys, the manifest (its signature, the key checks) and the spool, read-only:
	// a wrong campaign.key is one line, before any topic-check log line.
	quiet := cfg
	quiet.Logger = nil // verifier.New logs its warnings (an exposed key) once
	if _, err := verifier.Check(quiet); err != nil {
		return usageError(stderr, "verifier: %v", err)
	}
	ctx, stop := obs.SignalContext(context.Background())
	defer stop()
	if err := checkClaimsTopicAtStart(ctx, log, sec, bl, *topic, *cfg.TopicPolicy, false); err != nil {
		return usageError(stderr, "verifier: %v", err)
	}
	srv, err := verifier.New(cfg)
	if err != nil {
		// Missing or bad files, keys, a corrupt spool, a busy port: all bad input.
		return usageError(stderr, "verifier: %v", err)
	}
	fmt.Fprintf(stdout, "verifier listening on %s\n", srv.Addr())
	if err := srv.Run(ctx); err != nil {
		fmt.Fprintf(stderr, "shake verifier: %v\n", err)
		return 1
	}
	return 0
}

// topicPolicy is the claims topic's policy for the campaign of manifestPath (with
// --min-replication only when the manifest cannot be read: the dry run reports that).
func topicPolicy(manifestPath string, minRepl int) (*ikafka.Policy, error) {
	m, err := ticket.LoadManifest(manifestPath)
	if err != nil {
		return &ikafka.Policy{MinReplication: minRepl}, err
	}
	p := ikafka.PolicyFor(minRepl, m.ExpiresAt)
	return &p, nil
}

// verifierDryRun is the verifier's --dry-run: verifier.Check (keys, manifest, spool,
// read-only), the switches file, both listen addresses bound and closed, and the topics
// checked as at start, Kafka unreachable being a problem here.
// verifierErrFlag names the flag a verifier start-up error is about.
func verifierErrFlag(err error) string {
	switch {
	case errors.Is(err, verifier.ErrKey):
		return "--key"
	case errors.Is(err, verifier.ErrSessionKey):
		return "--session-key"
	case errors.Is(err, verifier.ErrSpool):
		return "--spool"
	case errors.Is(err, verifier.ErrManifest):
		return "--manifest"
	}
	return "config"
}

func verifierDryRun(chk *startCheck, cfg verifier.Config, log *slog.Logger, adminKey string) int {
	chk.ok("flags", "brokers %v, topic %s, uid shard %s, security %s", cfg.Brokers, cfg.Topic, cfg.UIDShard, cfg.Kafka.String())
	if adminKey != "" {
		chk.ok("admin key", "%s", adminKey)
	}
	lines, err := verifier.Check(cfg)
	for _, l := range lines {
		what, rest, _ := strings.Cut(l, " ")
		chk.ok(what, "%s", rest)
	}
	if err != nil {
		return chk.fail("%s: %v", verifierErrFlag(err), err)
	}
	var code int
	if !chk.switches(cfg.Switches.File, &code) || !chk.binds(&code, "--listen", cfg.Listen, "--admin-listen", cfg.HTTP.AdminListen) {
		return code
	}
	if err := checkClaimsTopicAtStart(context.Background(), log, cfg.Kafka, cfg.Brokers, cfg.Topic, *cfg.TopicPolicy, true); err != nil {
		return chk.fail("%v", err)
	}
	chk.ok("topics", "%s and %s.dlq exist with --min-replication %d and keep their claims", cfg.Topic, cfg.Topic, cfg.TopicPolicy.MinReplication)
	return chk.done()
}

// fleetUIDShard parses --uid-shard and holds it to the verifier fleet's size that the
// manifest carries, signed (verifiers, V): I/W with W != V is refused, and so is no
// --uid-shard at all when V > 1 (a verifier for every uid beside a sharded fleet breaks
// the per-user rule). A key or manifest that cannot be read is left to the checks that
// report those flags.
func fleetUIDShard(flagValue, manifestPath, keyPath string) (verifier.UIDShard, error) {
	var us verifier.UIDShard
	if flagValue != "" {
		var err error
		if us, err = verifier.ParseUIDShard(flagValue); err != nil {
			return us, err
		}
	}
	key, err := ticket.ReadKeyFile(keyPath)
	if err != nil {
		return us, nil
	}
	m, err := ticket.LoadManifestKey(manifestPath, key)
	if err != nil {
		return us, nil
	}
	v := m.VerifierCount()
	switch {
	case flagValue == "" && v > 1:
		return us, fmt.Errorf("required: manifest %s signs a fleet of %d verifiers (verifiers); give this one --uid-shard I/%d", manifestPath, v, v)
	case flagValue == "":
		return verifier.UIDShard{Index: 0, Count: 1}, nil
	case int(us.Count) != v:
		return us, fmt.Errorf("%s names a fleet of %d verifiers, but manifest %s signs %d (verifiers): give --uid-shard I/%d", flagValue, us.Count, manifestPath, v, v)
	}
	return us, nil
}
