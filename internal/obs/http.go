package obs

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime/debug"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
)

// Default limits used when a ServerConfig field is zero.
const (
	DefaultMaxBodySize     = 64 << 10
	DefaultReadTimeout     = 5 * time.Second
	DefaultWriteTimeout    = 5 * time.Second
	DefaultIdleTimeout     = 60 * time.Second
	DefaultShutdownTimeout = 10 * time.Second
)

// Common is the part of a server's configuration every server takes from the command
// line the same way: its admin listener, drain and connection limits. The roles pass it
// through to Listen unchanged.
type Common struct {
	// AdminListen is the admin listener's host:port, serving /metrics, /debug/pprof/,
	// /healthz, /readyz and /admin/... ("" = no admin listener; see DefaultAdminListen).
	AdminListen string
	// Admin serves every /admin/... path of the admin listener (nil: 404).
	Admin fasthttp.RequestHandler
	// AdminAuth must approve a /debug/pprof/ request (the role's admin token); nil
	// approves none. Profiles are expensive enough to be a denial of service, and
	// /debug/pprof/cmdline shows the command line.
	AdminAuth func(*fasthttp.RequestCtx) bool
	// Drain is how long /readyz answers 503 {"status":"draining"} after the shutdown
	// began while requests are still served, so that load balancers move away first.
	Drain time.Duration
	// MaxConns caps the public listener's open connections (0: derived from the
	// descriptor limit by AutoMaxConns). Connections beyond it get a 503 and are closed.
	MaxConns int
	// MaxConnsPerIP caps the open connections of one client IP address on the public
	// listener (0: no limit). Beyond it a connection gets a 503 and is closed.
	MaxConnsPerIP int
}

// ServerConfig configures a Server. Zero durations and sizes take the defaults above.
type ServerConfig struct {
	Name            string        // role name ("edge"), used in logs, /healthz's "role" and the Server header ("shake-edge")
	Listen          string        // host:port; port 0 picks a free port (see Server.Addr)
	MaxBodySize     int           // bytes; a larger request gets 413 {"error":"too_large"}
	ReadTimeout     time.Duration // default 5s
	WriteTimeout    time.Duration // default 5s
	IdleTimeout     time.Duration // keep-alive idle limit, default 60s
	Concurrency     int           // maximum concurrent connections (0 = the connection cap)
	ShutdownTimeout time.Duration // how long Serve waits for in-flight requests, default 10s
	Logger          *slog.Logger  // nil discards logs
	Registry        *Registry     // served on GET /metrics; nil serves an empty registry
	Ready           func() bool   // GET /readyz; nil means always ready
	// Status, when set, is asked first: a non-empty word answers 503 {"status":"<word>"}
	// (the settler's "paused"); "" goes on to NotReady and Ready.
	Status func() string
	// NotReady, when set, answers GET /readyz instead of Ready: "" is ready, anything
	// else is the reason in the 503's {"status":"not_ready","reason":"..."}.
	NotReady func() string
	// AdminOnly makes Listen itself an admin listener (the settler's --listen): it
	// serves the admin endpoints and nothing of the role's handler.
	AdminOnly bool
	Common
}

