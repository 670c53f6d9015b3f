package obs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime/debug"
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

// ServerConfig configures a Server. Zero durations and sizes take the defaults above.
type ServerConfig struct {
	Name            string        // role name ("edge"), used in logs and the Server header ("shake-edge")
	Listen          string        // host:port; port 0 picks a free port (see Server.Addr)
	MaxBodySize     int           // bytes; a larger request gets 413 {"error":"too_large"}
	ReadTimeout     time.Duration // default 5s
	WriteTimeout    time.Duration // default 5s
	IdleTimeout     time.Duration // keep-alive idle limit, default 60s
	Concurrency     int           // maximum concurrent connections (0 = fasthttp default)
	ShutdownTimeout time.Duration // how long Serve waits for in-flight requests, default 10s
	Logger          *slog.Logger  // nil discards logs
	Registry        *Registry     // served on GET /metrics; nil serves an empty registry
	Ready           func() bool   // GET /readyz; nil means always ready
	// NotReady, when set, answers GET /readyz instead of Ready: "" is ready, anything
	// else is the reason in the 503's {"status":"not_ready","reason":"..."}.
	NotReady func() string
}

// Server is a fasthttp server bound to its address, serving the health, readiness and
// metrics endpoints itself and everything else through the role's handler.
type Server struct {
	cfg    ServerConfig
	ln     net.Listener
	srv    *fasthttp.Server
	h      fasthttp.RequestHandler
	log    *slog.Logger
	served atomic.Bool
}

var (
	bodyHealthOK  = []byte(`{"status":"ok"}`)
	bodyReady     = []byte(`{"status":"ready"}`)
	bodyNotReady  = []byte(`{"status":"not_ready"}`)
	contentJSON   = []byte("application/json")
	contentMetric = []byte("text/plain; version=0.0.4; charset=utf-8")
)

// Listen validates cfg and binds the listening socket now, so that the caller can read
// Addr before calling Serve.
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
	RegisterProcessMetrics(cfg.Registry)
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("%s: cannot listen on %s: %w", cfg.Name, cfg.Listen, err)
	}
	s := &Server{cfg: cfg, ln: ln, h: h, log: cfg.Logger.With("server", cfg.Name)}
	s.srv = &fasthttp.Server{
		Handler:      s.handle,
		ErrorHandler: errorHandler,
		Name:         "shake-" + cfg.Name,
		Concurrency:  cfg.Concurrency,
		ReadTimeout:  cfg.ReadTimeout,
		WriteTimeout: cfg.WriteTimeout,
		IdleTimeout:  cfg.IdleTimeout,
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
	return s, nil
}

// Addr returns the bound host:port.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Close releases the listening socket of a server that will not be served.
func (s *Server) Close() error { return s.ln.Close() }

// Serve serves until ctx is cancelled, then shuts down gracefully: it stops accepting,
// waits up to ShutdownTimeout for in-flight requests, and returns nil on a clean
// shutdown. It returns an error if the listener fails or the shutdown times out.
func (s *Server) Serve(ctx context.Context) error {
	if !s.served.CompareAndSwap(false, true) {
		return fmt.Errorf("%s: Serve called twice", s.cfg.Name)
	}
	errc := make(chan error, 1)
	go func() { errc <- s.srv.Serve(s.ln) }()
	s.log.Info("listening", "addr", s.Addr())
	select {
	case err := <-errc:
		_ = s.ln.Close()
		if err == nil {
			err = errors.New("listener closed")
		}
		return fmt.Errorf("%s: serve %s: %w", s.cfg.Name, s.Addr(), err)
	case <-ctx.Done():
	}
	s.log.Info("shutting down", "timeout", s.cfg.ShutdownTimeout)
	sctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	defer cancel()
	err := s.srv.ShutdownWithContext(sctx)
	// If the shutdown raced ahead of fasthttp registering the listener, closing it here
	// is what makes Serve return.
	_ = s.ln.Close()
	<-errc
	if err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("%s: shutdown: %w", s.cfg.Name, err)
	}
	s.log.Info("stopped")
	return nil
}

// handle serves /healthz, /readyz and /metrics and passes everything else to the role.
func (s *Server) handle(ctx *fasthttp.RequestCtx) {
	defer s.recoverPanic(ctx)
	path := ctx.Path()
	switch string(path) {
	case "/healthz", "/readyz", "/metrics":
	default:
		s.h(ctx)
		return
	}
	if !ctx.IsGet() && !ctx.IsHead() {
		MethodNotAllowed(ctx, "GET, HEAD")
		return
	}
	switch string(path) {
	case "/healthz":
		WriteJSON(ctx, fasthttp.StatusOK, bodyHealthOK)
	case "/readyz":
		if s.cfg.NotReady != nil {
			if reason := s.cfg.NotReady(); reason != "" {
				b, _ := json.Marshal(struct {
					Status string `json:"status"`
					Reason string `json:"reason"`
				}{"not_ready", reason})
				WriteJSON(ctx, fasthttp.StatusServiceUnavailable, b)
			} else {
				WriteJSON(ctx, fasthttp.StatusOK, bodyReady)
			}
		} else if s.cfg.Ready == nil || s.cfg.Ready() {
			WriteJSON(ctx, fasthttp.StatusOK, bodyReady)
		} else {
			WriteJSON(ctx, fasthttp.StatusServiceUnavailable, bodyNotReady)
		}
	default:
		ctx.SetStatusCode(fasthttp.StatusOK)
		ctx.Response.Header.SetContentTypeBytes(contentMetric)
		ctx.Response.ResetBody()
		if _, err := s.cfg.Registry.WriteTo(ctx); err != nil {
			WriteError(ctx, fasthttp.StatusInternalServerError, "internal")
		}
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
