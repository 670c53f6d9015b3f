package main

import (
	"context"
	"database/sql"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	_ "modernc.org/sqlite"

	"shake/internal/testpg"
	"shake/internal/testproxy"
)

// startProxy starts a proxy to target (see internal/testproxy), closed when the test
// ends; reserveProxy one that is down (connection refused, as when the ledger's host is
// down) until its Up.
func startProxy(t *testing.T, target string) *testproxy.Proxy {
	t.Helper()
	p, err := testproxy.Start(target)
	if err != nil {
		t.Fatalf("proxy: %v", err)
	}
	t.Cleanup(p.Close)
	return p
}

func reserveProxy(t *testing.T, target string) *testproxy.Proxy {
	t.Helper()
	p := startProxy(t, target)
	p.Down()
	return p
}

// proxyUp brings p back up or fails t.
func proxyUp(t *testing.T, p *testproxy.Proxy) {
	t.Helper()
	if err := p.Up(); err != nil {
		t.Fatalf("proxy up: %v", err)
	}
}

// viaProxy rewrites a postgres URL to go through addr.
func viaProxy(t *testing.T, pgURL, addr string) (proxied, target string) {
	t.Helper()
	u, err := url.Parse(pgURL)
	if err != nil {
		t.Fatal(err)
	}
	target = u.Host
	if u.Port() == "" {
		target = net.JoinHostPort(u.Hostname(), "5432")
	}
	u.Host = addr
	return u.String(), target
}

// logText reads a log startSettler is still writing.
func logText(logs *strings.Builder) string {
	settlerLogsMu.Lock()
	defer settlerLogsMu.Unlock()
	return logs.String()
}

func httpStatus(url string) (int, string) {
	resp, err := metricsClient.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// waitExit waits for cmd to exit within d and returns its exit code.
func waitExit(t *testing.T, cmd *exec.Cmd, d time.Duration) int {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode()
		}
		if err != nil {
			t.Fatal(err)
		}
		return 0
	case <-time.After(d):
		cmd.Process.Kill()
		<-done
		t.Fatalf("the settler did not exit within %v", d)
		return -1
	}
}

// TestSettlerWaitsForLedger starts the real settler while its PostgreSQL ledger is
// down (nothing listens on the proxy's port), checks that it waits (a WARN per
// attempt, /healthz 200, /readyz 503 ledger_unreachable), brings the ledger up after a
// few attempts and requires every claim posted. Before --ledger-wait the settler exited
// 2 at its first failed connection.
func TestSettlerWaitsForLedger(t *testing.T) {
	t.Parallel()
	pg := testpg.URL(t)
	if pg == "" {
		t.Skip("SHAKE_TEST_POSTGRES not set (CI sets it)")
	}
	const n = 300
	e := newSettlerEnv(t, n)
	e.produceClaims(t, 1, n)
	_, target := viaProxy(t, pg, "")
	p := reserveProxy(t, target)
	proxy, _ := viaProxy(t, pg, p.Addr())
	listen := freePort(t)
	cmd, logs := e.startSettler(t, proxy, listen, "--ledger-wait", "60s")
	// Two failed attempts logged: the settler is waiting, not gone.
	for deadline := time.Now().Add(20 * time.Second); strings.Count(logText(logs), "ledger unreachable at start: retrying") < 2; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the settler did not retry the ledger:\n%s", logText(logs))
		}
	}
	if code, body := httpStatus("http://" + listen + "/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz while waiting for the ledger: %d %s", code, body)
	}
	if code, body := httpStatus("http://" + listen + "/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "ledger_unreachable") {
		t.Fatalf("/readyz while waiting for the ledger: %d %s (want 503 ledger_unreachable)", code, body)
	}
	proxyUp(t, p)
	for deadline := time.Now().Add(60 * time.Second); settledTickets(t, pg, e.m.Campaign) != n; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d claims posted 60 s after the ledger came up:\n%s", settledTickets(t, pg, e.m.Campaign), n, logText(logs))
		}
	}
	waitReady(t, listen)
	cmd.Process.Signal(syscall.SIGTERM)
	if code := waitExit(t, cmd, 15*time.Second); code != 0 {
		t.Fatalf("settler exit %d after SIGTERM:\n%s", code, logText(logs))
	}
	if code, rep := e.reconcile(t, pg); code != 0 {
		t.Fatalf("reconcile exit %d: %v", code, rep)
	}
}

