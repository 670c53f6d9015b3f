package main

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/valyala/fasthttp"

	"shake/ticket"
)

// benchFakes starts an in-process edge that lets every third user win and a verifier
// that opens every token, and writes a session.key; it returns their URLs and the key
// path.
func benchFakes(t *testing.T) (edge, verifier, keyPath string, opened *atomic.Int64) {
	t.Helper()
	dir := t.TempDir()
	key := ticket.NewKey()
	keyPath = filepath.Join(dir, "session.key")
	if err := ticket.WriteKeyFile(keyPath, key); err != nil {
		t.Fatal(err)
	}
	sk, _ := ticket.NewSessionKey(key)
	uidOf := func(ctx *fasthttp.RequestCtx) (uint64, bool) {
		tok, ok := ticket.BearerToken(ctx.Request.Header.Peek("Authorization"))
		if !ok {
			return 0, false
		}
		uid, err := sk.Verify(tok, 0)
		return uid, err == nil
	}
	serve := func(h fasthttp.RequestHandler) string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv := &fasthttp.Server{Handler: h}
		go srv.Serve(ln)
		t.Cleanup(func() { srv.Shutdown() })
		return "http://" + ln.Addr().String()
	}
	opened = new(atomic.Int64)
	edge = serve(func(ctx *fasthttp.RequestCtx) {
		uid, ok := uidOf(ctx)
		ctx.SetContentType("application/json")
		switch {
		case !ok:
			ctx.SetStatusCode(401)
			ctx.WriteString(`{"error":"unauthorized"}`)
		case uid%3 == 0:
			fmt.Fprintf(ctx, `{"result":"won","token":"t%d","campaign":"c","expires_at":"2030-01-01T00:00:00Z"}`, uid)
		default:
			ctx.WriteString(`{"result":"miss"}`)
		}
	})
	verifier = serve(func(ctx *fasthttp.RequestCtx) {
		uid, ok := uidOf(ctx)
		ctx.SetContentType("application/json")
		if !ok {
			ctx.SetStatusCode(401)
			ctx.WriteString(`{"error":"unauthorized"}`)
			return
		}
		opened.Add(1)
		fmt.Fprintf(ctx, `{"result":"opened","campaign":"c","ticket":"%d","amount":5,"currency":"CNY"}`, uid)
	})
	return edge, verifier, keyPath, opened
}

func TestBenchCommand(t *testing.T) {
	t.Parallel()
	edge, verifier, keyPath, opened := benchFakes(t)
	dir := t.TempDir()
	jsonPath, reportPath := filepath.Join(dir, "r.json"), filepath.Join(dir, "r.html")
	code, out, errOut := runCLI("bench", "--edge", edge+","+edge, "--verifier", verifier, "--session-key", keyPath,
		"--users", "30", "--rate", "300", "--duration", "500ms", "--think", "10ms",
		"--json", jsonPath, "--report", reportPath, "--baseline", "bare")
	if code != 0 {
		t.Fatalf("code %d\nstdout %s\nstderr %s", code, out, errOut)
	}
	for _, want := range []string{"open-loop at 300 shakes/s", "shake", "open", "p99", "shake results:", "opened", "bare"} {
		if !strings.Contains(out, want) {
			t.Errorf("summary lacks %q:\n%s", want, out)
		}
	}
	var res struct {
		Arrivals int64 `json:"arrivals"`
		Shake    struct {
			Requests int64            `json:"requests"`
			Results  map[string]int64 `json:"results"`
			Latency  map[string]any   `json:"latency_ms"`
		} `json:"shake"`
		Open struct {
			Results map[string]int64 `json:"results"`
		} `json:"open"`
		OpenedN   int64 `json:"opened_count"`
		OpenedSum int64 `json:"opened_amount"`
		Baselines []struct {
			Name string `json:"name"`
		} `json:"baselines"`
	}
	b, err := os.ReadFile(jsonPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &res); err != nil {
		t.Fatal(err)
	}
	if res.Arrivals != 150 || res.Shake.Requests != 150 || res.Shake.Results["won"]+res.Shake.Results["miss"] != 150 {
		t.Fatalf("arrivals %d requests %d results %v", res.Arrivals, res.Shake.Requests, res.Shake.Results)
	}
	if res.OpenedN != opened.Load() || res.OpenedN != res.Shake.Results["won"] || res.OpenedSum != 5*res.OpenedN {
		t.Fatalf("opened %d (server %d) won %d sum %d", res.OpenedN, opened.Load(), res.Shake.Results["won"], res.OpenedSum)
	}
	for _, k := range []string{"p50", "p90", "p99", "p99.9", "max"} {
		if _, ok := res.Shake.Latency[k]; !ok {
			t.Errorf("latency lacks %s", k)
		}
	}
	if len(res.Baselines) != 1 || res.Baselines[0].Name != "bare" {
		t.Fatalf("baselines %+v", res.Baselines)
	}
	page, err := os.ReadFile(reportPath)
	if err != nil || !strings.Contains(string(page), "<svg") || strings.Contains(string(page), "http://") {
		t.Fatalf("report: %v", err)
	}
	// stderr is not a terminal here: no progress line.
	if strings.Contains(errOut, "\r") {
		t.Fatalf("progress written to a non-terminal: %q", errOut)
	}
}

