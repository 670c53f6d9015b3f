package main

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"shake/broker"
)

// TestClaimsTopicRetentionRefused: a claims topic that deletes records after a day,
// for a campaign whose tickets expire in three days, is refused by the verifier and the
// settler at start (exit 2 naming retention.ms) and by topics check; topics create
// makes topics that keep every claim, and the embedded broker reports it.
func TestClaimsTopicRetentionRefused(t *testing.T) {
	t.Parallel()
	b := startTestBroker(t, broker.Config{Partitions: 2})
	c := &kafka.Client{Addr: kafka.TCP(b.Addr()), Timeout: 5 * time.Second}
	req := &kafka.CreateTopicsRequest{}
	for _, n := range []string{"ret.claims", "ret.claims.dlq"} {
		req.Topics = append(req.Topics, kafka.TopicConfig{Topic: n, NumPartitions: 2, ReplicationFactor: 1,
			ConfigEntries: []kafka.ConfigEntry{{ConfigName: "retention.ms", ConfigValue: "86400000"}}})
	}
	res, err := c.CreateTopics(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	for n, err := range res.Errors {
		if err != nil {
			t.Fatalf("create %s: %v", n, err)
		}
	}
	keys := keysDir(t)
	out := filepath.Join(t.TempDir(), "camp")
	if code, _, errOut := runCLI(genArgs(keys, out, "--ttl", "72h")...); code != 0 {
		t.Fatal(errOut)
	}
	man := filepath.Join(out, "manifest.json")
	ck, sk := filepath.Join(keys, "campaign.key"), filepath.Join(keys, "session.key")
	kafkaArgs := []string{"--brokers", b.Addr(), "--topic", "ret.claims", "--min-replication", "1"}

	code, _, errOut := runCLI(append([]string{"verifier", "--manifest", man, "--key", ck, "--session-key", sk,
		"--spool", filepath.Join(t.TempDir(), "spool"), "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"}, kafkaArgs...)...)
	if code != 2 || !strings.Contains(errOut, "retention.ms") {
		t.Fatalf("verifier on a one-day topic for a three-day campaign: exit %d %q", code, errOut)
	}
	t.Logf("verifier: exit 2 %s", strings.TrimSpace(errOut))
	code, _, errOut = runCLI(append([]string{"settler", "--manifest", man, "--key", ck, "--listen", "127.0.0.1:0",
		"--ledger", "sqlite://" + filepath.Join(t.TempDir(), "ledger.db")}, kafkaArgs...)...)
	if code != 2 || !strings.Contains(errOut, "retention.ms") {
		t.Fatalf("settler on a one-day topic for a three-day campaign: exit %d %q", code, errOut)
	}
	code, reps, _ := runTopicsCmd(t, append([]string{"check", "--manifest", man}, kafkaArgs...)...)
	if code != 1 || len(reps) != 2 || reps[0].OK || !strings.Contains(reps[0].Problem, "retention.ms") || reps[0].RetentionMs != 86400000 {
		t.Fatalf("topics check: exit %d %+v", code, reps)
	}

	// What topics create makes keeps every claim, and the broker reports it.
	if code, reps, errOut := runTopicsCmd(t, "create", "--brokers", b.Addr(), "--topic", "keep.claims", "--replication", "1"); code != 0 ||
		reps[0].RetentionMs != -1 || reps[0].RetentionBytes != -1 || reps[1].RetentionMs != -1 {
		t.Fatalf("topics create: exit %d %+v %s", code, reps, errOut)
	}
	if code, reps, _ := runTopicsCmd(t, "check", "--brokers", b.Addr(), "--topic", "keep.claims", "--min-replication", "1", "--manifest", man); code != 0 || !reps[0].OK {
		t.Fatalf("topics check of what create made: exit %d %+v", code, reps)
	}
}
