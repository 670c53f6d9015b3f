package testproxy

import (
	"bufio"
	"errors"
	"net"
	"os"
	"sync"
	"testing"
	"time"
)

// echo serves a line echo on a loopback port until the test ends.
func echo(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	AcceptLoop(ln, &wg, func(c net.Conn) {
		defer c.Close()
		r := bufio.NewReader(c)
		for {
			line, err := r.ReadBytes('\n')
			if err != nil {
				return
			}
			if _, err := c.Write(line); err != nil {
				return
			}
		}
	})
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	return ln.Addr().String()
}

// roundTrip sends one line on c and reads the answer within d.
func roundTrip(c net.Conn, r *bufio.Reader, d time.Duration) (string, error) {
	c.SetDeadline(time.Now().Add(d))
	if _, err := c.Write([]byte("ping\n")); err != nil {
		return "", err
	}
	line, err := r.ReadString('\n')
	return line, err
}

func TestProxy(t *testing.T) {
	p, err := Start(echo(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	if got, err := roundTrip(c, r, 5*time.Second); err != nil || got != "ping\n" {
		t.Fatalf("through the proxy: %q %v", got, err)
	}

	// Holed: nothing arrives and nothing is closed; unholed, what was held arrives.
	p.Gate.Hole(true)
	if got, err := roundTrip(c, r, 200*time.Millisecond); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("through a holed proxy: %q %v, want a timeout", got, err)
	}
	p.Gate.Hole(false)
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if got, err := r.ReadString('\n'); err != nil || got != "ping\n" {
		t.Fatalf("the held line after the hole: %q %v", got, err)
	}

	// Slowed: every chunk waits the delay, each way.
	p.Gate.Slow(100 * time.Millisecond)
	t0 := time.Now()
	if got, err := roundTrip(c, r, 5*time.Second); err != nil || got != "ping\n" {
		t.Fatalf("through a slow proxy: %q %v", got, err)
	}
	if took := time.Since(t0); took < 200*time.Millisecond {
		t.Fatalf("a round trip through a 100ms-per-chunk proxy took %v, want at least 200ms", took)
	}
	p.Gate.Slow(0)

	// Down: the live connection is cut and new ones are refused; Up: the same address
	// serves again.
	addr := p.Addr()
	p.Down()
	if _, err := roundTrip(c, r, 5*time.Second); err == nil {
		t.Fatal("a connection survived Down")
	}
	if c2, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c2.Close()
		t.Fatal("Down still accepts connections")
	}
	if err := p.Up(); err != nil {
		t.Fatal(err)
	}
	if p.Addr() != addr {
		t.Fatalf("Up moved the proxy from %s to %s", addr, p.Addr())
	}
	c3, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c3.Close()
	if got, err := roundTrip(c3, bufio.NewReader(c3), 5*time.Second); err != nil || got != "ping\n" {
		t.Fatalf("after Up: %q %v", got, err)
	}
}
