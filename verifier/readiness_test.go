package verifier

import (
	"net"
	"strings"
	"testing"
	"time"

	"shake/broker"
	ikafka "shake/internal/kafka"
)

// TestRefusedTopicGetsNoClaim: a verifier whose Kafka was down at start has its opens
// spooled; when Kafka returns with a claims topic below the policy (one replica,
// --min-replication 3) it writes nothing there: the opens stay in the spool, new opens
// are spooled too, nothing is acknowledged through Kafka, and it is not ready, naming
// the flag.
func TestRefusedTopicGetsNoClaim(t *testing.T) {
	f := newFixture(t, 1, 100)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	addr := ln.Addr().String()
	ln.Close()
	cfg := f.config([]string{addr})
	cfg.KafkaTimeout = 300 * time.Millisecond
	cfg.TopicPolicy = &ikafka.Policy{MinReplication: 3}
	s := newServerNoKafka(t, f, cfg)
	for id := uint64(1); id <= 10; id++ {
		if st, got := do(s, "POST", "/v1/open", f.bearer(id), body(f.tok(id, id))); st != 200 {
			t.Fatalf("open %d while Kafka is down: %d %s", id, st, got)
		}
	}
	b, err := broker.Start(broker.Config{Listen: addr, Partitions: 4})
	must(t, err)
	defer b.Close()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.HasPrefix(s.notReady(), ikafka.GateRefusedPrefix) {
		if time.Now().After(deadline) {
			t.Fatalf("not ready reason %q, want the topic refused", s.notReady())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if got := s.notReady(); got != "topic_refused:--min-replication" {
		t.Fatalf("not ready reason %q", got)
	}
	for id := uint64(11); id <= 20; id++ {
		if st, got := do(s, "POST", "/v1/open", f.bearer(id), body(f.tok(id, id))); st != 200 {
			t.Fatalf("open %d on a refused topic: %d %s", id, st, got)
		}
	}
	time.Sleep(2 * time.Second) // the replayer's chance to (wrongly) move the spool
	if n := s.sp.pendingRecs.Load(); n != 20 {
		t.Fatalf("the spool holds %d claims, want all 20", n)
	}
	if n := s.dur.mProduced.Value(); n != 0 {
		t.Fatalf("%d opens acknowledged through a refused topic", n)
	}
	if claims := readTopic(t, addr, 0, 0); len(claims) != 0 {
		t.Fatalf("the refused topic holds %d claims", len(claims))
	}
	t.Logf("Kafka back with a one-replica topic: reason %q, 20 opens spooled, 0 produced, topic empty", s.notReady())
}