// DefaultAdminListen is the admin address docs/api.md gives a server whose public listener is
// listen: 127.0.0.1 and listen's port plus 1000 (port 0, any free port, stays 0).
func DefaultAdminListen(listen string) (string, error) {
	_, port, err := net.SplitHostPort(listen)
	if err != nil {
		return "", fmt.Errorf("listen address %q: %w", listen, err)
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 0 || p > 65535 {
		return "", fmt.Errorf("listen address %q: bad port", listen)
	}
	if p == 0 {
		return "127.0.0.1:0", nil
	}
	if p+1000 > 65535 {
		return "", fmt.Errorf("listen port %d: the default admin port %d does not exist, set --admin-listen", p, p+1000)
	}
	return "127.0.0.1:" + strconv.Itoa(p+1000), nil
}

// Server is a fasthttp server bound to its address, serving the health and readiness
// endpoints itself and everything else through the role's handler, with an optional
// admin listener beside it for metrics, profiles and switches.
type Server struct {
	cfg      ServerConfig
	pub      *listener
	adm      *listener // nil without an admin listener
	h        fasthttp.RequestHandler
	log      *slog.Logger
	served   atomic.Bool
	draining atomic.Bool
	// healthBody is the /healthz answer, naming the role: {"status":"ok","role":"edge"}
	// (shake ctl learns each server's role from it).
	healthBody []byte
}

// listener is one bound socket and the fasthttp server on it.
type listener struct {
	name  string
	ln    *guardedListener
	srv   *fasthttp.Server
	stats listenerStats
}

var (
	bodyReady     = []byte(`{"status":"ready"}`)
	bodyNotReady  = []byte(`{"status":"not_ready"}`)
	bodyDraining  = []byte(`{"status":"draining"}`)
	contentJSON   = []byte("application/json")
	contentMetric = []byte("text/plain; version=0.0.4; charset=utf-8")
)

// Listen validates cfg and binds the listening sockets now, so that the caller can read
// Addr and AdminAddr before calling Serve.
func Listen(cfg ServerConfig, h fasthttp.RequestHandler) (*Server, error) {
	if h == nil {
		panic("BUG: obs.Listen: nil handler")
	}
	if cfg.Name == "" {
		cfg.Name = "shake"
	}
	if cfg.Listen == "" {
		return nil, fmt.Errorf("%s: no listen address", cfg.Name)
	}
	if cfg.MaxBodySize <= 0 {
		cfg.MaxBodySize = DefaultMaxBodySize
	}
	if cfg.ReadTimeout <= 0 {
		cfg.ReadTimeout = DefaultReadTimeout
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = DefaultWriteTimeout
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = DefaultIdleTimeout
	}
	if cfg.ShutdownTimeout <= 0 {
		cfg.ShutdownTimeout = DefaultShutdownTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Registry == nil {
		cfg.Registry = NewRegistry()
	}
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = AutoMaxConns(FDLimit())
	}
	if cfg.MaxConnsPerIP < 0 {
		cfg.MaxConnsPerIP = 0
	}
	RegisterProcessMetrics(cfg.Registry)
	s := &Server{cfg: cfg, h: h, log: cfg.Logger.With("server", cfg.Name)}
	s.healthBody = appendJSONString([]byte(`{"status":"ok","role":"`), cfg.Name)
	s.healthBody = append(s.healthBody, `"}`...)
	pubHandler, pubName, pubMax := s.handle, "public", cfg.MaxConns
	if cfg.AdminOnly {
		pubHandler, pubName, pubMax = s.handleAdmin, "admin", max(cfg.MaxConns/8, adminMaxConns)
	}
	pubPerIP := cfg.MaxConnsPerIP
	if cfg.AdminOnly {
		pubPerIP = adminMaxConnsPerIP
	}
	var err error
	if s.pub, err = s.bind(pubName, cfg.Listen, pubHandler, pubMax, pubPerIP); err != nil {
		return nil, err
	}
	if cfg.AdminListen != "" && !cfg.AdminOnly {
		if s.adm, err = s.bind("admin", cfg.AdminListen, s.handleAdmin, adminMaxConns, adminMaxConnsPerIP); err != nil {
			s.pub.ln.Close()
			return nil, err
		}
	}
	return s, nil
}

// bind listens on addr and builds the fasthttp server of one listener.
func (s *Server) bind(name, addr string, h fasthttp.RequestHandler, maxConns, perIP int) (*listener, error) {
	cfg := &s.cfg
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%s: cannot listen on %s: %w", cfg.Name, addr, err)
	}
	l := &listener{name: name}
	l.ln = newGuardedListener(ln, name, maxConns, perIP, &l.stats, s.log)
	concurrency := cfg.Concurrency
	if concurrency <= 0 || concurrency < maxConns {
		// fasthttp holds a worker per open connection: its own cap must not refuse a
		// connection the listener has admitted.
		concurrency = maxConns + 1
	}
	readTimeout, idleTimeout := cfg.ReadTimeout, cfg.IdleTimeout
	if name == "admin" {
		// Short: an admin listener's few slots go back soon from a client that holds
		// connections without sending.
		readTimeout, idleTimeout = min(readTimeout, adminReadTimeout), min(idleTimeout, adminIdleTimeout)
	}
	l.srv = &fasthttp.Server{
		Handler:      h,
		ErrorHandler: errorHandler,
		Name:         "shake-" + cfg.Name,
		Concurrency:  concurrency,
		ReadTimeout:  readTimeout,
		WriteTimeout: cfg.WriteTimeout,
		IdleTimeout:  idleTimeout,
		// Bodies are bounded and read whole: the APIs take small JSON documents.
		MaxRequestBodySize:           cfg.MaxBodySize,
		DisablePreParseMultipartForm: true,
		// Every response sets its own Content-Type; a forgotten one must not pretend to
		// be text/plain. Date stays (RFC 9110 wants it, and fasthttp caches it).
		NoDefaultContentType:  true,
		NoDefaultServerHeader: false,
		NoDefaultDate:         false,
		ReduceMemoryUsage:     false,
		// Tell keep-alive clients to go elsewhere once we are draining.
		CloseOnShutdown: true,
		Logger:          fasthttpLogger{s.log},
	}
	r := cfg.Registry
	const lbl = "listener"
	st := &l.stats
	r.GaugeFunc("shake_http_connections_open", "Open connections by listener.", func() float64 { return float64(st.open.Load()) }, lbl, name)
	r.GaugeFunc("shake_http_connections_max", "The connection cap by listener (below the descriptor limit).", func() float64 { return float64(maxConns) }, lbl, name)
	r.CounterFunc("shake_http_connections_accepted_total", "Connections accepted by listener.", func() float64 { return float64(st.accepted.Load()) }, lbl, name)
	r.CounterFunc("shake_http_connections_refused_total", "Connections closed at once with a 503, by listener and cap.", func() float64 { return float64(st.refused.Load()) }, lbl, name, "reason", "max_conns")
	r.CounterFunc("shake_http_connections_refused_total", "Connections closed at once with a 503, by listener and cap.", func() float64 { return float64(st.refusedIP.Load()) }, lbl, name, "reason", "per_ip")
	r.CounterFunc("shake_http_accept_errors_total", "Temporary accept errors (out of descriptors, aborted handshakes) survived by retrying.", func() float64 { return float64(st.acceptErrors.Load()) }, lbl, name)
	return l, nil
}

