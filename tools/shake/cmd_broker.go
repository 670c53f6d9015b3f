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
                    [--data DIR] [--log-format text|json] [--log-level info]

Runs the embedded Kafka-protocol broker (franz-go's kfake) as one node, for development,
tests and one-machine events. Real Kafka clients (kafka-go, kcat, librdkafka) produce to
and consume from it, consumer groups and committed offsets included.

At start it creates the topic (repeat --topic for several) and its dead-letter twin
"<topic>.dlq", each with --partitions partitions; other topics are created on first use.
It prints "broker listening on HOST:PORT" on stdout once it accepts connections; that
address is also what it advertises to clients, so give a reachable host.

In memory by default: everything is gone when it stops. With --data DIR it keeps topics
and committed offsets under DIR, fsynced per produced batch, and reloads them on start,
so a restarted broker loses nothing it acknowledged.

SIGTERM or SIGINT stops it (syncing --data first); exit status 0.
`

// brokerTopicList is the repeatable --topic flag.
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
	logFormat := fs.String("log-format", "text", "log format: text or json")
	logLvl := logLevelFlag(fs)
	if ok, code := parseFlags(fs, args); !ok {
		return code
	}
	if *logFormat != "text" && *logFormat != "json" {
		return usageError(stderr, "broker: --log-format must be text or json, not %q", *logFormat)
	}
	if *partitions < 1 || *partitions > 1<<14 {
		return usageError(stderr, "broker: --partitions must be in 1..16384, not %d", *partitions)
	}
	log := obs.NewLogger(stderr, *logFormat, logLvl.Level())
	b, err := broker.Start(broker.Config{Listen: *listen, Partitions: *partitions, Topics: topics, DataDir: *data})
	if err != nil {
		return usageError(stderr, "broker: %v", err)
	}
	fmt.Fprintf(stdout, "broker listening on %s\n", b.Addr())
	log.Info("broker started", "addr", b.Addr(), "partitions", *partitions, "topics", topics, "data", *data)
	ctx, stop := obs.SignalContext(context.Background())
	defer stop()
	<-ctx.Done()
	log.Info("broker stopping")
	b.Close()
	log.Info("broker stopped")
	return 0
}
