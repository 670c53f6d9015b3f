package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"time"

	ikafka "shake/internal/kafka"
)

// kafkaFlags are the Kafka connection flags every command that talks to Kafka shares
// (verifier, settler, topics, dlq): the security flags of internal/kafka and, where
// the command trusts a topic with claims, --min-replication.
type kafkaFlags struct {
	sec     *ikafka.Flags
	minRepl *int // nil unless registered
}

// addKafkaFlags registers the security flags on fs, and --min-replication with
// minReplication.
func addKafkaFlags(fs *flag.FlagSet, minReplication bool) *kafkaFlags {
	k := &kafkaFlags{sec: ikafka.AddFlags(fs)}
	if minReplication {
		k.minRepl = ikafka.AddMinReplicationFlag(fs)
	}
	return k
}

// load validates the flags and reads the files they name. The error starts with the
// flag's name: print it with usageError (exit 2).
func (k *kafkaFlags) load() (*ikafka.Security, error) {
	if k.minRepl != nil {
		if err := ikafka.CheckMinReplication(*k.minRepl); err != nil {
			return nil, err
		}
	}
	return k.sec.Load()
}

// connect checks --brokers (required, named brokers on fs) and the security flags, for
// the operator tools that talk to Kafka (topics, dlq). The error names the flag.
func (k *kafkaFlags) connect(fs *flag.FlagSet, brokers string) ([]string, *ikafka.Security, error) {
	if err := requireFlag(fs, "brokers"); err != nil {
		return nil, nil, err
	}
	bl, err := ikafka.ParseBrokers(brokers)
	if err != nil {
		return nil, nil, fmt.Errorf("--brokers: %w", err)
	}
	sec, err := k.load()
	if err != nil {
		return nil, nil, err
	}
	return bl, sec, nil
}

// topicCheckWait is how long a starting verifier or settler waits for an unreachable
// Kafka before it starts without having checked the topic.
const topicCheckWait = 5 * time.Second

// checkClaimsTopicAtStart applies the start-up policy of docs/cli.md ("Kafka security flags") to
// topic and its .dlq. A refusal (missing, under-replicated, min.insync.replicas < 2) or
// a broker that refuses this client (TLS, SASL) is an error: the command exits 2 with
// it. Kafka unreachable for topicCheckWait is not: the role starts (the verifier
// spools, the settler waits), since Kafka being down must not stop an event, and says
// loudly that the topic was not checked. With strict (--dry-run) unreachable is an
// error too: the check was asked for and could not be made.
func checkClaimsTopicAtStart(ctx context.Context, log *slog.Logger, sec *ikafka.Security, brokers []string, topic string, policy ikafka.Policy, strict bool) error {
	if topic == "" {
		return errors.New("--topic must not be empty")
	}
	if sec.PlainPassword() {
		log.Warn("SASL PLAIN without TLS: the Kafka password crosses the network in clear; add --kafka-tls-ca")
	}
	admin := ikafka.NewAdmin(sec, brokers, 5*time.Second)
	infos, err := admin.WaitTopic(ctx, topic, policy, topicCheckWait)
	switch {
	case ctx.Err() != nil:
		return nil // stopping while starting: the caller's Run returns at once
	case errors.Is(err, ikafka.ErrUnreachable) && strict:
		return fmt.Errorf("--brokers: Kafka unreachable for %v, the topic %s was not checked: %w", topicCheckWait, topic, err)
	case errors.Is(err, ikafka.ErrUnreachable):
		log.Warn("Kafka unreachable at start: the claims topic is checked as soon as Kafka answers, before any claim is written to it or consumed", "topic", topic, "brokers", brokers, "err", err)
		return nil
	case err != nil:
		return err
	}
	for _, t := range infos {
		log.Info("topic checked", "topic", t.Name, "partitions", len(t.Partitions), "replication", t.Replication,
			"min_insync_replicas", t.MinInsync, "retention_ms", t.RetentionMs, "retention_bytes", t.RetentionBytes, "under_replicated", t.UnderReplicated, "security", sec.String())
	}
	return nil
}
