package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"strings"

	"shake/internal/obs"
	"shake/verifier"
)

func init() {
	register(command{name: "verifier", summary: "open sealed tickets and make every claim durable (POST /v1/open)", run: runVerifier})
}

const verifierUsage = `
Usage: shake verifier --manifest DIR/manifest.json --key campaign.key --session-key session.key
                      --brokers HOST:PORT[,...] --spool DIR [--topic shake.claims]
                      [--listen 127.0.0.1:8081] [--spool-max-bytes 1073741824]
                      [--log-format text|json] [--log-level info]

Serves POST /v1/open (Authorization: Bearer <session token>, body {"token":"..."}). It
opens a user's sealed ticket by local computation only: the session, the AEAD of the
shard named in the token (keys derived from campaign.key), that the ticket is bound to
this user and not expired, the generator's ticket MAC, and that the ticket id lies in
that shard's range of the manifest. Answers:

  200 {"result":"opened",...}  once the claim is durable; the same user opening the same
                               ticket again gets the same 200
  401 unauthorized   400 bad_request   413 too_large   422 invalid_token
  403 not_your_ticket   410 expired   409 already_opened (same ticket, other user)
  503 {"error":"unavailable","retry_after_ms":N}  the claim could be made durable nowhere
                               (Kafka and spool both failed, spool or queue full); retry

A claim is durable when every in-sync Kafka replica acknowledged it (topic --topic, key =
ticket id, value = the claim JSON of SPEC.md), or, while Kafka is unreachable, when it is
fsynced to the append-only spool under --spool (at most --spool-max-bytes waiting). A
replayer moves spooled claims to Kafka in order once it is back; claims still spooled at
exit, including after kill -9, are replayed at the next start. Concurrent opens are
batched: one Kafka write (or one fsync) per batch.

After a restart the verifier remembers the tickets still in its spool; a ticket opened
before the restart and already in Kafka can be claimed again by the same token, and the
settler posts it once (it is idempotent on campaign and ticket).

Also serves GET /healthz, /readyz (Kafka or the spool writable) and /metrics. SIGTERM or
SIGINT: stops accepting, finishes in-flight opens, flushes or spools every queued claim,
exits 0.
`

func runVerifier(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("verifier", verifierUsage, stderr)
	manifest := fs.String("manifest", "", "campaign manifest.json (required)")
	key := fs.String("key", "", "campaign.key (required)")
	sessionKey := fs.String("session-key", "", "session.key shared with the login system (required)")
	brokers := fs.String("brokers", "", "Kafka bootstrap brokers, HOST:PORT[,...] (required)")
	topic := fs.String("topic", "shake.claims", "claims topic")
	spool := fs.String("spool", "", "spool directory for claims while Kafka is unreachable (required)")
	listen := fs.String("listen", "127.0.0.1:8081", "HTTP listen address")
	spoolMax := fs.Int64("spool-max-bytes", verifier.DefaultSpoolMaxBytes, "most bytes the spool may hold waiting for Kafka")
	logFormat := fs.String("log-format", "text", "log format: text or json")
	logLvl := logLevelFlag(fs)
	if ok, code := parseFlags(fs, args); !ok {
		return code
	}
	if err := requireFlag(fs, "manifest", "key", "session-key", "brokers", "spool"); err != nil {
		return usageError(stderr, "verifier: %v", err)
	}
	if *logFormat != "text" && *logFormat != "json" {
		return usageError(stderr, "verifier: --log-format must be text or json, not %q", *logFormat)
	}
	var bl []string
	for _, b := range strings.Split(*brokers, ",") {
		b = strings.TrimSpace(b)
		if _, _, err := net.SplitHostPort(b); err != nil {
			return usageError(stderr, "verifier: --brokers: %q is not HOST:PORT", b)
		}
		bl = append(bl, b)
	}
	if *spoolMax <= 0 {
		return usageError(stderr, "verifier: --spool-max-bytes must be > 0")
	}
	if *topic == "" {
		return usageError(stderr, "verifier: --topic must not be empty")
	}
	log := obs.NewLogger(stderr, *logFormat, logLvl.Level())
	srv, err := verifier.New(verifier.Config{
		Manifest: *manifest, Key: *key, SessionKey: *sessionKey, Brokers: bl, Topic: *topic,
		Spool: *spool, Listen: *listen, SpoolMaxBytes: *spoolMax, Logger: log,
	})
	if err != nil {
		// Missing or bad files, keys, a corrupt spool, a busy port: all bad input.
		return usageError(stderr, "verifier: %v", err)
	}
	fmt.Fprintf(stdout, "verifier listening on %s\n", srv.Addr())
	ctx, stop := obs.SignalContext(context.Background())
	defer stop()
	if err := srv.Run(ctx); err != nil {
		fmt.Fprintf(stderr, "shake verifier: %v\n", err)
		return 1
	}
	return 0
}
