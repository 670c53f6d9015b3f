package main

import (
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// fdLimit is the `ulimit -n` the servers run under in the descriptor-exhaustion attack,
// and idleConns how many idle connections the attacker opens: well above it.
const (
	fdLimit   = 128
	idleConns = 3 * fdLimit
)

// floodIdle opens up to n idle TCP connections to addr and returns them; connections
// the server refuses or resets are simply not counted.
func floodIdle(t *testing.T, addr string, n int) []net.Conn {
	t.Helper()
	conns := make([]net.Conn, 0, n)
	for i := 0; i < n; i++ {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			continue
		}
		conns = append(conns, c)
	}
	return conns
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI(url)
	if err := fasthttp.DoTimeout(req, resp, 3*time.Second); err != nil {
		return 0, err.Error()
	}
	return resp.StatusCode(), string(resp.Body())
}

func post(t *testing.T, url, auth, body string) (int, string, string) {
	t.Helper()
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI(url)
	req.Header.SetMethod("POST")
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	req.SetBodyString(body)
	if err := fasthttp.DoTimeout(req, resp, 3*time.Second); err != nil {
		return 0, err.Error(), ""
	}
	return resp.StatusCode(), string(resp.Body()), string(resp.Header.Peek("Retry-After"))
}

// survivesIdleFlood is the idle-connection flood against one server: more idle
// connections than its descriptor limit. The server must stay up, keep answering its
// admin /healthz during the flood, and serve a fresh request once the flood is gone.
func survivesIdleFlood(t *testing.T, p *serverProc, public, admin string, fresh func() bool) {
	t.Helper()
	conns := floodIdle(t, public, idleConns)
	t.Logf("attacker holds %d of %d idle connections", len(conns), idleConns)
	time.Sleep(300 * time.Millisecond)
	if !p.alive() {
		t.Fatalf("server died under %d idle connections with ulimit -n %d:\n%s", len(conns), fdLimit, p.output())
	}
	if code, body := get(t, "http://"+admin+"/healthz"); code != 200 {
		t.Errorf("admin /healthz during the flood: %d %s", code, body)
	}
	if v := metricValue(t, admin, `shake_http_connections_refused_total{listener="public",reason="max_conns"}`); v <= 0 {
		t.Errorf("refused connections not counted: %v", v)
	}
	for _, c := range conns {
		c.Close()
	}
	ok := false
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline) && !ok; time.Sleep(100 * time.Millisecond) {
		ok = p.alive() && fresh()
	}
	if !ok {
		t.Fatalf("no fresh request served after the flood (alive %v):\n%s", p.alive(), p.output())
	}
	if code, body := get(t, "http://"+public+"/healthz"); code != 200 {
		t.Errorf("public /healthz after the flood: %d %s", code, body)
	}
}

// TestAttackIdleConnectionsEdge: before the fix, fasthttp treated EMFILE on accept as
// fatal and the edge exited.
func TestAttackIdleConnectionsEdge(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("whole-process test")
	}
	f := newCampaign(t, 1000, 1)
	p := startServer(t, fdLimit, f.edgeArgs(t, 0)...)
	public := p.waitLine(t, edgeReadyRE, 20*time.Second)
	admin := p.adminAddr(t)
	survivesIdleFlood(t, p, public, admin, func() bool {
		code, body, _ := post(t, "http://"+public+"/v1/shake", f.session(7), "")
		return code == 200 && body != ""
	})
	if code := p.stop(t, 15); code != 0 {
		t.Errorf("edge exit code %d after SIGTERM", code)
	}
}

// TestAttackIdleConnectionsVerifier is the same attack against the verifier.
func TestAttackIdleConnectionsVerifier(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("whole-process test")
	}
	f := newCampaign(t, 1000, 1)
	br := startServer(t, 0, "broker", "--listen", "127.0.0.1:0", "--partitions", "2")
	brokers := br.waitLine(t, brokerRE, 20*time.Second)
	p := startServer(t, fdLimit, "verifier", "--manifest", filepath.Join(f.out, "manifest.json"),
		"--key", f.key("campaign.key"), "--session-key", f.key("session.key"), "--brokers", brokers,
		"--spool", filepath.Join(t.TempDir(), "spool"), "--listen", "127.0.0.1:0", "--min-replication", "1")
	public := p.waitLine(t, verifierRE, 20*time.Second)
	admin := p.adminAddr(t)
	survivesIdleFlood(t, p, public, admin, func() bool {
		// A bad token is enough to prove the open path answers: 422, in JSON.
		code, _, _ := post(t, "http://"+public+"/v1/open", f.session(7), `{"token":"AAAA"}`)
		return code == 422
	})
}

// metricValue reads one series from the admin listener's /metrics (-1 when absent).
func metricValue(t *testing.T, admin, series string) float64 {
	t.Helper()
	code, body := get(t, "http://"+admin+"/metrics")
	if code != 200 {
		t.Fatalf("admin /metrics: %d %s", code, body)
	}
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			return f
		}
	}
	return -1
}
