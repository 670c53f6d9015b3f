//go:build chaos

package chaos

import (
	"io"
	"net"
	"sync"
	"time"
)

// tcpProxy forwards a loopback port to PostgreSQL. The settler reaches its ledger only
// through it, so the test can make PostgreSQL "unreachable" for the settler (every
// connection cut, new ones refused), black-hole it (nothing forwarded, nothing closed),
// or slow it down, without touching the real server, which other tests on this machine
// share.
type tcpProxy struct {
	target string
	addr   string
	gate   gate

	mu    sync.Mutex
	ln    net.Listener
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

func startTCPProxy(target string) (*tcpProxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &tcpProxy{target: target, addr: ln.Addr().String(), conns: map[net.Conn]struct{}{}}
	p.serve(ln)
	return p, nil
}

func (p *tcpProxy) serve(ln net.Listener) {
	p.ln = ln
	acceptLoop(ln, &p.wg, p.pipe)
}

// acceptLoop serves every connection ln accepts with fn, each in a goroutine counted in
// wg, until ln is closed.
func acceptLoop(ln net.Listener, wg *sync.WaitGroup, fn func(net.Conn)) {
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

func (p *tcpProxy) track(cs ...net.Conn) bool {
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

func (p *tcpProxy) untrack(cs ...net.Conn) {
	p.mu.Lock()
	for _, c := range cs {
		delete(p.conns, c)
	}
	p.mu.Unlock()
}

func (p *tcpProxy) pipe(c net.Conn) {
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
		_ = p.gate.copy(dst, src)
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

// down closes the listener (new connections are refused) and cuts every connection.
func (p *tcpProxy) down() {
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

// up listens again on the same address. The port was ours a moment ago; retry briefly
// in case the kernel has not released it yet.
func (p *tcpProxy) up() error {
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

func (p *tcpProxy) close() {
	p.down()
	p.wg.Wait()
}

// gate sits in a proxy's forwarding path: while holed it forwards nothing and closes
// nothing (a network partition that black-holes traffic: the peers' reads and writes
// just hang until their own timeouts), and it can add a delay to every chunk forwarded
// (a slow link or a slow ledger).
type gate struct {
	mu    sync.Mutex
	cond  *sync.Cond
	holed bool
	delay time.Duration
}

func (g *gate) init() {
	if g.cond == nil {
		g.cond = sync.NewCond(&g.mu)
	}
}

// hole starts (true) or ends (false) the black-hole.
func (g *gate) hole(on bool) {
	g.mu.Lock()
	g.init()
	g.holed = on
	g.cond.Broadcast()
	g.mu.Unlock()
}

// slow sets the delay added to every chunk (0: none).
func (g *gate) slow(d time.Duration) {
	g.mu.Lock()
	g.delay = d
	g.mu.Unlock()
}

// pass blocks while the gate is holed and then waits its delay.
func (g *gate) pass() {
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

// copy forwards src to dst through the gate until either side fails.
func (g *gate) copy(dst io.Writer, src io.Reader) error {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			g.pass()
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return werr
			}
		}
		if err != nil {
			return err
		}
	}
}
