package main

import (
	"encoding/json"
	"strings"
	"testing"

	"shake/broker"
)

func startTestBroker(t *testing.T, cfg broker.Config) *broker.Broker {
	t.Helper()
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	b, err := broker.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	return b
}

// runTopicsCmd runs shake topics in-process and decodes its JSON lines.
func runTopicsCmd(t *testing.T, args ...string) (int, []topicReport, string) {
	t.Helper()
	var out, errb strings.Builder
	code := run(append([]string{"topics"}, args...), &out, &errb)
	var reps []topicReport
	for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		if line == "" {
			continue
		}
		var r topicReport
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("topics %v: bad line %q: %v", args, line, err)
		}
		reps = append(reps, r)
	}
	return code, reps, errb.String()
}

func TestTopicsCreateIdempotent(t *testing.T) {
	b := startTestBroker(t, broker.Config{Nodes: 3, Partitions: 2})
	args := []string{"create", "--brokers", b.Bootstrap(), "--topic", "pay.claims", "--partitions", "4"}
	code, reps, stderr := runTopicsCmd(t, args...)
	if code != 0 || len(reps) != 2 || stderr != "" {
		t.Fatalf("create: code %d %+v %s", code, reps, stderr)
	}
	for i, name := range []string{"pay.claims", "pay.claims.dlq"} {
		r := reps[i]
		if r.Topic != name || r.Action != "created" || !r.OK || r.Partitions != 4 || r.Replication != 3 || r.MinInsync != 2 || len(r.Leaders) != 4 {
			t.Fatalf("create %s: %+v", name, r)
		}
	}
	// Again, the same: nothing to do, exit 0.
	code, reps, _ = runTopicsCmd(t, args...)
	if code != 0 || reps[0].Action != "exists" || !reps[0].OK || reps[1].Action != "exists" {
		t.Fatalf("create again: %d %+v", code, reps)
	}
	// Again with other settings: reported, left alone, exit 1.
	code, reps, _ = runTopicsCmd(t, "create", "--brokers", b.Bootstrap(), "--topic", "pay.claims", "--partitions", "8", "--min-insync", "3")
	if code != 1 || reps[0].Action != "mismatch" || reps[0].OK || !strings.Contains(reps[0].Problem, "--partitions 8") ||
		!strings.Contains(reps[0].Problem, "--min-insync 3") || reps[0].Partitions != 4 {
		t.Fatalf("create mismatching: %d %+v", code, reps)
	}
	// check agrees with what the verifier would accept.
	code, reps, _ = runTopicsCmd(t, "check", "--brokers", b.Bootstrap(), "--topic", "pay.claims")
	if code != 0 || !reps[0].OK || !reps[1].OK || reps[0].Replication != 3 || reps[0].UnderReplicated != 0 || reps[0].Offline != 0 {
		t.Fatalf("check: %d %+v", code, reps)
	}
}

func TestTopicsCheckPolicy(t *testing.T) {
	one := startTestBroker(t, broker.Config{Partitions: 3})
	code, reps, _ := runTopicsCmd(t, "check", "--brokers", one.Addr())
	if code != 1 || reps[0].OK || reps[0].Replication != 1 || !strings.Contains(reps[0].Problem, "--min-replication 3") {
		t.Fatalf("one broker, default policy: %d %+v", code, reps)
	}
	code, reps, _ = runTopicsCmd(t, "check", "--brokers", one.Addr(), "--min-replication", "1")
	if code != 0 || !reps[0].OK || reps[0].Partitions != 3 || reps[0].MinInsync != 1 {
		t.Fatalf("one broker, --min-replication 1: %d %+v", code, reps)
	}
	code, reps, _ = runTopicsCmd(t, "check", "--brokers", one.Addr(), "--min-replication", "1", "--topic", "nothing.here")
	if code != 1 || reps[0].Exists || reps[0].OK || !strings.Contains(reps[0].Problem, "does not exist") {
		t.Fatalf("missing topic: %d %+v", code, reps)
	}
	// Creating with one replica on one broker: min.insync.replicas follows (1).
	code, reps, _ = runTopicsCmd(t, "create", "--brokers", one.Addr(), "--topic", "dev.claims", "--replication", "1")
	if code != 0 || reps[0].MinInsync != 1 || reps[0].Replication != 1 {
		t.Fatalf("create on one broker: %d %+v", code, reps)
	}
}

func TestTopicsUsageErrors(t *testing.T) {
	b := startTestBroker(t, broker.Config{})
	addr := b.Addr()
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"create"}, "--brokers"},
		{[]string{"delete", "--brokers", addr}, "create or check"},
		{[]string{"--brokers", addr}, "expected 1 argument"},
		{[]string{"create", "--brokers", addr, "--replication", "2", "--min-insync", "3"}, "--min-insync"},
		{[]string{"create", "--brokers", addr, "--partitions", "0"}, "--partitions"},
		{[]string{"create", "--brokers", addr, "--topic", "t3", "--replication", "3"}, "Replication"}, // 3 replicas on one node
		{[]string{"check", "--brokers", addr, "--topic", "bad topic"}, "--topic"},
		{[]string{"check", "--brokers", addr, "--kafka-sasl", "scram-sha-256"}, "--kafka-user"},
		{[]string{"check", "--brokers", "127.0.0.1:1", "--timeout", "1s"}, "no Kafka broker reachable"},
	} {
		code, _, stderr := runTopicsCmd(t, c.args...)
		if code != 2 || strings.Count(stderr, "\n") != 1 || !strings.Contains(stderr, c.want) {
			t.Errorf("topics %v: code %d, stderr %q (want one line naming %s)", c.args, code, stderr, c.want)
		}
	}
}
