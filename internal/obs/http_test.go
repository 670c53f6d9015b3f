package obs

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

type testServer struct {
	srv    *Server
	base   string
	cancel context.CancelFunc
	done   chan error
}

func startServer(t *testing.T, cfg ServerConfig, h fasthttp.RequestHandler) *testServer {
	t.Helper()
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	if cfg.Name == "" {
		cfg.Name = "test"
	}
	srv, err := Listen(cfg, h)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ts := &testServer{srv: srv, base: "http://" + srv.Addr(), cancel: cancel, done: make(chan error, 1)}
	go func() { ts.done <- srv.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-ts.done:
		case <-time.After(15 * time.Second):
			t.Error("server did not stop")
		}
	})
	return ts
}

func do(t *testing.T, method, url string, body []byte) (int, string, *fasthttp.ResponseHeader) {
	t.Helper()
	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.Header.SetMethod(method)
	req.SetRequestURI(url)
	if body != nil {
		req.SetBody(body)
	}
	if err := fasthttp.DoTimeout(req, resp, 5*time.Second); err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	var hdr fasthttp.ResponseHeader
	resp.Header.CopyTo(&hdr)
	return resp.StatusCode(), string(resp.Body()), &hdr
}

func TestServerEndpoints(t *testing.T) {
	reg := NewRegistry()
	reg.Counter("shake_test_total", "Test counter.", "result", "won").Add(7)
	var ready atomic.Bool
	ts := startServer(t, ServerConfig{
		Name:        "test",
		Common:      Common{AdminListen: "127.0.0.1:0"},
		Registry:    reg,
		Ready:       ready.Load,
		MaxBodySize: 1024,
		Logger:      NewLogger(&bytes.Buffer{}, "json", slog.LevelDebug),
	}, func(ctx *fasthttp.RequestCtx) {
		switch string(ctx.Path()) {
		case "/v1/echo":
			if !ctx.IsPost() {
				MethodNotAllowed(ctx, "POST")
				return
			}
			WriteJSON(ctx, 200, ctx.PostBody())
		case "/v1/panic":
			panic("boom")
		default:
			NotFound(ctx)
		}
	})

	type check struct {
		method, path string
		body         []byte
		status       int
		want         string
		ctype        string
	}
	checks := []check{
		{"GET", "/healthz", nil, 200, `{"status":"ok","role":"test"}`, "application/json"},
		{"GET", "/readyz", nil, 503, `{"status":"not_ready"}`, "application/json"},
		{"POST", "/healthz", nil, 405, `{"error":"method_not_allowed"}`, "application/json"},
		{"GET", "/metrics", nil, 404, `{"error":"not_found"}`, "application/json"},
		{"GET", "/admin/switches", nil, 404, `{"error":"not_found"}`, "application/json"},
		{"GET", "/debug/pprof/", nil, 404, `{"error":"not_found"}`, "application/json"},
		{"PUT", "/readyz", nil, 405, `{"error":"method_not_allowed"}`, "application/json"},
		{"GET", "/nope", nil, 404, `{"error":"not_found"}`, "application/json"},
		{"GET", "/v1/echo", nil, 405, `{"error":"method_not_allowed"}`, "application/json"},
		{"POST", "/v1/echo", []byte(`{"a":1}`), 200, `{"a":1}`, "application/json"},
		{"POST", "/v1/echo", bytes.Repeat([]byte("x"), 4096), 413, `{"error":"too_large"}`, "application/json"},
		{"GET", "/v1/panic", nil, 500, `{"error":"internal"}`, "application/json"},
	}
	for _, c := range checks {
		status, body, hdr := do(t, c.method, ts.base+c.path, c.body)
		if status != c.status || body != c.want {
			t.Errorf("%s %s = %d %s, want %d %s", c.method, c.path, status, body, c.status, c.want)
		}
		if ct := string(hdr.ContentType()); ct != c.ctype {
			t.Errorf("%s %s: Content-Type %q, want %q", c.method, c.path, ct, c.ctype)
		}
		if status == 405 && c.path == "/healthz" {
			if allow := string(hdr.Peek("Allow")); allow != "GET, HEAD" {
				t.Errorf("Allow = %q", allow)
			}
		}
		if srvName := string(hdr.Server()); srvName != "shake-test" {
			t.Errorf("Server header = %q", srvName)
		}
	}

	ready.Store(true)
	if status, body, _ := do(t, "GET", ts.base+"/readyz", nil); status != 200 || body != `{"status":"ready"}` {
		t.Errorf("readyz after ready = %d %s", status, body)
	}

	admin := "http://" + ts.srv.AdminAddr()
	if status, body, _ := do(t, "DELETE", admin+"/metrics", nil); status != 405 || body != `{"error":"method_not_allowed"}` {
		t.Errorf("DELETE admin /metrics = %d %s", status, body)
	}
	if status, _, _ := do(t, "GET", admin+"/debug/pprof/", nil); status != 401 {
		t.Errorf("admin /debug/pprof/ with no AdminAuth = %d, want 401", status)
	}
	for _, p := range []string{"/healthz", "/readyz"} {
		if status, _, _ := do(t, "GET", admin+p, nil); status != 200 {
			t.Errorf("admin %s = %d", p, status)
		}
	}
	if status, _, _ := do(t, "GET", admin+"/v1/echo", nil); status != 404 {
		t.Errorf("admin /v1/echo = %d, want 404 (the role's API is not on the admin listener)", status)
	}
	status, body, hdr := do(t, "GET", admin+"/metrics", nil)
	if status != 200 || !strings.Contains(body, "shake_test_total{result=\"won\"} 7\n") {
		t.Errorf("metrics = %d %s", status, body)
	}
	if ct := string(hdr.ContentType()); !strings.HasPrefix(ct, "text/plain; version=0.0.4") {
		t.Errorf("metrics Content-Type = %q", ct)
	}
}

