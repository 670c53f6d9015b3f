package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"

	ikafka "shake/internal/kafka"
	"shake/internal/obs"
	"shake/settler"
	"shake/ticket"
)

func init() {
	register(command{name: "dlq", summary: "list the dead-letter topic, or redrive its claims after a fix", run: runDLQ})
}

// dlqRedriveGroup is the consumer group whose committed offsets are redrive's position.
const dlqRedriveGroup = "shake-dlq-redrive"

const dlqUsage = `
Usage: shake dlq --brokers HOST:PORT[,...] [--topic shake.claims] list [--reason R]
       shake dlq --brokers HOST:PORT[,...] [--topic shake.claims] redrive --manifest M
                 --key campaign.key [--reason R] [--dry-run]

Reads the settler's dead-letter topic <topic>.dlq, whose records are the envelopes
{"reason","detail","topic","partition","offset","claim"} the settler wrote for claims
it refused to post.

list prints every dead letter there now (from the start of each partition to its end
when the command started) as one JSON line each: the envelope with "dlq_partition" and
"dlq_offset" first (where it sits in the dead-letter topic). --reason keeps only one
reason (malformed, wrong_campaign, unknown_ticket, wrong_shard, wrong_round,
wrong_currency, wrong_amount, bad_mac, ...). It moves no position.

redrive re-checks each dead letter's claim against --manifest (its signature, the
claim's verifier signature and ticket MAC with --key, the amounts in its shard files),
exactly as the settler does, after an operator corrected
what made them fail (a settler started with the wrong manifest, say). The claims that
now pass are produced back to <topic>, unchanged (key = ticket id), acknowledged by every
in-sync replica; those that still fail, and those of another --reason, are left where
they are. It prints one JSON line per dead letter ({"action":"moved"|"left", ...,
"now": the reason it still fails}) and a summary line {"moved","left","scanned"}.
Its position is the committed offset of the consumer group shake-dlq-redrive on
<topic>.dlq, committed per partition after that partition's claims were acknowledged:
run again, it starts after what it already scanned, so every dead letter is moved at
most once (a crash between the produce and the commit can move a batch twice; the
settler posts a ticket once whatever the topic holds). Left records stay for list; to
re-check them after a further fix, redrive with another --group. --dry-run checks and
prints without producing or committing. Restart the settlers with the corrected
manifest before a redrive, or they dead-letter the claims again.

The Kafka TLS and SASL flags are those of the settler (--kafka-tls-ca, --kafka-sasl, ...).
Exit: 0 done (redrive: at least one claim moved, or would be with --dry-run), 1 a
redrive that moved nothing (it says so), 2 bad usage, a missing topic or an unreachable
broker.
`

// dlqEnvelope is the settler's dead-letter record (settler.deadLetter).
type dlqEnvelope struct {
	Reason    string          `json:"reason"`
	Detail    string          `json:"detail"`
	Topic     string          `json:"topic"`
	Partition int             `json:"partition"`
	Offset    int64           `json:"offset"`
	Claim     json.RawMessage `json:"claim"`
}

