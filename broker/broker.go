// Package broker runs the embedded Kafka-protocol broker (franz-go's kfake) that tests,
// the demo and `shake broker` use: one node on one listen address, the claims topic and
// its dead-letter topic created up front, optionally persisted to disk with an fsync per
// produced batch.
package broker

import (
	"errors"
	"fmt"
	"os"

	"github.com/twmb/franz-go/pkg/kfake"

	ikafka "shake/internal/kafka"
)

// DefaultTopic is the claims topic docs/cli.md names.
const DefaultTopic = ikafka.ClaimsTopic

// DefaultPartitions is the partition count of every seeded and auto-created topic.
const DefaultPartitions = 8

// DLQSuffix is appended to a topic name to name its dead-letter topic.
const DLQSuffix = ikafka.DLQSuffix

// ErrConfig wraps every configuration error Start reports.
var ErrConfig = errors.New("bad broker configuration")

// Config configures Start. Zero values take the defaults.
type Config struct {
	// Listen is host:port; port 0 picks a free port. Default 127.0.0.1:9092. The
	// address is what the broker advertises in metadata, so clients must be able to
	// reach it as written (use a concrete host, not 0.0.0.0, when clients are remote).
	Listen string
	// Partitions per topic, default 8.
	Partitions int
	// Topics to create at start, each with its "<topic>.dlq" twin. Default shake.claims.
	Topics []string
	// DataDir, when set, keeps topics and committed offsets on disk there, fsynced per
	// produced batch, and reloads them on start.
	DataDir string
	// Nodes is the number of broker nodes (default 1, at most MaxNodes): node 0 on
	// Listen, node i on Listen's port + i (see cluster.go). Topics get min(3, Nodes)
	// replicas and, from two nodes on, min.insync.replicas 2.
	Nodes int
	// Security: TLS and SASL users (see security.go); zero is plain text.
	Security Security
}

// Broker is a running embedded broker.
type Broker struct {
	c     *kfake.Cluster
	addr  string
	addrs []string // every node, addr first
}

// Start validates cfg, binds the listen address and starts the broker.
func Start(cfg Config) (*Broker, error) {
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:9092"
	}
	if cfg.Partitions == 0 {
		cfg.Partitions = DefaultPartitions
	}
	if cfg.Partitions < 1 || cfg.Partitions > 1<<14 {
		return nil, fmt.Errorf("%w: partitions %d not in 1..16384", ErrConfig, cfg.Partitions)
	}
	if len(cfg.Topics) == 0 {
		cfg.Topics = []string{DefaultTopic}
	}
	var topics []string
	for _, t := range cfg.Topics {
		if !validTopic(t) {
			return nil, fmt.Errorf("%w: topic %q must be 1..245 characters of [a-zA-Z0-9._-]", ErrConfig, t)
		}
		topics = append(topics, t, ikafka.DLQTopic(t))
	}
	if cfg.Nodes == 0 {
		cfg.Nodes = 1
	}
	if cfg.Nodes < 1 || cfg.Nodes > MaxNodes {
		return nil, fmt.Errorf("%w: nodes %d not in 1..%d", ErrConfig, cfg.Nodes, MaxNodes)
	}
	secOpts, wrap, err := cfg.Security.options()
	if err != nil {
		return nil, err
	}
	// Bind ourselves so that the caller's host and port (including port 0) are honoured:
	// kfake would otherwise listen on 127.0.0.1 with a port of its choosing.
	lns, err := bindNodes(cfg.Listen, cfg.Nodes)
	if err != nil {
		return nil, err
	}
	closeAll := func() {
		for _, l := range lns {
			l.Close()
		}
	}
	opts := []kfake.Opt{
		kfake.ListenFn(listenFn(lns, wrap)),
		kfake.SeedTopics(int32(cfg.Partitions), topics...),
		kfake.DefaultNumPartitions(cfg.Partitions),
		kfake.AllowAutoTopicCreation(),
		kfake.ClusterID("shake"),
		keepRecords,
	}
	opts = append(opts, clusterOpts(cfg.Nodes)...)
	opts = append(opts, secOpts...)
	if cfg.DataDir != "" {
		if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
			closeAll()
			return nil, fmt.Errorf("cannot create data directory %s: %w", cfg.DataDir, err)
		}
		opts = append(opts, kfake.DataDir(cfg.DataDir), kfake.SyncWrites())
	}
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		closeAll()
		return nil, fmt.Errorf("cannot start broker: %w", err)
	}
	b := &Broker{c: c}
	for _, l := range lns {
		b.addrs = append(b.addrs, l.Addr().String())
	}
	b.addr = b.addrs[0]
	return b, nil
}

// keepRecords makes topics keep their records unless created with other retention:
// claims are money (a restarted verifier rebuilds from the whole claims topic, and the
// verifier and the settler refuse a topic that could delete one). kfake's defaults
// would delete them after 7 days.
var keepRecords = kfake.BrokerConfigs(map[string]string{"log.retention.ms": "-1", "log.retention.bytes": "-1"})

// Addr returns the host:port the broker listens on and advertises.
func (b *Broker) Addr() string { return b.addr }

// Close stops the broker; with a DataDir it syncs its state to disk first.
func (b *Broker) Close() { b.c.Close() }

func validTopic(t string) bool { return ikafka.ValidTopic(t) }
