package main

import (
	"context"
	"fmt"
	"io"

	"shake/broker"
	"shake/internal/obs"
)

func init() {
	register(command{name: "broker", summary: "run the embedded Kafka-protocol broker (kfake)", run: runBroker})
}

const brokerUsage = `
Usage: shake broker [--listen 127.0.0.1:9092] [--partitions 8] [--topic shake.claims]
                    [--data DIR] [--nodes 1] [--tls-cert FILE --tls-key FILE]
                    [--tls-client-ca FILE] [--sasl-user NAME:PASSWORD]...
                    [--log-format text|json] [--log-level info]

Runs the embedded Kafka-protocol broker (franz-go's kfake), for development, tests and
one-machine events. Real Kafka clients (kafka-go, kcat, librdkafka) produce to and
consume from it, consumer groups and committed offsets included.

--nodes N runs an N-broker cluster in this process: node 0 on --listen, node i on the
port of --listen plus i (with port 0, each node on a free port of its own). Topics get
min(3, N) replicas and, from two nodes on, min.insync.replicas 2, and partition
leaders are spread over the nodes. (The replicas are reported, not kept apart: the
nodes share one store, so this tests clients against leader moves and several
bootstrap addresses, not the loss of a disk.)

--tls-cert and --tls-key (PEM) make every node speak TLS only; --tls-client-ca also
requires a client certificate signed by that CA. --sasl-user NAME:PASSWORD (repeatable)
makes every connection authenticate first, with SASL PLAIN, SCRAM-SHA-256 or
SCRAM-SHA-512 as the client chooses. Both together are SASL_SSL. The password is on
this command line: the embedded broker is for development and tests, not for secrets
that matter.

At start it creates the topic (repeat --topic for several) and its dead-letter twin
"<topic>.dlq", each with --partitions partitions; other topics are created on first use.
It prints "broker listening on HOST:PORT[,HOST:PORT...]" (every node, usable as
--brokers) on stdout once it accepts connections; those addresses are also what it
advertises to clients, so give a reachable host.

In memory by default: everything is gone when it stops. With --data DIR it keeps topics
and committed offsets under DIR, fsynced per produced batch, and reloads them on start,
so a restarted broker loses nothing it acknowledged.

SIGTERM or SIGINT stops it (syncing --data first); exit status 0.
`

// brokerTopicList is a repeatable string flag (--topic, --sasl-user).
type brokerTopicList []string

func (s *brokerTopicList) String() string     { return fmt.Sprint(*s) }
func (s *brokerTopicList) Set(v string) error { *s = append(*s, v); return nil }

func runBroker(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("broker", brokerUsage, stderr)
	listen := fs.String("listen", "127.0.0.1:9092", "host:port to listen on and advertise (port 0 picks one)")
	partitions := fs.Int("partitions", broker.DefaultPartitions, "partitions per topic")
	var topics brokerTopicList
	fs.Var(&topics, "topic", "topic to create at start, with its .dlq twin (repeatable; default shake.claims)")
	data := fs.String("data", "", "directory that keeps topics and offsets across restarts (default: in memory)")
	nodes := fs.Int("nodes", 1, fmt.Sprintf("broker nodes in the cluster (1..%d), on consecutive ports from --listen", broker.MaxNodes))
	var sec broker.Security
	fs.StringVar(&sec.TLSCert, "tls-cert", "", "PEM certificate `FILE` of every node (TLS on; needs --tls-key)")
	fs.StringVar(&sec.TLSKey, "tls-key", "", "PEM private key `FILE` of --tls-cert")
	fs.StringVar(&sec.TLSClientCA, "tls-client-ca", "", "PEM CA `FILE`: require client certificates it signed (mutual TLS)")
	var users brokerTopicList
	fs.Var(&users, "sasl-user", "SASL user `NAME:PASSWORD` (repeatable; PLAIN, SCRAM-SHA-256, SCRAM-SHA-512)")
	logFormat := logFormatFlag(fs, "log format: text or json")
	logLvl := logLevelFlag(fs)
	if ok, code := parseFlags(fs, args); !ok {
		return code
	}
	if *partitions < 1 || *partitions > 1<<14 {
		return usageError(stderr, "broker: --partitions must be in 1..16384, not %d", *partitions)
	}
	if *nodes < 1 || *nodes > broker.MaxNodes {
		return usageError(stderr, "broker: --nodes must be in 1..%d, not %d", broker.MaxNodes, *nodes)
	}
	switch {
	case (sec.TLSCert == "") != (sec.TLSKey == ""):
		return usageError(stderr, "broker: --tls-cert and --tls-key go together")
	case sec.TLSClientCA != "" && sec.TLSCert == "":
		return usageError(stderr, "broker: --tls-client-ca needs --tls-cert and --tls-key")
	}
	for _, u := range users {
		bu, err := broker.ParseUser(u)
		if err != nil {
			return usageError(stderr, "broker: --sasl-user: %v", err)
		}
		sec.Users = append(sec.Users, bu)
	}
	log := obs.NewLogger(stderr, *logFormat, logLvl.Level())
	// Signals are taken before the port is bound: the port accepts connections (how a
	// supervisor sees the broker up) while the cluster is still loading --data, and a
	// SIGTERM then must still be a clean stop, exit 0.
	ctx, stop := obs.SignalContext(context.Background())
	defer stop()
	b, err := broker.Start(broker.Config{Listen: *listen, Partitions: *partitions, Topics: topics, DataDir: *data,
		Nodes: *nodes, Security: sec})
	if err != nil {
		return usageError(stderr, "broker: %v", err)
	}
	fmt.Fprintf(stdout, "broker listening on %s\n", b.Bootstrap())
	log.Info("broker started", "addrs", b.Addrs(), "nodes", b.Nodes(), "partitions", *partitions, "topics", topics, "data", *data,
		"replication", broker.ReplicationFor(b.Nodes()), "tls", sec.TLSCert != "", "mutual_tls", sec.TLSClientCA != "", "sasl_users", len(sec.Users))
	<-ctx.Done()
	log.Info("broker stopping")
	b.Close()
	log.Info("broker stopped")
	return 0
}