func runDLQ(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("dlq", dlqUsage, stderr)
	brokers := fs.String("brokers", "", "Kafka bootstrap brokers, `HOST:PORT[,...]` (required)")
	topic := fs.String("topic", settler.DefaultTopic, "claims `topic`; the dead letters are in TOPIC.dlq")
	reason := fs.String("reason", "", "only dead letters of this `reason`")
	manifestPath := fs.String("manifest", "", "redrive: the corrected `DIR/manifest.json` (required for redrive)")
	keyPath := fs.String("key", "", "redrive: campaign.key `FILE` (required for redrive: signatures and MACs are checked with it)")
	group := fs.String("group", dlqRedriveGroup, "redrive: consumer `group` holding redrive's position")
	dryRun := fs.Bool("dry-run", false, "redrive: check and print, produce and commit nothing")
	timeout := fs.Duration("timeout", time.Minute, "give up after this long (an unreachable broker, a partition that never ends)")
	kf := addKafkaFlags(fs, false)
	if ok, code := parseFlagsArgs(fs, args, 1, 1); !ok {
		return code
	}
	action := fs.Arg(0)
	bl, sec, err := kf.connect(fs, *brokers)
	if err != nil {
		return flagError(fs, "%v", err)
	}
	switch {
	case *topic == "":
		return flagError(fs, "--topic must not be empty")
	case *timeout <= 0:
		return flagError(fs, "--timeout must be > 0")
	}
	ctx, stop := obs.SignalContext(context.Background())
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	d := &dlq{brokers: bl, topic: *topic, dlqTopic: ikafka.DLQTopic(*topic), reason: *reason, stdout: stdout,
		sec: sec, client: sec.Client(bl, 10*time.Second)}
	switch action {
	case "list":
		for _, f := range []string{"manifest", "key", "dry-run"} {
			if isFlagSet(fs, f) {
				return flagError(fs, "list: --%s is for redrive", f)
			}
		}
		if err := d.list(ctx); err != nil {
			return flagError(fs, "list: %v", err)
		}
		return 0
	case "redrive":
		if err := requireFlag(fs, "manifest", "key"); err != nil {
			return flagError(fs, "redrive: %v", err)
		}
		if *group == "" {
			return flagError(fs, "redrive: --group must not be empty")
		}
		v, err := claimValidator(*manifestPath, *keyPath, obs.NewLogger(stderr, "text", slog.LevelWarn))
		if err != nil {
			return flagError(fs, "redrive: %v", err)
		}
		d.validator, d.group, d.dryRun = v, *group, *dryRun
		if err := d.redrive(ctx); err != nil {
			return flagError(fs, "redrive: %v", err)
		}
		if d.moved == 0 {
			// A redrive that changed nothing must not look like one that did.
			fmt.Fprintf(stderr, "shake dlq: redrive: nothing moved (%d left, %d scanned)\n", d.left, d.all)
			return 1
		}
		return 0
	default:
		return flagError(fs, "unknown action %q: list or redrive", action)
	}
}

func isFlagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// claimValidator checks claims against a manifest the way `shake settler` does: the
// manifest's signature and every claim's verifier signature and ticket MAC with
// campaign.key, and exact amounts from the shard files next to the manifest (the MAC
// alone pins them when the files are absent).
func claimValidator(manifestPath, keyPath string, log *slog.Logger) (*settler.Validator, error) {
	key, err := ticket.ReadKeyFile(keyPath)
	if err != nil {
		return nil, fmt.Errorf("--key: %v", err)
	}
	m, err := ticket.LoadManifestKey(manifestPath, key)
	if err != nil {
		return nil, fmt.Errorf("--manifest: %v", err)
	}
	amounts, err := settler.LoadAmounts(m, filepath.Dir(manifestPath))
	switch {
	case errors.Is(err, settler.ErrNoShards):
		log.Warn("shard files absent: amounts checked by the claim signature and the ticket MAC only", "err", err)
		amounts = nil
	case err != nil:
		return nil, fmt.Errorf("--manifest: %v", err)
	}
	return settler.NewValidator(settler.ValidatorConfig{Manifest: m, CampaignKey: key, Amounts: amounts})
}

// dlq reads the dead-letter topic.
type dlq struct {
	brokers          []string
	topic, dlqTopic  string
	reason           string
	stdout           io.Writer
	sec              *ikafka.Security
	client           *kafka.Client
	validator        *settler.Validator
	group            string
	dryRun           bool
	moved, left, all int
}

// partitions returns the dead-letter topic's partitions, sorted.
func (d *dlq) partitions(ctx context.Context, topic string) ([]int, error) {
	md, err := d.client.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		return nil, fmt.Errorf("brokers %s: %v", strings.Join(d.brokers, ","), err)
	}
	for _, t := range md.Topics {
		if t.Name != topic {
			continue
		}
		if t.Error != nil {
			return nil, fmt.Errorf("topic %s: %v", topic, t.Error)
		}
		parts := make([]int, 0, len(t.Partitions))
		for _, p := range t.Partitions {
			parts = append(parts, p.ID)
		}
		sort.Ints(parts)
		if len(parts) == 0 {
			break
		}
		return parts, nil
	}
	return nil, fmt.Errorf("topic %s does not exist (see --topic)", topic)
}

// offsets returns each partition's first and end (high watermark) offsets.
func (d *dlq) offsets(ctx context.Context, parts []int) (first, end map[int]int64, err error) {
	if first, err = listOffsets(ctx, d.client, d.dlqTopic, parts, false); err != nil {
		return nil, nil, err
	}
	if end, err = listOffsets(ctx, d.client, d.dlqTopic, parts, true); err != nil {
		return nil, nil, err
	}
	return first, end, nil
}

