package broker

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
)

func produce(t *testing.T, addr, topic string, n, from int) {
	t.Helper()
	w := &kafka.Writer{Addr: kafka.TCP(addr), Topic: topic, Balancer: &kafka.Hash{},
		RequiredAcks: kafka.RequireAll, BatchTimeout: time.Millisecond}
	defer w.Close()
	msgs := make([]kafka.Message, n)
	for i := range msgs {
		msgs[i] = kafka.Message{Key: fmt.Appendf(nil, "%d", from+i), Value: fmt.Appendf(nil, `{"i":%d}`, from+i)}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		t.Fatalf("produce: %v", err)
	}
}

// consumeGroup reads exactly n messages as consumer group g, committing each, and
// returns their keys.
func consumeGroup(t *testing.T, addr, topic, g string, n int) map[string]bool {
	t.Helper()
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: []string{addr}, Topic: topic, GroupID: g,
		MinBytes: 1, MaxBytes: 1 << 20, MaxWait: 100 * time.Millisecond, StartOffset: kafka.FirstOffset,
		HeartbeatInterval: 200 * time.Millisecond, SessionTimeout: 6 * time.Second, RebalanceTimeout: 2 * time.Second})
	defer r.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	got := map[string]bool{}
	for len(got) < n {
		m, err := r.FetchMessage(ctx)
		if err != nil {
			t.Fatalf("fetch after %d: %v", len(got), err)
		}
		if got[string(m.Key)] {
			t.Fatalf("key %s delivered twice", m.Key)
		}
		got[string(m.Key)] = true
		if err := r.CommitMessages(ctx, m); err != nil {
			t.Fatalf("commit: %v", err)
		}
	}
	return got
}

// drained reports whether group g has nothing left to read on topic within d.
func drained(t *testing.T, addr, topic, g string, d time.Duration) bool {
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: []string{addr}, Topic: topic, GroupID: g,
		MinBytes: 1, MaxBytes: 1 << 20, MaxWait: 100 * time.Millisecond, HeartbeatInterval: 200 * time.Millisecond,
		SessionTimeout: 6 * time.Second, RebalanceTimeout: 2 * time.Second})
	defer r.Close()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	m, err := r.FetchMessage(ctx)
	if err == nil {
		t.Logf("unexpected message %s", m.Key)
		return false
	}
	return errors.Is(err, context.DeadlineExceeded)
}

func TestProduceAndConsumerGroupRoundTrip(t *testing.T) {
	b, err := Start(Config{Listen: "127.0.0.1:0", Partitions: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if !strings.HasPrefix(b.Addr(), "127.0.0.1:") || strings.HasSuffix(b.Addr(), ":0") {
		t.Fatalf("addr %q", b.Addr())
	}
	produce(t, b.Addr(), DefaultTopic, 100, 0)
	got := consumeGroup(t, b.Addr(), DefaultTopic, "g1", 100)
	for i := 0; i < 100; i++ {
		if !got[fmt.Sprint(i)] {
			t.Fatalf("key %d missing", i)
		}
	}
	// The commits stick: the same group sees only what is produced afterwards.
	produce(t, b.Addr(), DefaultTopic, 5, 100)
	got = consumeGroup(t, b.Addr(), DefaultTopic, "g1", 5)
	for i := 100; i < 105; i++ {
		if !got[fmt.Sprint(i)] {
			t.Fatalf("key %d missing after commit: %v", i, got)
		}
	}
	// The DLQ twin exists and accepts messages.
	produce(t, b.Addr(), DefaultTopic+DLQSuffix, 1, 0)
}

func TestDataDirSurvivesRestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	b, err := Start(Config{Listen: "127.0.0.1:0", Partitions: 2, DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	addr := b.Addr()
	produce(t, addr, DefaultTopic, 20, 0)
	consumeGroup(t, addr, DefaultTopic, "g", 10)
	b.Close()

	b, err = Start(Config{Listen: addr, Partitions: 2, DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	// All 20 messages are still there for a new group...
	consumeGroup(t, addr, DefaultTopic, "fresh", 20)
	// ...and the first group resumes after its committed offsets: 10 left, no more.
	consumeGroup(t, addr, DefaultTopic, "g", 10)
	if !drained(t, addr, DefaultTopic, "g", 1500*time.Millisecond) {
		t.Fatal("group g saw messages past its committed offsets")
	}
}

func TestConfigErrors(t *testing.T) {
	for _, c := range []Config{
		{Listen: "nohostport"},
		{Listen: "127.0.0.1:0", Partitions: -1},
		{Listen: "127.0.0.1:0", Topics: []string{"bad topic"}},
		{Listen: "127.0.0.1:0", Topics: []string{".."}},
	} {
		if b, err := Start(c); err == nil {
			b.Close()
			t.Fatalf("%+v: no error", c)
		}
	}
	b, err := Start(Config{Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if b2, err := Start(Config{Listen: b.Addr()}); err == nil {
		b2.Close()
		t.Fatal("second broker on a used port started")
	}
}

func TestKcatConsumes(t *testing.T) {
	kcat, err := exec.LookPath("kcat")
	if err != nil {
		t.Skip("kcat not installed (Debian package kcat); CI installs it")
	}
	b, err := Start(Config{Listen: "127.0.0.1:0", Partitions: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	produce(t, b.Addr(), DefaultTopic, 7, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, kcat, "-b", b.Addr(), "-t", DefaultTopic, "-C", "-o", "beginning",
		"-e", "-q", "-f", "%k=%s\n").CombinedOutput()
	if err != nil {
		t.Fatalf("kcat: %v\n%s", err, out)
	}
	for i := 0; i < 7; i++ {
		if !strings.Contains(string(out), fmt.Sprintf(`%d={"i":%d}`, i, i)) {
			t.Fatalf("kcat output lacks message %d:\n%s", i, out)
		}
	}
	// kcat can produce too, and kafka-go reads it back.
	p := exec.CommandContext(ctx, kcat, "-b", b.Addr(), "-t", DefaultTopic, "-P", "-K", ":")
	p.Stdin = strings.NewReader("k1:from-kcat\n")
	if out, err := p.CombinedOutput(); err != nil {
		t.Fatalf("kcat produce: %v\n%s", err, out)
	}
	got := consumeGroup(t, b.Addr(), DefaultTopic, "k", 8)
	if !got["k1"] {
		t.Fatalf("kcat's message missing: %v", got)
	}
}