// rawRequest sends raw bytes and returns the raw response.
func rawRequest(t *testing.T, addr, req string) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte(req)); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	tmp := make([]byte, 4096)
	for {
		n, err := c.Read(tmp)
		buf.Write(tmp[:n])
		if err != nil {
			break
		}
	}
	return buf.String()
}

func TestServerParseErrorsAreJSON(t *testing.T) {
	ts := startServer(t, ServerConfig{MaxBodySize: 16}, func(ctx *fasthttp.RequestCtx) { NotFound(ctx) })
	addr := ts.srv.Addr()

	resp := rawRequest(t, addr, "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\n")
	if !strings.HasPrefix(resp, "HTTP/1.1 413") || !strings.HasSuffix(resp, `{"error":"too_large"}`) ||
		!strings.Contains(resp, "Content-Type: application/json") {
		t.Errorf("oversized: %q", resp)
	}
	resp = rawRequest(t, addr, "GET /x HTTP/1.1\r\nHost: a\r\nContent-Length: nope\r\n\r\n")
	if !strings.HasPrefix(resp, "HTTP/1.1 400") || !strings.HasSuffix(resp, `{"error":"bad_request"}`) {
		t.Errorf("malformed: %q", resp)
	}
}

func TestServerReadTimeoutIsJSON(t *testing.T) {
	ts := startServer(t, ServerConfig{ReadTimeout: 200 * time.Millisecond}, func(ctx *fasthttp.RequestCtx) { NotFound(ctx) })
	// Headers complete, body promised but never sent: the read deadline expires.
	resp := rawRequest(t, ts.srv.Addr(), "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nab")
	if !strings.HasPrefix(resp, "HTTP/1.1 408") || !strings.HasSuffix(resp, `{"error":"timeout"}`) {
		t.Errorf("timeout: %q", resp)
	}
}

func TestServerGracefulShutdown(t *testing.T) {
	started := make(chan struct{})
	srv, err := Listen(ServerConfig{Name: "slow", Listen: "127.0.0.1:0", ShutdownTimeout: 5 * time.Second},
		func(ctx *fasthttp.RequestCtx) {
			close(started)
			time.Sleep(500 * time.Millisecond)
			WriteJSON(ctx, 200, []byte(`{"done":true}`))
		})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ctx) }()

	type result struct {
		status int
		body   string
		err    error
	}
	res := make(chan result, 1)
	go func() {
		req := fasthttp.AcquireRequest()
		resp := fasthttp.AcquireResponse()
		req.SetRequestURI("http://" + srv.Addr() + "/slow")
		err := fasthttp.DoTimeout(req, resp, 5*time.Second)
		res <- result{resp.StatusCode(), string(resp.Body()), err}
	}()
	<-started
	cancel()
	r := <-res
	if r.err != nil || r.status != 200 || r.body != `{"done":true}` {
		t.Fatalf("in-flight request: %d %q %v", r.status, r.body, r.err)
	}
	select {
	case err := <-serveErr:
		if err != nil {
			t.Fatalf("Serve returned %v, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return")
	}
	// The listener is closed: new connections are refused.
	if c, err := net.DialTimeout("tcp", srv.Addr(), time.Second); err == nil {
		c.Close()
		t.Fatal("listener still accepting after shutdown")
	}
}

func TestServeCancelledBeforeStart(t *testing.T) {
	srv, err := Listen(ServerConfig{Listen: "127.0.0.1:0"}, func(ctx *fasthttp.RequestCtx) {})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve with a cancelled context did not return")
	}
	if err := srv.Serve(context.Background()); err == nil {
		t.Fatal("second Serve should fail")
	}
}

