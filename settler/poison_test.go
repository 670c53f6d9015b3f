package settler

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"shake/settler/ledger"
)

// One poisoned message must not stop settlement.

// poisonSettler starts a broker whose produce requests to the dead-letter topic fail
// while deny is set, and a settler (dead-letter timeout 1 s) on a fresh SQLite ledger.
func poisonSettler(t *testing.T, deny *atomic.Bool) (string, *testCampaign, *run) {
	t.Helper()
	cl, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(4, topic, topic+".dlq"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	cl.ControlKey(int16(kmsg.Produce), func(req kmsg.Request) (kmsg.Response, error, bool) {
		cl.KeepControl()
		pr := req.(*kmsg.ProduceRequest)
		if !deny.Load() || len(pr.Topics) == 0 || pr.Topics[0].Topic != topic+".dlq" {
			return nil, nil, false
		}
		resp := pr.ResponseKind().(*kmsg.ProduceResponse)
		for _, rt := range pr.Topics {
			st := kmsg.NewProduceResponseTopic()
			st.Topic = rt.Topic
			for _, rp := range rt.Partitions {
				sp := kmsg.NewProduceResponseTopicPartition()
				sp.Partition = rp.Partition
				sp.ErrorCode = kerr.TopicAuthorizationFailed.Code
				st.Partitions = append(st.Partitions, sp)
			}
			resp.Topics = append(resp.Topics, st)
		}
		return resp, nil, true
	})
	addr := cl.ListenAddrs()[0]
	dir := t.TempDir()
	c := makeCampaign(t, dir, "poison", []uint64{1000}, time.Now().Add(time.Hour))
	l, err := ledger.Open(context.Background(), "sqlite://"+filepath.Join(dir, "ledger.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	r := startSettler(t, addr, c, l, func(cfg *Config) { cfg.DLQTimeout = time.Second })
	return addr, c, r
}

// produceRaw writes one record with the given value.
func produceRaw(t *testing.T, addr string, value []byte) {
	t.Helper()
	w := &kafka.Writer{Addr: kafka.TCP(addr), Topic: topic, Balancer: &kafka.Hash{}, RequiredAcks: kafka.RequireAll,
		BatchTimeout: time.Millisecond, BatchBytes: 4 << 20}
	defer w.Close()
	if err := w.WriteMessages(context.Background(), kafka.Message{Key: []byte("poison"), Value: value}); err != nil {
		t.Fatal(err)
	}
}

func produceClaims(t *testing.T, addr string, c *testCampaign, ids ...uint64) {
	t.Helper()
	var vals [][]byte
	for _, id := range ids {
		vals = append(vals, claimJSON(c.claim(id, id)))
	}
	produce(t, addr, vals...)
}

// TestPoisonedMessageDoesNotStopSettlement: a 200 KB record of invalid UTF-8 and control
// bytes grew to more than 1 MB when it was embedded as a JSON string in its dead letter,
// more than the writer and the broker take; the write was retried for ever and nothing
// after it was settled. Now the dead letter carries a bounded prefix, the record's
// length and SHA-256 and where it is (it stays in the claims topic), and the claims
// after it are posted.
func TestPoisonedMessageDoesNotStopSettlement(t *testing.T) {
	t.Parallel()
	var deny atomic.Bool
	addr, c, r := poisonSettler(t, &deny)
	poison := bytes.Repeat([]byte{0xff, 0, 0, 0}, 200<<10/4)
	produceRaw(t, addr, poison)
	time.Sleep(500 * time.Millisecond) // the poison is fetched first, in a batch of its own
	produceClaims(t, addr, c, 1, 2, 3)
	if !r.waitPosted(3, 20*time.Second) {
		t.Fatalf("posted %d of the 3 claims after the poisoned record; dead-letter errors %d",
			r.s.mPosted.Value(), r.s.mDLQErrs.Value())
	}
	rd := kafka.NewReader(kafka.ReaderConfig{Brokers: []string{addr}, Topic: topic + ".dlq",
		GroupID: "poison-check", StartOffset: kafka.FirstOffset, MaxWait: 100 * time.Millisecond})
	defer rd.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	m, err := rd.FetchMessage(ctx)
	if err != nil {
		t.Fatalf("no dead letter: %v", err)
	}
	if len(m.Value) > MaxDeadLetterBytes {
		t.Fatalf("dead letter of %d bytes, bound %d", len(m.Value), MaxDeadLetterBytes)
	}
	var env struct {
		Reason         string `json:"reason"`
		Topic          string `json:"topic"`
		Offset         int64  `json:"offset"`
		Claim          string `json:"claim"`
		ClaimTruncated bool   `json:"claim_truncated"`
		ClaimBytes     int    `json:"claim_bytes"`
		ClaimSHA256    string `json:"claim_sha256"`
	}
	if err := json.Unmarshal(m.Value, &env); err != nil {
		t.Fatalf("dead letter is not JSON: %v", err)
	}
	sum := sha256.Sum256(poison)
	if env.Reason != ReasonMalformed || env.Topic != topic || !env.ClaimTruncated || env.ClaimBytes != len(poison) ||
		env.ClaimSHA256 != hex.EncodeToString(sum[:]) || env.Claim == "" {
		t.Fatalf("dead letter %+v (claim %d bytes)", env, len(env.Claim))
	}
	t.Logf("a %d-byte poisoned record became a %d-byte dead letter; the 3 claims after it were posted", len(poison), len(m.Value))
}

// TestDeadLetterTopicUnwritable: when the dead-letter topic refuses every write, the
// settler says so on /readyz (not ready, reason dlq_unwritable) and, after DLQTimeout,
// records the rejected claim in its log and a metric, commits and settles what comes
// next: the rejected claim is not paid either way and stays in the claims topic. Once
// the topic takes writes again, dead letters go there and the settler is ready again.
// Before, the write was retried for ever and settlement stopped.
func TestDeadLetterTopicUnwritable(t *testing.T) {
	t.Parallel()
	var deny atomic.Bool
	deny.Store(true)
	addr, c, r := poisonSettler(t, &deny)
	produce(t, addr, []byte("not a claim"))
	deadline := time.Now().Add(10 * time.Second)
	for r.s.NotReadyReason() != ReadyDLQUnwritable && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if got := r.s.NotReadyReason(); got != ReadyDLQUnwritable {
		t.Fatalf("readiness %q while the dead-letter topic refuses writes, want %q", got, ReadyDLQUnwritable)
	}
	produceClaims(t, addr, c, 1, 2)
	if !r.waitPosted(2, 20*time.Second) {
		t.Fatalf("posted %d of 2 claims while the dead-letter topic refused writes", r.s.mPosted.Value())
	}
	if got := r.s.mDLQDropped[ReasonMalformed].Value(); got != 1 {
		t.Fatalf("shake_settler_dlq_unwritten_total{reason=malformed} = %d, want 1", got)
	}
	deny.Store(false)
	produce(t, addr, []byte("another bad claim"))
	deadline = time.Now().Add(20 * time.Second)
	for r.s.mDLQ[ReasonMalformed].Value() < 1 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if r.s.mDLQ[ReasonMalformed].Value() < 1 || !r.s.Ready() {
		t.Fatalf("after the topic recovered: dead-lettered %d, ready %v (%q)", r.s.mDLQ[ReasonMalformed].Value(), r.s.Ready(), r.s.NotReadyReason())
	}
}

// TestDeadLetterBounded: whatever a record holds, its dead letter stays within
// MaxDeadLetterBytes and is JSON; a short record is embedded whole.
func TestDeadLetterBounded(t *testing.T) {
	big := bytes.Repeat([]byte("x"), 1<<20)
	for _, v := range [][]byte{
		bytes.Repeat([]byte{0}, 1<<20),                    // control bytes: 6 bytes each as JSON
		bytes.Repeat([]byte{0xff}, 1<<20),                 // invalid UTF-8: 3 bytes each
		append(append([]byte(`{"a":"`), big...), `"}`...), // valid JSON, too long
		bytes.Repeat([]byte("<&>"), MaxDeadClaimBytes/3),  // HTML escaping: 6 bytes each
	} {
		m := kafka.Message{Topic: topic, Partition: 3, Offset: 42, Key: big, Value: v}
		d := deadLetter(&m, ReasonMalformed, string(big))
		if len(d.Value) > MaxDeadLetterBytes || !json.Valid(d.Value) || len(d.Key) > 256 {
			t.Fatalf("dead letter of a %d-byte record: %d bytes (bound %d), key %d bytes", len(v), len(d.Value), MaxDeadLetterBytes, len(d.Key))
		}
	}
	m := kafka.Message{Topic: topic, Value: []byte(`{"ticket":1}`)}
	if d := deadLetter(&m, ReasonMalformed, ""); !bytes.Contains(d.Value, []byte(`"claim":{"ticket":1}`)) || bytes.Contains(d.Value, []byte("truncated")) {
		t.Fatalf("short record: %s", d.Value)
	}
}