// Addr returns the bound host:port of the public listener (the admin one for AdminOnly).
func (s *Server) Addr() string { return s.pub.ln.Addr().String() }

// AdminAddr returns the admin listener's host:port ("" without one).
func (s *Server) AdminAddr() string {
	if s.cfg.AdminOnly {
		return s.Addr()
	}
	if s.adm == nil {
		return ""
	}
	return s.adm.ln.Addr().String()
}

// Close releases the listening sockets of a server that will not be served.
func (s *Server) Close() error {
	err := s.pub.ln.Close()
	if s.adm != nil {
		err = errors.Join(err, s.adm.ln.Close())
	}
	return err
}

// Draining reports whether the shutdown has begun (/readyz answers 503).
func (s *Server) Draining() bool { return s.draining.Load() }

// Serve serves until ctx is cancelled, then shuts down gracefully: /readyz answers 503
// for Drain while requests are still served, then it stops accepting, waits up to
// ShutdownTimeout for in-flight requests, and returns nil on a clean shutdown. It
// returns an error if a listener fails or the shutdown times out.
func (s *Server) Serve(ctx context.Context) error {
	if !s.served.CompareAndSwap(false, true) {
		return fmt.Errorf("%s: Serve called twice", s.cfg.Name)
	}
	ls := []*listener{s.pub}
	if s.adm != nil {
		ls = append(ls, s.adm)
	}
	errc := make(chan error, len(ls))
	for _, l := range ls {
		go func() { errc <- l.srv.Serve(l.ln) }()
		msg := "listening"
		if l.name == "admin" {
			msg = "admin listening"
		}
		s.log.Info(msg, "addr", l.ln.Addr().String(), "max_conns", l.ln.maxConns, "max_conns_per_ip", l.ln.perIP, "fd_limit", FDLimit())
	}
	var failed error
	select {
	case err := <-errc:
		if err == nil {
			err = errors.New("listener closed")
		}
		failed = fmt.Errorf("%s: serve: %w", s.cfg.Name, err)
	case <-ctx.Done():
		s.draining.Store(true)
		if s.cfg.Drain > 0 {
			s.log.Info("draining: /readyz answers 503, requests are still served", "drain", s.cfg.Drain)
			select {
			case err := <-errc:
				failed = fmt.Errorf("%s: serve while draining: %w", s.cfg.Name, err)
			case <-time.After(s.cfg.Drain):
			}
		}
	}
	s.draining.Store(true)
	s.log.Info("shutting down", "timeout", s.cfg.ShutdownTimeout)
	sctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	defer cancel()
	var err error
	for _, l := range ls {
		if serr := l.srv.ShutdownWithContext(sctx); serr != nil && !errors.Is(serr, net.ErrClosed) {
			err = errors.Join(err, fmt.Errorf("%s: shutdown: %w", s.cfg.Name, serr))
		}
		// If the shutdown raced ahead of fasthttp registering the listener, closing it
		// here is what makes Serve return.
		_ = l.ln.Close()
	}
	for range ls {
		if failed != nil {
			break // one Serve already returned; the others return after Close
		}
		<-errc
	}
	if failed != nil {
		return failed
	}
	if err != nil {
		return err
	}
	s.log.Info("stopped")
	return nil
}

