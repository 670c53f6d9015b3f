package obs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// flakyListener fails its first n accepts with err, then accepts from the real one.
type flakyListener struct {
	net.Listener
	fails atomic.Int32
	err   error
}

func (f *flakyListener) Accept() (net.Conn, error) {
	if f.fails.Add(-1) >= 0 {
		return nil, f.err
	}
	return f.Listener.Accept()
}

// TestGuardedListenerRetriesTemporaryErrors: fasthttp ends Serve on an EMFILE from
// accept; the guard must retry it (and its relatives) and hand over the next connection.
func TestGuardedListenerRetriesTemporaryErrors(t *testing.T) {
	for _, errno := range []syscall.Errno{syscall.EMFILE, syscall.ENFILE, syscall.ECONNABORTED, syscall.ENOBUFS} {
		t.Run(errno.Error(), func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			fl := &flakyListener{Listener: ln, err: &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", errno)}}
			fl.fails.Store(5)
			var st listenerStats
			g := newGuardedListener(fl, "public", 10, 0, &st, slog.New(slog.DiscardHandler))
			var slept []time.Duration
			g.sleep = func(d time.Duration) { slept = append(slept, d) }
			go func() {
				if c, err := net.Dial("tcp", ln.Addr().String()); err == nil {
					defer c.Close()
					time.Sleep(time.Second)
				}
			}()
			c, err := g.Accept()
			if err != nil {
				t.Fatalf("Accept gave up on %v: %v", errno, err)
			}
			c.Close()
			if st.acceptErrors.Load() != 5 || len(slept) != 5 || slept[0] != acceptBackoffMin || slept[4] <= slept[0] {
				t.Errorf("errors %d, backoffs %v", st.acceptErrors.Load(), slept)
			}
		})
	}
}

// TestGuardedListenerPermanentErrors: a closed listener still ends Accept.
func TestGuardedListenerPermanentErrors(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	var st listenerStats
	g := newGuardedListener(ln, "public", 10, 0, &st, slog.New(slog.DiscardHandler))
	g.Close()
	if _, err := g.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept on a closed listener: %v", err)
	}
}

func TestAutoMaxConns(t *testing.T) {
	for _, c := range []struct {
		limit uint64
		want  int
	}{
		{0, maxAutoConns}, {128, 128 - 48 - adminMaxConns}, {1024, 1024 - 256 - adminMaxConns},
		{65536, 65536 - 16384 - adminMaxConns}, {50, 8}, {1 << 40, maxAutoConns},
	} {
		if got := AutoMaxConns(c.limit); got != c.want {
			t.Errorf("AutoMaxConns(%d) = %d, want %d", c.limit, got, c.want)
		}
	}
}

// TestServerConnectionCaps: connections beyond MaxConns or MaxConnsPerIP get a 503 and
// are closed, are counted, and the slots come back when connections close.
func TestServerConnectionCaps(t *testing.T) {
	reg := NewRegistry()
	for _, tc := range []struct {
		name   string
		common Common
		reason string
	}{
		{"max_conns", Common{AdminListen: "127.0.0.1:0", MaxConns: 5}, "max_conns"},
		{"per_ip", Common{AdminListen: "127.0.0.1:0", MaxConns: 100, MaxConnsPerIP: 5}, "per_ip"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg = NewRegistry()
			ts := startServer(t, ServerConfig{Common: tc.common, Registry: reg}, func(ctx *fasthttp.RequestCtx) { NotFound(ctx) })
			var held []net.Conn
			defer func() {
				for _, c := range held {
					c.Close()
				}
			}()
			for i := 0; i < 5; i++ {
				c, err := net.Dial("tcp", ts.srv.Addr())
				if err != nil {
					t.Fatal(err)
				}
				held = append(held, c)
			}
			// The sixth is refused with a 503 in JSON.
			resp := rawRequest(t, ts.srv.Addr(), "GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n")
			if !strings.HasPrefix(resp, "HTTP/1.1 503") || !strings.HasSuffix(resp, `{"error":"too_many_connections"}`) {
				t.Errorf("connection over the cap: %q", resp)
			}
			// The admin listener has its own budget.
			if status, _, _ := do(t, "GET", "http://"+ts.srv.AdminAddr()+"/healthz", nil); status != 200 {
				t.Errorf("admin /healthz while the public cap is full: %d", status)
			}
			_, metrics, _ := do(t, "GET", "http://"+ts.srv.AdminAddr()+"/metrics", nil)
			want := fmt.Sprintf(`shake_http_connections_refused_total{listener="public",reason="%s"} 1`, tc.reason)
			if !strings.Contains(metrics, want) || !strings.Contains(metrics, `shake_http_connections_open{listener="public"} 5`) {
				t.Errorf("metrics lack %s or 5 open:\n%s", want, metrics)
			}
			for _, c := range held {
				c.Close()
			}
			held = nil
			ok := false
			for deadline := time.Now().Add(5 * time.Second); !ok && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
				status, _, _ := doNoFatal("GET", ts.base+"/healthz")
				ok = status == 200
			}
			if !ok {
				t.Error("slots did not come back after the connections closed")
			}
		})
	}
}

func doNoFatal(method, url string) (int, string, error) {
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.Header.SetMethod(method)
	req.SetRequestURI(url)
	if err := fasthttp.DoTimeout(req, resp, 2*time.Second); err != nil {
		return 0, "", err
	}
	return resp.StatusCode(), string(resp.Body()), nil
}

// TestServerDrain: after the shutdown begins, /readyz answers 503 draining for Drain
// while requests are still served; then the server stops.
func TestServerDrain(t *testing.T) {
	srv, err := Listen(ServerConfig{Name: "test", Listen: "127.0.0.1:0", Common: Common{Drain: 600 * time.Millisecond, AdminListen: "127.0.0.1:0"}},
		func(ctx *fasthttp.RequestCtx) { WriteJSON(ctx, 200, []byte(`{"ok":true}`)) })
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	base := "http://" + srv.Addr()
	waitUp(t, base+"/healthz")
	cancel()
	stopAt := time.Now()
	time.Sleep(100 * time.Millisecond)
	for _, u := range []string{base + "/readyz", "http://" + srv.AdminAddr() + "/readyz"} {
		if status, body, err := doNoFatal("GET", u); status != 503 || body != `{"status":"draining"}` {
			t.Errorf("%s while draining: %d %s %v", u, status, body, err)
		}
	}
	if status, body, err := doNoFatal("GET", base+"/v1/x"); status != 200 {
		t.Errorf("request while draining: %d %s %v", status, body, err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
		if d := time.Since(stopAt); d < 600*time.Millisecond {
			t.Errorf("stopped %v after the signal, before the drain ended", d)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("did not stop")
	}
}

func waitUp(t *testing.T, url string) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if status, _, _ := doNoFatal("GET", url); status == 200 {
			return
		}
	}
	t.Fatalf("%s never answered", url)
}

func TestDefaultAdminListen(t *testing.T) {
	for in, want := range map[string]string{"127.0.0.1:8080": "127.0.0.1:9080", "0.0.0.0:8081": "127.0.0.1:9081", ":0": "127.0.0.1:0", "127.0.0.1:65000": ""} {
		got, err := DefaultAdminListen(in)
		if got != want || (want == "") != (err != nil) {
			t.Errorf("DefaultAdminListen(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}