// listOffsets returns each partition's first offset, or its end (high watermark).
func listOffsets(ctx context.Context, c *kafka.Client, topic string, parts []int, latest bool) (map[int]int64, error) {
	reqs := make([]kafka.OffsetRequest, len(parts))
	for i, p := range parts {
		reqs[i] = kafka.FirstOffsetOf(p)
		if latest {
			reqs[i] = kafka.LastOffsetOf(p)
		}
	}
	res, err := c.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: reqs}})
	if err != nil {
		return nil, fmt.Errorf("offsets of %s: %v", topic, err)
	}
	out := make(map[int]int64, len(parts))
	for _, po := range res.Topics[topic] {
		if po.Error != nil {
			return nil, fmt.Errorf("offsets of %s/%d: %v", topic, po.Partition, po.Error)
		}
		out[po.Partition] = po.FirstOffset
		if latest {
			out[po.Partition] = po.LastOffset
		}
	}
	return out, nil
}

// read calls fn for every record of partition p in [from, to).
func (d *dlq) read(ctx context.Context, p int, from, to int64, fn func(kafka.Message) error) error {
	if from >= to {
		return nil
	}
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: d.brokers, Topic: d.dlqTopic, Partition: p,
		MinBytes: 1, MaxBytes: 16 << 20, MaxWait: 250 * time.Millisecond, Dialer: d.sec.Dialer(10 * time.Second)})
	defer r.Close()
	if err := r.SetOffset(from); err != nil {
		return err
	}
	for {
		m, err := r.FetchMessage(ctx)
		if err != nil {
			return fmt.Errorf("reading %s/%d at %d: %v", d.dlqTopic, p, from, err)
		}
		if err := fn(m); err != nil {
			return err
		}
		if m.Offset+1 >= to {
			return nil
		}
		from = m.Offset + 1
	}
}

// line is one output line: the dead letter's place, then its envelope's fields.
func dlqLine(extra map[string]any, m kafka.Message) []byte {
	var b bytes.Buffer
	b.WriteString(`{"dlq_partition":` + strconv.Itoa(m.Partition) + `,"dlq_offset":` + strconv.FormatInt(m.Offset, 10))
	keys := make([]string, 0, len(extra))
	for k := range extra {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v, _ := json.Marshal(extra[k])
		b.WriteString(`,"` + k + `":`)
		b.Write(v)
	}
	var obj map[string]json.RawMessage
	if json.Unmarshal(m.Value, &obj) == nil && obj != nil {
		var c bytes.Buffer
		if json.Compact(&c, m.Value) == nil && c.Len() > 2 {
			b.WriteByte(',')
			b.Write(c.Bytes()[1:])
			return append(b.Bytes(), '\n')
		}
	}
	v, _ := json.Marshal(string(m.Value))
	b.WriteString(`,"invalid":`)
	b.Write(v)
	b.WriteString("}\n")
	return b.Bytes()
}

// reasonOf is the envelope's reason (the "reason" header when the value is not one).
func reasonOf(m kafka.Message) (dlqEnvelope, bool) {
	var env dlqEnvelope
	if err := json.Unmarshal(m.Value, &env); err != nil || env.Reason == "" {
		for _, h := range m.Headers {
			if h.Key == "reason" {
				env.Reason = string(h.Value)
			}
		}
		return env, false
	}
	return env, true
}

func (d *dlq) list(ctx context.Context) error {
	parts, err := d.partitions(ctx, d.dlqTopic)
	if err != nil {
		return err
	}
	first, end, err := d.offsets(ctx, parts)
	if err != nil {
		return err
	}
	for _, p := range parts {
		err := d.read(ctx, p, first[p], end[p], func(m kafka.Message) error {
			if env, _ := reasonOf(m); d.reason != "" && env.Reason != d.reason {
				return nil
			}
			_, err := d.stdout.Write(dlqLine(nil, m))
			return err
		})
		if err != nil {
			return err
		}
	}
	return nil
}