// handle serves a public listener: /healthz and /readyz here, the role's /v1/... API
// in h. The admin endpoints are never served on a public listener.
func (s *Server) handle(ctx *fasthttp.RequestCtx) {
	defer s.recoverPanic(ctx)
	path := ctx.Path()
	switch string(path) {
	case "/healthz", "/readyz":
		s.health(ctx, path)
		return
	case "/metrics":
		NotFound(ctx)
		return
	}
	if bytes.HasPrefix(path, prefixAdmin) || bytes.HasPrefix(path, prefixDebug) {
		NotFound(ctx)
		return
	}
	s.h(ctx)
}

var (
	prefixAdmin = []byte("/admin/")
	prefixDebug = []byte("/debug/")
	prefixPprof = []byte("/debug/pprof/")
)

// handleAdmin serves an admin listener: /healthz, /readyz, /metrics, /debug/pprof/ and
// /admin/... (through Common.Admin).
func (s *Server) handleAdmin(ctx *fasthttp.RequestCtx) {
	defer s.recoverPanic(ctx)
	path := ctx.Path()
	switch {
	case string(path) == "/healthz" || string(path) == "/readyz":
		s.health(ctx, path)
	case string(path) == "/metrics":
		if !ctx.IsGet() && !ctx.IsHead() {
			MethodNotAllowed(ctx, "GET, HEAD")
			return
		}
		ctx.SetStatusCode(fasthttp.StatusOK)
		ctx.Response.Header.SetContentTypeBytes(contentMetric)
		ctx.Response.ResetBody()
		if _, err := s.cfg.Registry.WriteTo(ctx); err != nil {
			WriteError(ctx, fasthttp.StatusInternalServerError, "internal")
		}
	case bytes.HasPrefix(path, prefixPprof):
		if s.cfg.AdminAuth == nil || !s.cfg.AdminAuth(ctx) {
			WriteError(ctx, fasthttp.StatusUnauthorized, "unauthorized")
			return
		}
		servePprof(ctx)
	case bytes.HasPrefix(path, prefixAdmin) && s.cfg.Admin != nil:
		s.cfg.Admin(ctx)
	default:
		NotFound(ctx)
	}
}