// closedPortLedger is a PostgreSQL URL on a loopback port nothing listens on.
func closedPortLedger(t *testing.T) string {
	return "postgres://postgres@" + freePort(t) + "/test?sslmode=disable"
}

// TestSettlerLedgerWaitGivesUp: a ledger that stays down is given up on after
// --ledger-wait, with exit 2 and one line naming --ledger.
func TestSettlerLedgerWaitGivesUp(t *testing.T) {
	t.Parallel()
	e := newSettlerEnv(t, 10)
	cmd, logs := e.startSettler(t, closedPortLedger(t), freePort(t), "--ledger-wait", "1500ms")
	start := time.Now()
	code := waitExit(t, cmd, 15*time.Second)
	took := time.Since(start)
	if code != 2 {
		t.Fatalf("exit %d, want 2:\n%s", code, logText(logs))
	}
	if took < 1500*time.Millisecond || took > 8*time.Second {
		t.Fatalf("gave up after %v with --ledger-wait 1.5s", took)
	}
	var last string
	for _, l := range strings.Split(strings.TrimSpace(logText(logs)), "\n") {
		if strings.HasPrefix(l, "shake settler:") {
			if last != "" {
				t.Fatalf("more than one error line:\n%s", logText(logs))
			}
			last = l
		}
	}
	if !strings.Contains(last, "--ledger: ledger unreachable") || !strings.Contains(last, "--ledger-wait 1.5s") {
		t.Fatalf("error line %q: want it to name --ledger and the wait", last)
	}
	if n := strings.Count(logText(logs), "ledger unreachable at start: retrying"); n < 2 {
		t.Fatalf("%d retries logged in 1.5 s, want several:\n%s", n, logText(logs))
	}
}

// TestSettlerLedgerWaitSIGTERM: SIGTERM while the settler waits for its ledger exits 0
// at once.
func TestSettlerLedgerWaitSIGTERM(t *testing.T) {
	t.Parallel()
	e := newSettlerEnv(t, 10)
	cmd, logs := e.startSettler(t, closedPortLedger(t), freePort(t), "--ledger-wait", "60s")
	for deadline := time.Now().Add(20 * time.Second); !strings.Contains(logText(logs), "ledger unreachable at start: retrying"); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no retry logged:\n%s", logText(logs))
		}
	}
	cmd.Process.Signal(syscall.SIGTERM)
	start := time.Now()
	if code := waitExit(t, cmd, 5*time.Second); code != 0 {
		t.Fatalf("exit %d after SIGTERM during the ledger wait:\n%s", code, logText(logs))
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("SIGTERM during the ledger wait took %v to exit", took)
	}
}

// TestSettlerLedgerPermanentErrors: what waiting cannot fix is not waited for: a
// database that does not exist (PostgreSQL) and a ledger whose schema a newer shake
// migrated exit 2 at once, with no retry, even with --ledger-wait 60s.
func TestSettlerLedgerPermanentErrors(t *testing.T) {
	t.Parallel()
	e := newSettlerEnv(t, 10)
	newer := filepath.Join(e.dir, "newer.db")
	db, err := sql.Open("sqlite", "file:"+newer)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(context.Background(), `CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL);
INSERT INTO schema_migrations VALUES (99, '0099_future.sql', 0)`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	cases := map[string]struct{ url, want string }{
		"newer schema": {"sqlite://" + newer, "newer than this shake knows"},
	}
	if pg := testpg.URL(t); pg != "" {
		u, _ := url.Parse(pg)
		u.Path = "/shake_no_such_database"
		cases["missing database"] = struct{ url, want string }{u.String(), "shake_no_such_database"}
	} else {
		t.Log("SHAKE_TEST_POSTGRES not set: the missing-database case is not run")
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			cmd, logs := e.startSettler(t, c.url, freePort(t), "--ledger-wait", "60s")
			start := time.Now()
			if code := waitExit(t, cmd, 10*time.Second); code != 2 {
				t.Fatalf("exit %d, want 2:\n%s", code, logText(logs))
			}
			out := logText(logs)
			if took := time.Since(start); took > 5*time.Second {
				t.Fatalf("a permanent error took %v to report", took)
			}
			if strings.Contains(out, "retrying") || !strings.Contains(out, "shake settler: --ledger:") || !strings.Contains(out, c.want) {
				t.Fatalf("want one --ledger line with %q and no retry:\n%s", c.want, out)
			}
		})
	}
}