func (d *dlq) redrive(ctx context.Context) error {
	parts, err := d.partitions(ctx, d.dlqTopic)
	if err != nil {
		return err
	}
	if _, err := d.partitions(ctx, d.topic); err != nil {
		return err // the claims topic must exist: never auto-create it by producing
	}
	first, end, err := d.offsets(ctx, parts)
	if err != nil {
		return err
	}
	committed, err := d.committed(ctx, parts)
	if err != nil {
		return err
	}
	w := &kafka.Writer{Addr: kafka.TCP(d.brokers...), Topic: d.topic, Balancer: &kafka.Hash{},
		RequiredAcks: kafka.RequireAll, BatchTimeout: time.Millisecond, BatchSize: 1000, BatchBytes: 16 << 20,
		AllowAutoTopicCreation: false, Transport: d.sec.Secure(&kafka.Transport{DialTimeout: 10 * time.Second})}
	defer w.Close()
	for _, p := range parts {
		from := first[p]
		if c, ok := committed[p]; ok && c >= 0 {
			from = max(c, from)
		}
		var out []kafka.Message
		var lines [][]byte
		err := d.read(ctx, p, from, end[p], func(m kafka.Message) error {
			d.all++
			env, ok := reasonOf(m)
			switch {
			case d.reason != "" && env.Reason != d.reason:
				d.left++
				lines = append(lines, dlqLine(map[string]any{"action": "left", "now": "other_reason"}, m))
				return nil
			case !ok:
				d.left++
				lines = append(lines, dlqLine(map[string]any{"action": "left", "now": "bad_envelope"}, m))
				return nil
			}
			claim := []byte(env.Claim)
			var s string
			if json.Unmarshal(env.Claim, &s) == nil {
				claim = []byte(s) // the settler quoted a claim that was not JSON
			}
			if _, now, detail := d.validator.Check(claim); now != "" {
				d.left++
				lines = append(lines, dlqLine(map[string]any{"action": "left", "now": now, "now_detail": detail}, m))
				return nil
			}
			d.moved++
			out = append(out, kafka.Message{Key: m.Key, Value: slices.Clone(claim)})
			lines = append(lines, dlqLine(map[string]any{"action": "moved"}, m))
			return nil
		})
		if err != nil {
			return err
		}
		if !d.dryRun {
			if len(out) > 0 {
				if err := w.WriteMessages(ctx, out...); err != nil {
					return fmt.Errorf("producing %d claims to %s: %v (nothing of %s/%d committed; run again)", len(out), d.topic, err, d.dlqTopic, p)
				}
			}
			if end[p] > from {
				if err := d.commit(ctx, p, end[p]); err != nil {
					return fmt.Errorf("%d claims of %s/%d produced, but committing the position failed: %v (a rerun moves them again; the settler posts each once)", len(out), d.dlqTopic, p, err)
				}
			}
		}
		for _, l := range lines {
			if _, err := d.stdout.Write(l); err != nil {
				return err
			}
		}
	}
	sum, _ := json.Marshal(map[string]any{"summary": true, "moved": d.moved, "left": d.left, "scanned": d.all,
		"dry_run": d.dryRun, "group": d.group, "topic": d.topic})
	_, err = d.stdout.Write(append(sum, '\n'))
	return err
}

// committed returns the group's committed offset per partition (-1: none).
func (d *dlq) committed(ctx context.Context, parts []int) (map[int]int64, error) {
	res, err := d.client.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: d.group, Topics: map[string][]int{d.dlqTopic: parts}})
	if err != nil {
		return nil, fmt.Errorf("position of group %s: %v", d.group, err)
	}
	out := make(map[int]int64, len(parts))
	if errors.Is(res.Error, kafka.GroupIdNotFound) {
		return out, nil // never committed: some brokers say so instead of -1 offsets
	}
	if res.Error != nil {
		return nil, fmt.Errorf("position of group %s: %v", d.group, res.Error)
	}
	for _, po := range res.Topics[d.dlqTopic] {
		if po.Error != nil {
			return nil, fmt.Errorf("position of group %s on %s/%d: %v", d.group, d.dlqTopic, po.Partition, po.Error)
		}
		out[po.Partition] = po.CommittedOffset
	}
	return out, nil
}

// commit records offset as the group's position on partition p, as a simple consumer
// (generation -1, no member): redrive is one process reading every partition itself.
func (d *dlq) commit(ctx context.Context, p int, offset int64) error {
	res, err := d.client.OffsetCommit(ctx, &kafka.OffsetCommitRequest{GroupID: d.group, GenerationID: -1,
		Topics: map[string][]kafka.OffsetCommit{d.dlqTopic: {{Partition: p, Offset: offset}}}})
	if err != nil {
		return err
	}
	for _, ps := range res.Topics {
		for _, pc := range ps {
			if pc.Error != nil {
				return pc.Error
			}
		}
	}
	return nil
}