// health answers /healthz and /readyz.
func (s *Server) health(ctx *fasthttp.RequestCtx, path []byte) {
	if !ctx.IsGet() && !ctx.IsHead() {
		MethodNotAllowed(ctx, "GET, HEAD")
		return
	}
	if string(path) == "/healthz" {
		WriteJSON(ctx, fasthttp.StatusOK, s.healthBody)
		return
	}
	switch {
	case s.draining.Load():
		WriteJSON(ctx, fasthttp.StatusServiceUnavailable, bodyDraining)
	case s.cfg.Status != nil && s.cfg.Status() != "":
		var buf [64]byte
		b := append(buf[:0], `{"status":"`...)
		b = appendJSONString(b, s.cfg.Status())
		b = append(b, `"}`...)
		WriteJSON(ctx, fasthttp.StatusServiceUnavailable, b)
	case s.cfg.NotReady != nil:
		if reason := s.cfg.NotReady(); reason != "" {
			b, _ := json.Marshal(struct {
				Status string `json:"status"`
				Reason string `json:"reason"`
			}{"not_ready", reason})
			WriteJSON(ctx, fasthttp.StatusServiceUnavailable, b)
		} else {
			WriteJSON(ctx, fasthttp.StatusOK, bodyReady)
		}
	case s.cfg.Ready == nil || s.cfg.Ready():
		WriteJSON(ctx, fasthttp.StatusOK, bodyReady)
	default:
		WriteJSON(ctx, fasthttp.StatusServiceUnavailable, bodyNotReady)
	}
}

// recoverPanic turns a handler panic into a logged 500 so one bad request cannot take
// the whole server (and every user's in-flight request) down.
func (s *Server) recoverPanic(ctx *fasthttp.RequestCtx) {
	if v := recover(); v != nil {
		s.log.Error("handler panic", "path", string(ctx.Path()), "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
		ctx.Response.Reset()
		WriteError(ctx, fasthttp.StatusInternalServerError, "internal")
	}
}

// errorHandler answers requests fasthttp could not read or parse, in JSON.
func errorHandler(ctx *fasthttp.RequestCtx, err error) {
	var small *fasthttp.ErrSmallBuffer
	var nerr net.Error
	switch {
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		WriteError(ctx, fasthttp.StatusRequestEntityTooLarge, "too_large")
	case errors.As(err, &small):
		WriteError(ctx, fasthttp.StatusRequestHeaderFieldsTooLarge, "too_large")
	case errors.As(err, &nerr) && nerr.Timeout():
		WriteError(ctx, fasthttp.StatusRequestTimeout, "timeout")
	default:
		WriteError(ctx, fasthttp.StatusBadRequest, "bad_request")
	}
}

// fasthttpLogger routes fasthttp's own messages (accept errors, overload) to slog.
type fasthttpLogger struct{ l *slog.Logger }

func (f fasthttpLogger) Printf(format string, args ...any) {
	f.l.Warn(fmt.Sprintf(format, args...))
}

// WriteJSON sets the status, Content-Type: application/json and copies body into the
// response (so the caller may reuse body afterwards). It does not allocate.
func WriteJSON(ctx *fasthttp.RequestCtx, status int, body []byte) {
	ctx.SetStatusCode(status)
	ctx.Response.Header.SetContentTypeBytes(contentJSON)
	ctx.Response.SetBody(body)
}

// WriteError writes status and {"error":"<code>"}; code is JSON-escaped. It does not
// allocate for codes up to about 100 bytes.
func WriteError(ctx *fasthttp.RequestCtx, status int, code string) {
	var buf [128]byte
	b := append(buf[:0], `{"error":"`...)
	b = appendJSONString(b, code)
	b = append(b, `"}`...)
	WriteJSON(ctx, status, b)
}

// NotFound writes 404 {"error":"not_found"}.
func NotFound(ctx *fasthttp.RequestCtx) {
	WriteJSON(ctx, fasthttp.StatusNotFound, bodyNotFound)
}

// MethodNotAllowed writes 405 {"error":"method_not_allowed"} with the Allow header
// listing the permitted methods (for example "POST").
func MethodNotAllowed(ctx *fasthttp.RequestCtx, allow string) {
	ctx.Response.Header.Set(fasthttp.HeaderAllow, allow)
	WriteJSON(ctx, fasthttp.StatusMethodNotAllowed, bodyMethodNotAllowed)
}

var (
	bodyNotFound         = []byte(`{"error":"not_found"}`)
	bodyMethodNotAllowed = []byte(`{"error":"method_not_allowed"}`)
)

const hexDigits = "0123456789abcdef"

// appendJSONString appends s with the characters JSON requires escaped.
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c < 0x20:
			b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		default:
			b = append(b, c)
		}
	}
	return b
}
