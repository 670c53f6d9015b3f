package broker

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"sync"

	"github.com/twmb/franz-go/pkg/kfake"
)

// MaxNodes bounds --nodes: the embedded cluster runs every node in one process.
const MaxNodes = 16

// minInsyncFor is the min.insync.replicas the broker gives its topics: 2 as soon as
// there are two nodes, so that "acknowledged by every in-sync replica" means two copies
// (what the verifier's and the settler's start-up check demands).
func minInsyncFor(nodes int) int {
	if nodes >= 2 {
		return 2
	}
	return 1
}

// ReplicationFor is the replication factor of the topics a cluster of n nodes creates.
func ReplicationFor(nodes int) int { return min(3, nodes) }

// bindNodes binds one listener per node: the first on listen, node i on listen's port
// plus i. With port 0 every node gets a free port of its own, since "the ports after a
// random one" may well be taken.
func bindNodes(listen string, nodes int) ([]net.Listener, error) {
	host, portStr, err := net.SplitHostPort(listen)
	if err != nil {
		return nil, fmt.Errorf("%w: listen address %q: %v", ErrConfig, listen, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 0 || port+nodes-1 > 65535 {
		return nil, fmt.Errorf("%w: listen address %q: port must leave room for %d nodes below 65536", ErrConfig, listen, nodes)
	}
	var lns []net.Listener
	for i := 0; i < nodes; i++ {
		p := 0
		if port != 0 {
			p = port + i
		}
		addr := net.JoinHostPort(host, strconv.Itoa(p))
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			for _, l := range lns {
				l.Close()
			}
			return nil, fmt.Errorf("cannot listen on %s (node %d): %w", addr, i, err)
		}
		lns = append(lns, ln)
	}
	return lns, nil
}

// listenFn hands kfake the listeners we bound, in node order, so that the caller's host
// and ports are honoured (kfake would otherwise pick 127.0.0.1 and ports of its own),
// each wrapped by wrap (TLS, see Security.options). A node added later (kfake's AddNode)
// gets a fresh listener on the same host.
func listenFn(lns []net.Listener, wrap func(net.Listener) net.Listener) func(network, address string) (net.Listener, error) {
	var (
		mu   sync.Mutex
		next int
	)
	host := "127.0.0.1"
	if len(lns) > 0 {
		host, _, _ = net.SplitHostPort(lns[0].Addr().String())
	}
	return func(network, address string) (net.Listener, error) {
		mu.Lock()
		defer mu.Unlock()
		if next < len(lns) {
			next++
			return wrap(lns[next-1]), nil
		}
		_, port, err := net.SplitHostPort(address)
		if err != nil {
			return nil, err
		}
		ln, err := net.Listen(network, net.JoinHostPort(host, port))
		if err != nil {
			return nil, err
		}
		return wrap(ln), nil
	}
}

// Addrs returns every node's host:port, the first being Addr.
func (b *Broker) Addrs() []string { return append([]string(nil), b.addrs...) }

// Bootstrap returns Addrs joined by commas: a --brokers value.
func (b *Broker) Bootstrap() string { return strings.Join(b.addrs, ",") }

// Nodes returns the number of nodes.
func (b *Broker) Nodes() int { return len(b.addrs) }

// ErrOneNode is returned by the leader moves of a one-node broker: there is nowhere to
// move a leader to.
var ErrOneNode = errors.New("a one-node broker cannot move partition leaders")

// MoveLeader makes node the leader of topic's partition, as a leader election would:
// clients that still send to the old leader get NOT_LEADER_FOR_PARTITION and must
// refresh their metadata.
func (b *Broker) MoveLeader(topic string, partition, node int) error {
	if len(b.addrs) < 2 {
		return ErrOneNode
	}
	return b.c.MoveTopicPartition(topic, int32(partition), int32(node))
}

// MoveLeaders moves the leader of each of topic's partitions 0..partitions-1 to another
// node (the next one round the ring, or a random other one with rnd), like a rolling
// restart of the cluster does.
func (b *Broker) MoveLeaders(topic string, partitions int, rnd *rand.Rand) error {
	if len(b.addrs) < 2 {
		return ErrOneNode
	}
	n := int32(len(b.addrs))
	for p := int32(0); p < int32(partitions); p++ {
		cur := b.c.LeaderFor(topic, p)
		if cur < 0 {
			return fmt.Errorf("topic %s partition %d: no leader", topic, p)
		}
		next := (cur + 1) % n
		if rnd != nil {
			next = (cur + 1 + rnd.Int32N(n-1)) % n
		}
		if err := b.c.MoveTopicPartition(topic, p, next); err != nil {
			return err
		}
	}
	return nil
}

// Leader returns the node leading topic's partition, or -1.
func (b *Broker) Leader(topic string, partition int) int {
	return int(b.c.LeaderFor(topic, int32(partition)))
}

// clusterOpts are the kfake options of an n-node cluster.
func clusterOpts(nodes int) []kfake.Opt {
	opts := []kfake.Opt{kfake.NumBrokers(nodes)}
	if m := minInsyncFor(nodes); m > 1 {
		// A broker-level default: every topic, seeded or created later without its own
		// setting, reports it (DescribeConfigs) like a real cluster configured so.
		opts = append(opts, kfake.BrokerConfigs(map[string]string{"min.insync.replicas": strconv.Itoa(m)}))
	}
	return opts
}
