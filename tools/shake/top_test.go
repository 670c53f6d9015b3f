package main

import (
	"net/http"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// shakeSome sends n shakes, each by another user, to every edge of c.
func shakeSome(t *testing.T, c *chain, n int) {
	t.Helper()
	for _, e := range c.edges {
		for uid := 1; uid <= n; uid++ {
			req, _ := http.NewRequest(http.MethodPost, "http://"+e+"/v1/shake", nil)
			req.Header.Set("Authorization", c.f.session(uint64(uid)))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
		}
	}
}

// ctlSet runs shake ctl set against servers and fails the test unless it exits 0.
func ctlSet(t *testing.T, c *chain, servers []string, kv ...string) {
	t.Helper()
	args := append([]string{"ctl", "--admin-key", c.f.key("admin.key"), "--servers", strings.Join(servers, ","), "set"}, kv...)
	if code, out, errOut := runBinary(t, args...); code != 0 {
		t.Fatalf("shake %v: exit %d\n%s%s", args, code, out, errOut)
	}
}

// TestTopOnce runs shake top --once against a running chain (two edges, a verifier, a
// settler) with a settler paused and an address where nothing listens: one table per
// role with the servers' figures, the paused settler and the unreachable server named
// with why, exit 1; without the dead address, exit 0.
func TestTopOnce(t *testing.T) {
	t.Parallel()
	c := startChain(t, 400, 2)
	shakeSome(t, c, 30)
	ctlSet(t, c, []string{c.settlerAdm}, "settler.paused=true")
	ctlSet(t, c, c.edgeAdmins, "edge.shed_ratio=0.5")

	servers := strings.Join(append(c.admins(), "127.0.0.1:1"), ",")
	code, out, errOut := runBinary(t, "top", "--servers", servers, "--once", "--interval", "200ms")
	if code != 1 {
		t.Fatalf("top --once with an unreachable server: exit %d, want 1\n%s%s", code, out, errOut)
	}
	t.Logf("frame:\n%s", out)
	for _, want := range []string{"shake top ", "5 servers: 3 ready, 1 not ready, 1 unreachable",
		"EDGE ", "SHAKES/S", "TICKETS LEFT", "VERIFIER ", "OPENS/S", "SETTLER ", "KAFKA LAG", "LAG P99",
		"SHED 50%", "v1: PAUSED", "PAUSED",
		c.edgeAdmins[0], c.edgeAdmins[1], c.verAdm, c.settlerAdm,
		"127.0.0.1:1 UNREACHABLE: ", "connection refused",
		c.settlerAdm + " settler NOT READY: paused"} {
		if !strings.Contains(out, want) {
			t.Errorf("frame lacks %q", want)
		}
	}
	// Each edge answered 30 shakes: the frame counts them by class.
	for _, e := range c.edgeAdmins {
		line := lineWith(out, e)
		f := strings.Fields(line)
		if len(f) < 8 {
			t.Fatalf("edge line %q", line)
		}
		won, _ := strconv.Atoi(f[4])
		miss, _ := strconv.Atoi(f[5])
		closed, _ := strconv.Atoi(f[6])
		if won+miss+closed != 30 {
			t.Errorf("edge line %q: won+miss+closed = %d, want the 30 shakes sent", line, won+miss+closed)
		}
	}

	code, out, errOut = runBinary(t, "top", "--servers", strings.Join(c.admins(), ","), "--once", "--interval", "200ms")
	if code != 0 || !strings.Contains(out, "4 servers: 3 ready, 1 not ready, 0 unreachable") {
		t.Errorf("top --once over reachable servers: exit %d, want 0\n%s%s", code, out, errOut)
	}
}

func lineWith(text, s string) string {
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(l, s+" ") {
			return l
		}
	}
	return ""
}

// TestTopBadUsage: a missing or malformed --servers is exit 2 naming the flag.
func TestTopBadUsage(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{"top", "--once"}, {"top", "--servers", ",", "--once"},
		{"top", "--servers", "ftp://x:1", "--once"}, {"top", "--servers", "127.0.0.1:1", "--interval", "1ms"}} {
		code, _, errOut := runBinary(t, args...)
		if code != 2 || !strings.Contains(errOut, "--") || strings.Count(strings.TrimSpace(errOut), "\n") != 0 {
			t.Errorf("shake %v: exit %d, stderr %q; want 2 and one line naming the flag", args, code, errOut)
		}
	}
}

// TestTopInTmux runs the live view in a tmux pane against a running chain: it draws
// the fleet, redraws within a second or two when an operator pauses the edges, and
// Ctrl-C ends it.
func TestTopInTmux(t *testing.T) {
	if _, err := exec.LookPath("tmux"); err != nil {
		t.Skip("no tmux on PATH (apt-get install tmux)")
	}
	t.Parallel()
	c := startChain(t, 200, 1)
	// A server of its own, on a socket in the test's directory: nothing is left behind.
	sock := filepath.Join(t.TempDir(), "tmux.sock")
	tmux := func(args ...string) (string, error) {
		out, err := exec.Command("tmux", append([]string{"-S", sock}, args...)...).CombinedOutput()
		return string(out), err
	}
	cmd := shakeBinary(t) + " top --servers " + strings.Join(c.admins(), ",") + "; echo top-exited-$?; sleep 30"
	if out, err := tmux("new-session", "-d", "-s", "top", "-x", "180", "-y", "40", cmd); err != nil {
		t.Fatalf("tmux new-session: %v\n%s", err, out)
	}
	t.Cleanup(func() { tmux("kill-server") })
	waitPane := func(want string) string {
		t.Helper()
		var pane string
		for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
			pane, _ = tmux("capture-pane", "-p", "-t", "top")
			if strings.Contains(pane, want) {
				return pane
			}
		}
		t.Fatalf("the pane never showed %q:\n%s", want, pane)
		return ""
	}
	pane := waitPane("every server reachable and ready")
	for _, want := range []string{"EDGE", "VERIFIER", "SETTLER", "v0, none", c.edgeAdmins[0]} {
		if !strings.Contains(pane, want) {
			t.Errorf("pane lacks %q:\n%s", want, pane)
		}
	}
	ctlSet(t, c, c.edgeAdmins, "edge.paused=true")
	pane = waitPane("v1: PAUSED")
	if !strings.Contains(pane, "SWITCHES DIFFER: versions") {
		t.Errorf("edges at v1 and the rest at v0, yet the header does not say the switches differ:\n%s", pane)
	}
	if strings.Count(pane, "shake top ") != 1 {
		t.Errorf("the view does not redraw in place (%d headers in the pane):\n%s", strings.Count(pane, "shake top "), pane)
	}
	if out, err := tmux("send-keys", "-t", "top", "C-c"); err != nil {
		t.Fatalf("send-keys: %v %s", err, out)
	}
	waitPane("top-exited-0")
}
