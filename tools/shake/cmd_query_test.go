package main

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"shake/settler/ledger"
	"shake/ticket"
)

// TestQueryFlags: every bad flag or input is exit 2 with one line naming it.
func TestQueryFlags(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "session.key")
	verMust(t, os.WriteFile(key, make([]byte, 32), 0o600))
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"query", "--session-key", key}, "--ledger is required"},
		{[]string{"query", "--ledger", "sqlite://" + filepath.Join(dir, "x.db")}, "--session-key is required"},
		{[]string{"query", "--ledger", "mysql://x", "--session-key", key}, "--ledger"},
		{[]string{"query", "--ledger", "sqlite://" + filepath.Join(dir, "missing.db"), "--session-key", key}, "missing.db"},
		{[]string{"query", "--ledger", "sqlite://x", "--session-key", filepath.Join(dir, "nokey")}, "--session-key"},
		{[]string{"query", "--ledger", "sqlite://x", "--session-key", key, "--db-conns", "0"}, "--db-conns"},
		{[]string{"query", "--ledger", "sqlite://x", "--session-key", key, "stray"}, "unexpected argument"},
	} {
		code, _, stderr := runCLI(c.args...)
		if code != 2 || !strings.Contains(stderr, c.want) || strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
			t.Errorf("%v: exit %d, stderr %q; want 2 and %q on one line", c.args, code, stderr, c.want)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "missing.db")); err == nil {
		t.Error("shake query created the ledger file it was pointed at")
	}
}

// TestQueryWholeProcess starts `shake query` on a settler-written SQLite ledger, asks
// it for a user's packets and a campaign page, and stops it with SIGTERM (exit 0).
func TestQueryWholeProcess(t *testing.T) {
	dir := t.TempDir()
	keyPath := filepath.Join(dir, "session.key")
	key := []byte("0123456789abcdef0123456789abcdef")
	verMust(t, os.WriteFile(keyPath, key, 0o600))
	dbURL := "sqlite://" + filepath.Join(dir, "ledger.db")
	ctx := context.Background()
	l, err := ledger.Open(ctx, dbURL)
	verMust(t, err)
	verMust(t, l.Fund(ctx, "cli", "CNY", 1000))
	verMust(t, l.Register(ctx, ledger.CampaignInfo{Campaign: "cli", Generation: strings.Repeat("1", 32), ManifestDigest: strings.Repeat("d", 64), Currency: "CNY", Budget: 1000, Tickets: 4}))
	_, err = l.Post(ctx, []ledger.Posting{{Campaign: "cli", Ticket: 1, Amount: 321, Currency: "CNY", UID: 77, OpenedAt: time.Now()}})
	verMust(t, err)
	l.Close()

	queryAdmin := verFreeAddr(t)
	p := startVerProc(t, "query", "--ledger", dbURL, "--session-key", keyPath, "--listen", "127.0.0.1:0", "--admin-listen", queryAdmin)
	sk, _ := ticket.NewSessionKey(key)
	base := "http://" + p.addr
	get := func(path, tok string) (int, string) {
		req, _ := http.NewRequest("GET", base+path, nil)
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err := http.DefaultClient.Do(req)
		verMust(t, err)
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	code, body := get("/v1/packets", string(sk.Mint(nil, 77, time.Now().Add(time.Hour).Unix())))
	if code != 200 || !strings.Contains(body, `"packets":[{"campaign":"cli","ticket":"1","amount":321,"currency":"CNY"`) {
		t.Fatalf("/v1/packets: %d %s", code, body)
	}
	code, body = get("/v1/campaigns/cli", "")
	if code != 200 || body != `{"campaign":"cli","currency":"CNY","budget":1000,"tickets":4,"settled_tickets":1,"settled_amount":321,"top":[{"uid_masked":"****7","amount":321}]}` {
		t.Fatalf("/v1/campaigns/cli: %d %s", code, body)
	}
	if code, _ := get("/metrics", ""); code != 404 {
		t.Errorf("public /metrics: %d, want 404", code)
	}
	base = "http://" + queryAdmin
	if code, body = get("/metrics", ""); code != 200 || !strings.Contains(body, `shake_query_requests_total{endpoint="packets",result="ok"} 1`) {
		t.Fatalf("/metrics: %d %s", code, body)
	}
	if code := p.stop(t, syscall.SIGTERM); code != 0 {
		t.Fatalf("SIGTERM: exit %d", code)
	}
}
