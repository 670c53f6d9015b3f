//go:build chaos

package chaos

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kmsg"

	"shake/broker"
	"shake/internal/testproxy"
)

// kafkaProxy stands between one client (the verifier, or the settler) and the broker,
// so that the test can black-hole that client's Kafka traffic alone. A Kafka client
// connects to the addresses the broker advertises in its Metadata and FindCoordinator
// answers, not to its bootstrap address, so the proxy rewrites the broker's address in
// those answers to its own: every connection the client makes goes through it. The
// broker's restarts are followed by address (the broker keeps its port).
type kafkaProxy struct {
	name   string
	target string
	addr   string
	host   string
	port   int32
	gate   testproxy.Gate

	ln    net.Listener
	mu    sync.Mutex
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

func startKafkaProxy(name, target string) (*kafkaProxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	host, port, _ := net.SplitHostPort(ln.Addr().String())
	pn, _ := strconv.Atoi(port)
	p := &kafkaProxy{name: name, target: target, addr: ln.Addr().String(), host: host, port: int32(pn), ln: ln,
		conns: map[net.Conn]struct{}{}}
	testproxy.AcceptLoop(ln, &p.wg, p.serve)
	return p, nil
}

// inflight maps a connection's correlation ids to the key and version of the request.
type inflight struct {
	mu sync.Mutex
	m  map[int32][2]int16
}

func (p *kafkaProxy) serve(c net.Conn) {
	up, err := net.DialTimeout("tcp", p.target, 5*time.Second)
	if err != nil {
		c.Close()
		return
	}
	p.mu.Lock()
	p.conns[c], p.conns[up] = struct{}{}, struct{}{}
	p.mu.Unlock()
	fl := &inflight{m: map[int32][2]int16{}}
	done := make(chan struct{}, 2)
	go func() { p.requests(up, c, fl); up.Close(); c.Close(); done <- struct{}{} }()
	go func() { p.responses(c, up, fl); up.Close(); c.Close(); done <- struct{}{} }()
	<-done
	<-done
	p.mu.Lock()
	delete(p.conns, c)
	delete(p.conns, up)
	p.mu.Unlock()
}

// readFrame reads one size-prefixed Kafka frame (the size included), at most 64 MiB.
func readFrame(r io.Reader, buf []byte) ([]byte, error) {
	var size [4]byte
	if _, err := io.ReadFull(r, size[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(size[:])
	if n > 64<<20 {
		return nil, fmt.Errorf("frame of %d bytes", n)
	}
	buf = append(append(buf[:0], size[:]...), make([]byte, n)...)
	_, err := io.ReadFull(r, buf[4:])
	return buf, err
}

// requests forwards client frames to the broker, noting each one's key and version.
func (p *kafkaProxy) requests(dst io.Writer, src io.Reader, fl *inflight) {
	p.frames(dst, src, func(f []byte) []byte {
		if len(f) >= 12 {
			key := int16(binary.BigEndian.Uint16(f[4:]))
			ver := int16(binary.BigEndian.Uint16(f[6:]))
			corr := int32(binary.BigEndian.Uint32(f[8:]))
			fl.mu.Lock()
			fl.m[corr] = [2]int16{key, ver}
			fl.mu.Unlock()
		}
		return f
	})
}

// responses forwards broker frames to the client, with the broker's address in
// Metadata and FindCoordinator answers replaced by the proxy's.
func (p *kafkaProxy) responses(dst io.Writer, src io.Reader, fl *inflight) {
	p.frames(dst, src, func(f []byte) []byte {
		if len(f) < 8 {
			return f
		}
		corr := int32(binary.BigEndian.Uint32(f[4:]))
		fl.mu.Lock()
		kv, ok := fl.m[corr]
		delete(fl.m, corr)
		fl.mu.Unlock()
		if ok && (kv[0] == int16(kmsg.Metadata) || kv[0] == int16(kmsg.FindCoordinator)) {
			if out, ok := p.rewrite(f, kv[0], kv[1]); ok {
				return out
			}
		}
		return f
	})
}

// frames forwards src to dst frame by frame, through the gate, passing each frame
// through fn, until either side fails.
func (p *kafkaProxy) frames(dst io.Writer, src io.Reader, fn func([]byte) []byte) {
	var buf []byte
	for {
		f, err := readFrame(src, buf)
		if err != nil {
			return
		}
		buf = f
		f = fn(f)
		p.gate.Pass()
		if _, err := dst.Write(f); err != nil {
			return
		}
	}
}

// rewrite re-encodes a Metadata or FindCoordinator answer with the proxy's address.
func (p *kafkaProxy) rewrite(f []byte, key, ver int16) ([]byte, bool) {
	resp := kmsg.ResponseForKey(key)
	resp.SetVersion(ver)
	body := f[8:]
	flexible := resp.IsFlexible()
	if flexible {
		// The response header's tagged fields: the broker writes none (one 0 byte).
		if len(body) == 0 || body[0] != 0 {
			return nil, false
		}
		body = body[1:]
	}
	if err := resp.ReadFrom(body); err != nil {
		return nil, false
	}
	switch r := resp.(type) {
	case *kmsg.MetadataResponse:
		for i := range r.Brokers {
			r.Brokers[i].Host, r.Brokers[i].Port = p.host, p.port
		}
	case *kmsg.FindCoordinatorResponse:
		if r.Host != "" {
			r.Host, r.Port = p.host, p.port
		}
		for i := range r.Coordinators {
			r.Coordinators[i].Host, r.Coordinators[i].Port = p.host, p.port
		}
	}
	out := make([]byte, 8, len(f)+64)
	binary.BigEndian.PutUint32(out[4:], binary.BigEndian.Uint32(f[4:]))
	if flexible {
		out = append(out, 0)
	}
	out = resp.AppendTo(out)
	binary.BigEndian.PutUint32(out, uint32(len(out)-4))
	return out, true
}

func (p *kafkaProxy) close() {
	p.gate.Hole(false)
	p.ln.Close()
	p.mu.Lock()
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// TestKafkaProxy: a producer and a consumer group behind the proxy reach the broker
// only through it (the broker's address never reaches them), and a black-hole delays
// their traffic without closing anything.
func TestKafkaProxy(t *testing.T) {
	b, err := broker.Start(broker.Config{Listen: "127.0.0.1:0", Partitions: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	p, err := startKafkaProxy("test", b.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer p.close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	w := &kafka.Writer{Addr: kafka.TCP(p.addr), Topic: broker.DefaultTopic, RequiredAcks: kafka.RequireAll, BatchTimeout: time.Millisecond}
	defer w.Close()
	if err := w.WriteMessages(ctx, kafka.Message{Value: []byte("a")}); err != nil {
		t.Fatal(err)
	}
	p.gate.Hole(true)
	done := make(chan error, 1)
	go func() { done <- w.WriteMessages(ctx, kafka.Message{Value: []byte("b")}) }()
	select {
	case err := <-done:
		t.Fatalf("a write went through a black-holed proxy: %v", err)
	case <-time.After(time.Second):
	}
	p.gate.Hole(false)
	if err := <-done; err != nil {
		t.Fatalf("write after the black-hole ended: %v", err)
	}
	rd := kafka.NewReader(kafka.ReaderConfig{Brokers: []string{p.addr}, Topic: broker.DefaultTopic, GroupID: "kproxy",
		StartOffset: kafka.FirstOffset, MaxWait: 100 * time.Millisecond})
	defer rd.Close()
	for range 2 {
		m, err := rd.FetchMessage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := rd.CommitMessages(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	// The consumer group's coordinator connection and the fetches go through the proxy
	// too (each proxied connection is two entries: client side and broker side).
	p.mu.Lock()
	n := len(p.conns) / 2
	p.mu.Unlock()
	t.Logf("%d connections through the proxy", n)
	if n < 2 {
		t.Fatalf("%d connections through the proxy; the clients went around it", n)
	}
}
