package main

import (
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// floodAdmin keeps conns connections from source address src open on addr, each held
// without a byte sent until the server closes it and then redialled at once (after a
// pause of 10ms, to keep the flood from starving the shared test machine), until stop.
func floodAdmin(src, addr string, conns int, stop <-chan struct{}) (dials *atomic.Int64) {
	dials = new(atomic.Int64)
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: time.Second}
	var wg sync.WaitGroup
	for i := 0; i < conns; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 256)
			for {
				select {
				case <-stop:
					return
				default:
				}
				c, err := d.Dial("tcp", addr)
				if err == nil {
					dials.Add(1)
					c.SetReadDeadline(time.Now().Add(30 * time.Second))
					go func() { <-stop; c.Close() }()
					for {
						if _, err := c.Read(buf); err != nil {
							break
						}
					}
					c.Close()
				}
				time.Sleep(10 * time.Millisecond)
			}
		}()
	}
	go func() { <-stop; wg.Wait() }()
	return dials
}

// TestAdminListenerSurvivesAFlood: one client (127.0.0.2) reconnecting 64 connections
// to an edge's admin listener for 10 s leaves another client's probes (95% of them)
// and a `shake ctl set` succeeding.
func TestAdminListenerSurvivesAFlood(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("whole-process test")
	}
	if c, err := (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}).Dial("tcp", "127.0.0.1:1"); err != nil &&
		strings.Contains(err.Error(), "assign requested address") {
		t.Fatalf("this machine cannot use 127.0.0.2 as a source address: %v", err)
	} else if c != nil {
		c.Close()
	}
	f := newCampaign(t, 100, 1)
	p := startServer(t, 0, f.edgeArgs(t, 0, "--admin-key", f.key("admin-edge.key"), "--drain", "0s")...)
	p.waitLine(t, edgeReadyRE, 20*time.Second)
	admin := p.adminAddr(t)

	stop := make(chan struct{})
	dials := floodAdmin("127.0.0.2", admin, 64, stop)
	time.Sleep(500 * time.Millisecond) // the flood holds what it can
	var ok, probes int
	ctlDone := make(chan string, 1)
	end := time.Now().Add(10 * time.Second)
	for i := 0; time.Now().Before(end); i++ {
		if i == 30 {
			go func() {
				code, out, e := runCLI("ctl", "--admin-key", f.key("admin.key"), "--servers", admin, "--timeout", "5s", "set", "edge.shed_ratio=0.1")
				if code != 0 {
					ctlDone <- out + e
					return
				}
				ctlDone <- ""
			}()
		}
		probes++
		if code, _ := probe("http://" + admin + "/healthz"); code == 200 {
			ok++
		}
		time.Sleep(100 * time.Millisecond)
	}
	close(stop)
	if msg := <-ctlDone; msg != "" {
		t.Errorf("shake ctl set during the flood failed:\n%s", msg)
	}
	t.Logf("flood: %d connections dialled from 127.0.0.2 in 10 s; probes from 127.0.0.1: %d of %d answered 200", dials.Load(), ok, probes)
	if ok*100 < probes*95 {
		t.Errorf("only %d of %d admin probes succeeded during the flood (want 95%%)", ok, probes)
	}
	if d := switchesOf(t, admin); d.Edge.ShedRatio != 0.1 {
		t.Errorf("after the flood the edge's shed_ratio is %v", d.Edge.ShedRatio)
	}
}

// probe GETs url on a fresh connection (Connection: close), as a kubelet or a
// load balancer's health check does, within 2 s.
func probe(url string) (int, error) {
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI(url)
	req.SetConnectionClose()
	if err := fasthttp.DoTimeout(req, resp, 2*time.Second); err != nil {
		return 0, err
	}
	return resp.StatusCode(), nil
}