func TestBenchCommandNoEdgeAnswers(t *testing.T) {
	_, verifier, keyPath, _ := benchFakes(t)
	code, _, errOut := runCLI("bench", "--edge", "http://127.0.0.1:1", "--verifier", verifier, "--session-key", keyPath,
		"--rate", "50", "--duration", "100ms")
	if code != 1 || !strings.Contains(errOut, "no edge answered") {
		t.Fatalf("code %d stderr %q", code, errOut)
	}
}

func TestBenchCommandUsageErrors(t *testing.T) {
	_, _, keyPath, _ := benchFakes(t)
	short := filepath.Join(t.TempDir(), "short.key")
	os.WriteFile(short, []byte("x"), 0o600)
	base := []string{"bench", "--edge", "http://127.0.0.1:1", "--verifier", "http://127.0.0.1:1", "--session-key", keyPath}
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"bench", "--verifier", "x", "--session-key", keyPath}, "--edge is required"},
		{[]string{"bench", "--edge", "x", "--session-key", keyPath}, "--verifier is required"},
		{[]string{"bench", "--edge", "x", "--verifier", "y"}, "--session-key is required"},
		{append(base[:5:5], "--session-key", short), "--session-key"},
		{append(base[:5:5], "--session-key", "/nonexistent/key"), "--session-key"},
		{append(base, "--rate", "-1"), "--rate"},
		{append(base, "--duration", "0s"), "--duration"},
		{append(base, "--ramp", "1h"), "--ramp"},
		{append(base, "--users", "0"), "--users"},
		{append(base, "--connections", "0"), "--connections"},
		{append(base, "--baseline", "bare,mysql"), "--baseline"},
		{append(base, "--json", "/nonexistent/dir/r.json"), "--json"},
		{append(base, "--report", "/nonexistent/dir/r.html"), "--report"},
		{append(base, "--edge", "ftp://x"), "bad URL"},
		{append(base, "stray"), "unexpected argument"},
		{append(base, "--nope"), "nope"},
		{append(base, "--farm", "500"), "-farm"},
		{append(base, "--farm", "500:x"), "-farm"},
		{append(base, "--farm", "5:6"), "-farm"},
		{append(base, "--farm", "0:0"), "-farm"},
	}
	for _, tc := range tests {
		code, out, errOut := runCLI(tc.args...)
		if code != 2 || out != "" || strings.Count(errOut, "\n") != 1 || !strings.Contains(errOut, tc.want) {
			t.Errorf("%v: code %d stdout %q stderr %q, want one line naming %q", tc.args[1:], code, out, errOut, tc.want)
		}
	}
}

func TestBenchHelp(t *testing.T) {
	code, out, _ := runCLI("help", "bench")
	if code != 0 || !strings.Contains(out, "Usage: shake bench --edge") || !strings.Contains(out, "coordinated omission") {
		t.Fatalf("code %d help %q", code, out)
	}
}