func TestListenErrors(t *testing.T) {
	if _, err := Listen(ServerConfig{Name: "x"}, func(*fasthttp.RequestCtx) {}); err == nil {
		t.Fatal("empty listen address accepted")
	}
	if _, err := Listen(ServerConfig{Name: "x", Listen: "256.0.0.1:bad"}, func(*fasthttp.RequestCtx) {}); err == nil {
		t.Fatal("bad listen address accepted")
	}
}

func TestJSONHelpersZeroAllocs(t *testing.T) {
	var ctx fasthttp.RequestCtx
	body := []byte(`{"result":"miss"}`)
	WriteError(&ctx, 401, "unauthorized") // warm the response buffers
	MethodNotAllowed(&ctx, "POST")
	cases := map[string]func(){
		"WriteError":       func() { WriteError(&ctx, 401, "unauthorized") },
		"WriteJSON":        func() { WriteJSON(&ctx, 200, body) },
		"NotFound":         func() { NotFound(&ctx) },
		"MethodNotAllowed": func() { MethodNotAllowed(&ctx, "POST") },
	}
	for name, f := range cases {
		if n := testing.AllocsPerRun(1000, f); n != 0 {
			t.Errorf("%s: %v allocs", name, n)
		}
	}
	WriteError(&ctx, 400, "a\"b\\c\n")
	if got := string(ctx.Response.Body()); got != `{"error":"a\"b\\c\u000a"}` {
		t.Errorf("escaped error body = %s", got)
	}
	if ctx.Response.StatusCode() != 400 || string(ctx.Response.Header.ContentType()) != "application/json" {
		t.Errorf("status/content type: %d %s", ctx.Response.StatusCode(), ctx.Response.Header.ContentType())
	}
}

func TestHandlerPassThroughZeroAllocs(t *testing.T) {
	s := &Server{cfg: ServerConfig{Registry: NewRegistry()}, healthBody: []byte(`{"status":"ok","role":"edge"}`), h: func(ctx *fasthttp.RequestCtx) {
		WriteJSON(ctx, 200, bodyReady)
	}}
	var ctx fasthttp.RequestCtx
	ctx.Request.SetRequestURI("/v1/shake")
	ctx.Request.Header.SetMethod("POST")
	s.handle(&ctx)
	if n := testing.AllocsPerRun(1000, func() { s.handle(&ctx) }); n != 0 {
		t.Errorf("wrapper: %v allocs", n)
	}
	ctx.Request.SetRequestURI("/healthz")
	ctx.Request.Header.SetMethod("GET")
	s.handle(&ctx)
	if n := testing.AllocsPerRun(1000, func() { s.handle(&ctx) }); n != 0 {
		t.Errorf("healthz: %v allocs", n)
	}
}

func TestNewLogger(t *testing.T) {
	var buf bytes.Buffer
	NewLogger(&buf, "json", slog.LevelInfo).Info("hello", "k", 1)
	NewLogger(&buf, "json", slog.LevelInfo).Debug("hidden")
	if got := buf.String(); !strings.HasPrefix(got, "{") || !strings.Contains(got, `"msg":"hello"`) || strings.Contains(got, "hidden") {
		t.Errorf("json log: %s", got)
	}
	buf.Reset()
	NewLogger(&buf, "text", slog.LevelDebug).Debug("shown")
	if got := buf.String(); !strings.Contains(got, "msg=shown") {
		t.Errorf("text log: %s", got)
	}
}

func TestSignalContext(t *testing.T) {
	parent, cancelParent := context.WithCancel(context.Background())
	ctx, stop := SignalContext(parent)
	defer stop()
	cancelParent()
	select {
	case <-ctx.Done():
	case <-time.After(time.Second):
		t.Fatal("SignalContext not cancelled with its parent")
	}
}

func BenchmarkWriteError(b *testing.B) {
	var ctx fasthttp.RequestCtx
	b.ReportAllocs()
	for b.Loop() {
		WriteError(&ctx, 401, "unauthorized")
	}
}

// TestReadyzReason: a server with NotReady says why it is not ready.
func TestReadyzReason(t *testing.T) {
	var reason atomic.Value
	reason.Store("dlq_unwritable")
	ts := startServer(t, ServerConfig{NotReady: func() string { return reason.Load().(string) }}, NotFound)
	if status, body, _ := do(t, "GET", ts.base+"/readyz", nil); status != 503 || body != `{"status":"not_ready","reason":"dlq_unwritable"}` {
		t.Errorf("readyz = %d %s", status, body)
	}
	reason.Store("")
	if status, body, _ := do(t, "GET", ts.base+"/readyz", nil); status != 200 || body != `{"status":"ready"}` {
		t.Errorf("readyz when ready = %d %s", status, body)
	}
}
