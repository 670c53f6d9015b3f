package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"

	ikafka "shake/internal/kafka"
	"shake/internal/obs"
	"shake/ticket"
)

func init() {
	register(command{name: "topics", summary: "create or check the claims topic and its .dlq on the Kafka cluster", run: runTopics})
}

const topicsUsage = `
Usage: shake topics create --brokers HOST:PORT[,...] [--topic shake.claims] [--partitions 16]
                           [--replication 3] [--min-insync 2] [Kafka security flags]
       shake topics check  --brokers HOST:PORT[,...] [--topic shake.claims]
                           [--min-replication 3] [--manifest M] [Kafka security flags]

The verifier and the settler never create topics: operators do, with this command,
before the event. "create" creates the claims topic and its dead-letter twin
"<topic>.dlq", each with --partitions partitions, --replication replicas and
min.insync.replicas --min-insync (default 2, or 1 with --replication 1), so that a claim
acknowledged with acks=all is on at least that many brokers, and retention.ms=-1,
retention.bytes=-1: a restarted verifier rebuilds from the whole topic, so no claim may
be deleted. It is idempotent: a topic
that already exists with exactly these settings is fine ("exists"); one that exists
with others is reported ("mismatch", with what differs) and left alone (partitions and
replicas are changed with Kafka's own tools, deliberately).

"check" prints what the brokers report about both topics: partitions, replication
factor, min.insync.replicas, retention.ms and retention.bytes, each partition's leader,
under-replicated and leaderless partitions, and whether the verifier and the settler
would start on it with --min-replication ("ok", else "problem" says why). Retention must
be -1 (kept for ever) or, with --manifest, keep a claim written now until the campaign's
expires_at plus a day; retention.bytes must be -1.

Both print one JSON object per topic on stdout. Exit status: 0 when every topic is as
asked (create) or would be accepted (check), 1 when one is not, 2 on bad usage or when
Kafka cannot be reached or refuses this client (TLS, SASL).

Kafka security flags, as for the verifier and the settler: --kafka-tls-ca FILE,
--kafka-tls-cert FILE, --kafka-tls-key FILE, --kafka-sasl plain|scram-sha-256|
scram-sha-512, --kafka-user NAME, --kafka-password-file FILE (or SHAKE_KAFKA_PASSWORD).
`

// topicReport is one line of shake topics' output.
type topicReport struct {
	Topic           string `json:"topic"`
	Action          string `json:"action,omitempty"` // create: created, exists, mismatch
	Exists          bool   `json:"exists"`
	Partitions      int    `json:"partitions"`
	Replication     int    `json:"replication"`
	MinInsync       int    `json:"min_insync_replicas"`
	RetentionMs     int64  `json:"retention_ms"`
	RetentionBytes  int64  `json:"retention_bytes"`
	Leaders         []int  `json:"leaders"` // by partition; -1 for none
	UnderReplicated int    `json:"under_replicated"`
	Offline         int    `json:"offline"`
	OK              bool   `json:"ok"`
	Problem         string `json:"problem,omitempty"`
}

func newTopicReport(t *ikafka.TopicInfo) topicReport {
	r := topicReport{Topic: t.Name, Exists: t.Exists, Partitions: len(t.Partitions), Replication: t.Replication,
		MinInsync: t.MinInsync, RetentionMs: t.RetentionMs, RetentionBytes: t.RetentionBytes, UnderReplicated: t.UnderReplicated, Offline: t.Offline, Leaders: []int{}}
	for _, p := range t.Partitions {
		r.Leaders = append(r.Leaders, p.Leader)
	}
	return r
}

