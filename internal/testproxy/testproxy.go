// Package testproxy forwards loopback TCP connections to a target (PostgreSQL, a broker)
// and lets a test fail the path without touching the server behind it, which other tests
// on the machine share: Down refuses new connections and cuts the live ones (the host is
// gone), Hole forwards nothing and closes nothing (a partition that black-holes traffic,
// so the peers hang until their own timeouts), Slow delays every chunk (a slow link or a
// slow ledger).
//
// The chaos suite, the settler's whole-process tests and the query reader's tests all
// use it; a protocol-aware proxy (chaos's Kafka proxy) builds on Gate and AcceptLoop.
package testproxy

import (
	"io"
	"net"
	"sync"
	"time"
)

// Proxy forwards the connections it accepts on Addr to its target.
type Proxy struct {
	// Gate is in the forwarding path of every connection, both ways.
	Gate Gate

	target string
	addr   string

	mu    sync.Mutex
	ln    net.Listener // nil while down
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

// Start listens on a free loopback port and forwards to target.
func Start(target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{target: target, addr: ln.Addr().String(), conns: map[net.Conn]struct{}{}}
	p.serve(ln)
	return p, nil
}

// Addr is the proxy's host:port; it stays the same across Down and Up.
func (p *Proxy) Addr() string { return p.addr }

// Down closes the listener (new connections are refused) and cuts every connection.
func (p *Proxy) Down() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for c := range p.conns {
		c.Close()
	}
}

// Up listens again on the same address. The port was the proxy's a moment ago; Up
// retries for up to 5 s in case the kernel has not released it yet.
func (p *Proxy) Up() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		return nil
	}
	var err error
	for i := 0; i < 100; i++ {
		var ln net.Listener
		if ln, err = net.Listen("tcp", p.addr); err == nil {
			p.serve(ln)
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	return err
}

// Close takes the proxy down and waits for its goroutines.
func (p *Proxy) Close() {
	p.Gate.Hole(false) // a held copy would never see its connection closed
	p.Down()
	p.wg.Wait()
}

func (p *Proxy) serve(ln net.Listener) {
	p.ln = ln
	AcceptLoop(ln, &p.wg, p.pipe)
}

func (p *Proxy) pipe(c net.Conn) {
	up, err := net.DialTimeout("tcp", p.target, 5*time.Second)
	if err != nil {
		c.Close()
		return
	}
	if !p.track(c, up) {
		c.Close()
		up.Close()
		return
	}
	done := make(chan struct{}, 2)
	cp := func(dst, src net.Conn) {
		_ = p.Gate.Copy(dst, src)
		dst.Close()
		src.Close()
		done <- struct{}{}
	}
	go cp(up, c)
	go cp(c, up)
	<-done
	<-done
	p.untrack(c, up)
}

func (p *Proxy) track(cs ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln == nil { // went down while dialling
		return false
	}
	for _, c := range cs {
		p.conns[c] = struct{}{}
	}
	return true
}

func (p *Proxy) untrack(cs ...net.Conn) {
	p.mu.Lock()
	for _, c := range cs {
		delete(p.conns, c)
	}
	p.mu.Unlock()
}

// AcceptLoop serves every connection ln accepts with fn, each in a goroutine counted in
// wg, until ln is closed.
func AcceptLoop(ln net.Listener, wg *sync.WaitGroup, fn func(net.Conn)) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() { defer wg.Done(); fn(c) }()
		}
	}()
}

// Gate sits in a forwarding path: while holed it forwards nothing and closes nothing,
// and it can add a delay to every chunk forwarded. The zero Gate forwards at once.
type Gate struct {
	mu    sync.Mutex
	cond  *sync.Cond
	holed bool
	delay time.Duration
}

func (g *Gate) init() {
	if g.cond == nil {
		g.cond = sync.NewCond(&g.mu)
	}
}

// Hole starts (true) or ends (false) the black-hole.
func (g *Gate) Hole(on bool) {
	g.mu.Lock()
	g.init()
	g.holed = on
	g.cond.Broadcast()
	g.mu.Unlock()
}

// Slow sets the delay added to every chunk (0: none).
func (g *Gate) Slow(d time.Duration) {
	g.mu.Lock()
	g.delay = d
	g.mu.Unlock()
}

// Pass blocks while the gate is holed and then waits its delay.
func (g *Gate) Pass() {
	g.mu.Lock()
	g.init()
	for g.holed {
		g.cond.Wait()
	}
	d := g.delay
	g.mu.Unlock()
	if d > 0 {
		time.Sleep(d)
	}
}

// Copy forwards src to dst through the gate until either side fails.
func (g *Gate) Copy(dst io.Writer, src io.Reader) error {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			g.Pass()
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return werr
			}
		}
		if err != nil {
			return err
		}
	}
}
