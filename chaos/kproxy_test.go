//go:build chaos

package chaos

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"
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
	gate   gate

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
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.wg.Add(1)
			go func() { defer p.wg.Done(); p.serve(c) }()
		}
	}()
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
	var buf []byte
	for {
		f, err := readFrame(src, buf)
		if err != nil {
			return
		}
		buf = f
		if len(f) >= 12 {
			key := int16(binary.BigEndian.Uint16(f[4:]))
			ver := int16(binary.BigEndian.Uint16(f[6:]))
			corr := int32(binary.BigEndian.Uint32(f[8:]))
			fl.mu.Lock()
			fl.m[corr] = [2]int16{key, ver}
			fl.mu.Unlock()
		}
		p.gate.pass()
		if _, err := dst.Write(f); err != nil {
			return
		}
	}
}

// responses forwards broker frames to the client, with the broker's address in
// Metadata and FindCoordinator answers replaced by the proxy's.
func (p *kafkaProxy) responses(dst io.Writer, src io.Reader, fl *inflight) {
	var buf []byte
	for {
		f, err := readFrame(src, buf)
		if err != nil {
			return
		}
		buf = f
		if len(f) >= 8 {
			corr := int32(binary.BigEndian.Uint32(f[4:]))
			fl.mu.Lock()
			kv, ok := fl.m[corr]
			delete(fl.m, corr)
			fl.mu.Unlock()
			if ok && (kv[0] == int16(kmsg.Metadata) || kv[0] == int16(kmsg.FindCoordinator)) {
				if out, ok := p.rewrite(f, kv[0], kv[1]); ok {
					f = out
				}
			}
		}
		p.gate.pass()
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
	p.gate.hole(false)
	p.ln.Close()
	p.mu.Lock()
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}