func runTopics(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("topics", topicsUsage, stderr)
	brokers := fs.String("brokers", "", "Kafka bootstrap brokers, `HOST:PORT[,...]` (required)")
	topic := fs.String("topic", ikafka.ClaimsTopic, "claims `topic`; its dead-letter topic is TOPIC.dlq")
	partitions := fs.Int("partitions", 16, "create: partitions of each topic")
	replication := fs.Int("replication", 3, "create: replicas of each partition")
	minInsync := fs.Int("min-insync", 2, "create: min.insync.replicas of each topic (default 1 with --replication 1)")
	timeout := fs.Duration("timeout", 10*time.Second, "bound on each request to the brokers")
	manifestPath := fs.String("manifest", "", "check: the campaign's `manifest.json`: retention must keep claims until its expires_at plus a day (without it: for ever)")
	kf := addKafkaFlags(fs, true)
	if ok, code := parseFlagsArgs(fs, args, 1, 1); !ok {
		return code
	}
	verb := fs.Arg(0)
	if verb != "create" && verb != "check" {
		return flagError(fs, "unknown action %q: create or check (see 'shake topics -h')", verb)
	}
	bl, sec, err := kf.connect(fs, *brokers)
	if err != nil {
		return flagError(fs, "%v", err)
	}
	if !ikafka.ValidTopic(*topic) {
		return flagError(fs, "--topic %q must be 1..245 characters of [a-zA-Z0-9._-]", *topic)
	}
	if *timeout <= 0 {
		return flagError(fs, "--timeout must be > 0")
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if verb == "create" {
		if err := checkCreateFlags(set, *partitions, *replication, minInsync, *manifestPath); err != nil {
			return flagError(fs, "%v", err)
		}
	}
	ctx, stop := obs.SignalContext(context.Background())
	defer stop()
	admin := ikafka.NewAdmin(sec, bl, *timeout)
	names := []string{*topic, ikafka.DLQTopic(*topic)}
	var reports []topicReport
	if verb == "create" {
		reports, err = createTopics(ctx, admin, names, *partitions, *replication, *minInsync, *timeout)
	} else {
		reports, err = checkTopics(ctx, admin, names, *kf.minRepl, *manifestPath, *timeout)
	}
	if err != nil {
		return flagError(fs, "%v", err)
	}
	enc := json.NewEncoder(stdout)
	code := 0
	for _, r := range reports {
		if err := enc.Encode(r); err != nil {
			fmt.Fprintf(stderr, "shake topics: %v\n", err)
			return 1
		}
		if !r.OK {
			code = 1
		}
	}
	return code
}

// checkCreateFlags checks create's flags; --min-insync defaults to 1 with --replication 1.
func checkCreateFlags(set map[string]bool, partitions, replication int, minInsync *int, manifest string) error {
	if !set["min-insync"] && replication == 1 {
		*minInsync = 1
	}
	switch {
	case manifest != "":
		return errors.New("--manifest is for check: create always keeps every claim (retention.ms=-1)")
	case partitions < 1 || partitions > 1<<14:
		return fmt.Errorf("--partitions must be in 1..16384, not %d", partitions)
	case replication < 1 || replication > 32767:
		return fmt.Errorf("--replication must be in 1..32767, not %d", replication)
	case *minInsync < 1 || *minInsync > replication:
		return fmt.Errorf("--min-insync must be in 1..--replication (%d), not %d", replication, *minInsync)
	}
	return nil
}

// checkTopics describes the topics and applies the policy of --min-replication and, with
// manifest, of the campaign's expires_at (without it, retention must be -1).
func checkTopics(ctx context.Context, admin *ikafka.Admin, names []string, minRepl int, manifest string, timeout time.Duration) ([]topicReport, error) {
	policy := ikafka.Policy{MinReplication: minRepl}
	if manifest != "" {
		m, err := ticket.LoadManifest(manifest)
		if err != nil {
			return nil, fmt.Errorf("--manifest: %w", err)
		}
		policy = ikafka.PolicyFor(minRepl, m.ExpiresAt)
	}
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	infos, err := admin.Describe(cctx, names...)
	if err != nil {
		return nil, err
	}
	var out []topicReport
	for i := range infos {
		r := newTopicReport(&infos[i])
		if err := infos[i].CheckPolicy(policy, time.Now()); err != nil {
			r.Problem = problem(err)
		} else {
			r.OK = true
		}
		out = append(out, r)
	}
	return out, nil
}

// problem strips the sentinel's prefix from a refusal: the report says "ok": false.
func problem(err error) string {
	msg := err.Error()
	if p := ikafka.ErrRefused.Error() + ": "; len(msg) > len(p) && msg[:len(p)] == p {
		return msg[len(p):]
	}
	return msg
}

// topicDiff says how t differs from what create asked for (nil: not at all).
func topicDiff(t *ikafka.TopicInfo, partitions, replication, minInsync int) []string {
	if !t.Exists {
		return []string{"the brokers do not report it yet"}
	}
	var diff []string
	if len(t.Partitions) != partitions {
		diff = append(diff, fmt.Sprintf("partitions %d, not --partitions %d", len(t.Partitions), partitions))
	}
	if t.Replication != replication {
		diff = append(diff, fmt.Sprintf("replication %d, not --replication %d", t.Replication, replication))
	}
	if t.MinInsync != minInsync {
		diff = append(diff, fmt.Sprintf("min.insync.replicas %d, not --min-insync %d", t.MinInsync, minInsync))
	}
	if err := t.CheckRetention(time.Time{}, time.Now()); err != nil {
		diff = append(diff, problem(err))
	}
	return diff
}

func createTopics(ctx context.Context, admin *ikafka.Admin, names []string, partitions, replication, minInsync int, timeout time.Duration) ([]topicReport, error) {
	req := &kafka.CreateTopicsRequest{}
	for _, n := range names {
		req.Topics = append(req.Topics, kafka.TopicConfig{Topic: n, NumPartitions: partitions, ReplicationFactor: replication,
			ConfigEntries: []kafka.ConfigEntry{{ConfigName: ikafka.MinInsyncConfig, ConfigValue: strconv.Itoa(minInsync)},
				// Keep every claim: a restarted verifier rebuilds from the whole topic.
				{ConfigName: ikafka.RetentionMsConfig, ConfigValue: "-1"}, {ConfigName: ikafka.RetentionBytesConfig, ConfigValue: "-1"}}})
	}
	cctx, cancel := context.WithTimeout(ctx, timeout)
	res, err := admin.Client().CreateTopics(cctx, req)
	cancel()
	if err != nil {
		return nil, admin.Classify(fmt.Errorf("create topics: %w", err))
	}
	action := map[string]string{}
	for _, n := range names {
		switch terr := res.Errors[n]; {
		case terr == nil:
			action[n] = "created"
		case errors.Is(terr, kafka.TopicAlreadyExists):
			action[n] = "exists"
		case errors.Is(terr, kafka.TopicAuthorizationFailed), errors.Is(terr, kafka.ClusterAuthorizationFailed):
			return nil, admin.Classify(fmt.Errorf("create topic %s: %w", n, terr))
		default:
			// The brokers refused the request itself (say, more replicas than brokers).
			return nil, fmt.Errorf("create topic %s: %w", n, terr)
		}
	}
	// What the brokers now report is what counts; a new topic's metadata can take a
	// moment to reach every broker, so look again until both exist.
	var infos []ikafka.TopicInfo
	deadline := time.Now().Add(timeout)
	for {
		cctx, cancel := context.WithTimeout(ctx, timeout)
		infos, err = admin.Describe(cctx, names...)
		cancel()
		if err != nil {
			return nil, err
		}
		if (infos[0].Exists && infos[1].Exists) || time.Now().After(deadline) || ctx.Err() != nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	var out []topicReport
	for i := range infos {
		t := &infos[i]
		r := newTopicReport(t)
		r.Action = action[t.Name]
		diff := topicDiff(t, partitions, replication, minInsync)
		if len(diff) == 0 {
			r.OK = true
		} else {
			if r.Action == "exists" {
				r.Action = "mismatch"
			}
			r.Problem = fmt.Sprintf("topic %q has %s", t.Name, strings.Join(diff, ", "))
		}
		out = append(out, r)
	}
	return out, nil
}
