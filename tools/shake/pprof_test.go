package main

import (
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"shake/internal/proc"
)

// TestPprofNeedsTheRoleToken: on every admin listener (edge, verifier, settler, query,
// reconcile --watch) /debug/pprof/cmdline answers 401 without a token and with another
// role's, and the command line only to the role's own token; /metrics, /healthz and
// /readyz stay open.
func TestPprofNeedsTheRoleToken(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("whole-process test")
	}
	c := startChain(t, 200, 1)
	f := c.f
	qAdmin, err := proc.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	q := startServer(t, 0, "query", "--ledger", c.ledger, "--session-key", f.key("session.key"), "--listen", "127.0.0.1:0",
		"--admin-listen", qAdmin, "--admin-key", f.key("admin-query.key"))
	q.waitLine(t, regexp.MustCompile(`query listening on (\S+)`), 20*time.Second)
	rAddr, err := proc.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	r := startServer(t, 0, "reconcile", "--manifest", filepath.Join(f.out, "manifest.json"), "--ledger", c.ledger,
		"--watch", "1s", "--listen", rAddr, "--admin-key", f.key("admin-query.key"))
	r.waitLine(t, regexp.MustCompile(`reconciling continuously`), 20*time.Second)

	token := func(role string) string {
		return strings.TrimSpace(must(runCLI("admin", "token", "--key", f.key("admin-"+role+".key"))))
	}
	listeners := []struct{ name, addr, keyRole, otherRole string }{
		{"edge", c.edgeAdmins[0], "edge", "verifier"},
		{"verifier", c.verAdm, "verifier", "edge"},
		{"settler", c.settlerAdm, "settler", "edge"},
		{"query", qAdmin, "query", "edge"},
		{"reconcile", rAddr, "query", "settler"},
	}
	for _, l := range listeners {
		url := "http://" + l.addr + "/debug/pprof/cmdline"
		if code, body := adminDo(t, "GET", url, "", ""); code != 401 || body != `{"error":"unauthorized"}` {
			t.Errorf("%s: pprof/cmdline without a token: %d %q, want 401", l.name, code, body)
		}
		if code, _ := adminDo(t, "GET", url, token(l.otherRole), ""); code != 401 {
			t.Errorf("%s: pprof/cmdline with the %s's token: %d, want 401", l.name, l.otherRole, code)
		}
		if code, body := adminDo(t, "GET", url, token(l.keyRole), ""); code != 200 || !strings.Contains(body, "--admin-key") {
			t.Errorf("%s: pprof/cmdline with its token: %d %q", l.name, code, body)
		}
		if code, _ := get(t, "http://"+l.addr+"/metrics"); code != 200 {
			t.Errorf("%s /metrics without a token: %d, want 200", l.name, code)
		}
		if code, body := get(t, "http://"+l.addr+"/healthz"); code != 200 || body != `{"status":"ok","role":"`+l.name+`"}` {
			t.Errorf("%s /healthz without a token: %d %s, want 200 naming the role", l.name, code, body)
		}
		if code, body := get(t, "http://"+l.addr+"/readyz"); code == 401 {
			t.Errorf("%s /readyz wants a token: %s", l.name, body)
		}
	}
}
