package main

import (
	"context"
	"io"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// waitMetric polls addr/metrics until name (with its labels) has a value for which ok
// is true, and returns it.
func waitMetric(t *testing.T, addr, name string, within time.Duration, ok func(float64) bool) float64 {
	t.Helper()
	var v float64
	var found bool
	for deadline := time.Now().Add(within); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if v, found = metric(addr, name); found && ok(v) {
			return v
		}
	}
	t.Fatalf("%s on %s: last value %v (present %v) after %v", name, addr, v, found, within)
	return 0
}

// TestReconcileWatch runs the real watcher against a settled ledger, corrupts one
// posting behind its back, and checks that the exported result turns from ok to not
// ok, that the failure is counted and logged, and that SIGTERM stops it with exit 0.
func TestReconcileWatch(t *testing.T) {
	t.Parallel()
	e := newSettlerEnv(t, 2000)
	db := filepath.Join(e.dir, "ledger.db")
	url := "sqlite://" + db
	e.produceClaims(t, 1, 2000)
	settler, slogs := e.startSettler(t, url, freePort(t))
	deadline := time.Now().Add(60 * time.Second)
	for settledTickets(t, url, e.m.Campaign) != 2000 {
		if time.Now().After(deadline) {
			t.Fatalf("the settler did not settle the claims (%d settled):\n%s", settledTickets(t, url, e.m.Campaign), slogs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	settler.Process.Signal(syscall.SIGTERM)
	settler.Wait()

	addr := freePort(t)
	cmd := exec.Command(e.bin, "reconcile", "--manifest", e.manifest, "--ledger", url, "--watch", "200ms", "--listen", addr, "--log-format", "json")
	var logs strings.Builder
	cmd.Stderr = &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	camp := `{campaign="` + e.m.Campaign + `"}`
	waitMetric(t, addr, "shake_reconcile_ok"+camp, 20*time.Second, func(v float64) bool { return v == 1 })
	if v, _ := metric(addr, "shake_reconcile_settled_tickets"+camp); v != 2000 {
		t.Fatalf("shake_reconcile_settled_tickets = %v, want 2000", v)
	}
	if v, _ := metric(addr, "shake_reconcile_last_run_timestamp_seconds"); time.Since(time.Unix(int64(v), 0)) > 10*time.Second {
		t.Fatalf("last run timestamp %v is not recent", v)
	}
	resp, err := http.Get("http://" + addr + "/readyz")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("/readyz: %v %v", resp, err)
	}
	resp.Body.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := corruptFirstPosting(ctx, db); err != nil {
		t.Fatalf("corrupting the ledger: %v", err)
	}
	start := time.Now()
	waitMetric(t, addr, "shake_reconcile_ok"+camp, 20*time.Second, func(v float64) bool { return v == 0 })
	t.Logf("a corrupted posting turned shake_reconcile_ok to 0 within %v (--watch 200ms)", time.Since(start).Round(time.Millisecond))
	waitMetric(t, addr, `shake_reconcile_runs_total{result="failed"}`, 5*time.Second, func(v float64) bool { return v >= 1 })
	if v, _ := metric(addr, "shake_reconcile_mismatches"+camp); v < 1 {
		t.Fatalf("shake_reconcile_mismatches = %v after a corrupted amount", v)
	}
	if promtool, err := exec.LookPath("promtool"); err == nil {
		resp, err := http.Get("http://" + addr + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		lint := exec.Command(promtool, "check", "metrics")
		lint.Stdin = strings.NewReader(string(body))
		if out, err := lint.CombinedOutput(); err != nil || len(strings.TrimSpace(string(out))) > 0 {
			t.Fatalf("promtool check metrics on the watcher's /metrics: %v\n%s", err, out)
		}
	} else {
		t.Log("promtool not installed: the watcher's /metrics is not linted")
	}

	cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("watcher exit after SIGTERM: %v\n%s", err, logs.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("watcher did not stop on SIGTERM")
	}
	if !strings.Contains(logs.String(), "the money does not reconcile") || !strings.Contains(logs.String(), `"level":"ERROR"`) {
		t.Fatalf("the failure is not logged as an error:\n%s", logs.String())
	}
}

func TestReconcileWatchFlags(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--watch", "-1s"}, "--watch"},
		{[]string{"--watch", "1s", "--refund"}, "--refund and --watch"},
		{[]string{"--watch", "1s", "--log-format", "xml"}, "--log-format"},
	} {
		args := append([]string{"reconcile", "--manifest", "m.json", "--ledger", "sqlite:///x.db"}, c.args...)
		code, _, errOut := runCLI(args...)
		if code != 2 || !strings.Contains(errOut, c.want) {
			t.Errorf("%v: code %d stderr %q", c.args, code, errOut)
		}
	}
}
