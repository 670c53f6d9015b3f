// Package query is the read-only server over the ledger (docs/api.md, "Query"): a
// user's settled red packets ("my red packets", GET /v1/packets, paged newest first
// with an opaque cursor) and a campaign's public page (GET /v1/campaigns/ID, totals and
// the ten largest packets with masked uids, cached for a second). It reads PostgreSQL
// (a read replica and a read-only role will do) or the embedded SQLite file, never
// writes, and never imports the settler: it reads the schema the ledger's migrations
// create, through its own statements.
package query

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"shake/internal/obs"
	"shake/ticket"
)

// Defaults for zero Config fields, and fixed limits.
const (
	DefaultListen      = "127.0.0.1:8083"
	DefaultDBConns     = 8
	DefaultMaxInFlight = 1024
	DefaultDBTimeout   = 2 * time.Second
	DefaultCacheTTL    = time.Second
	DefaultRetryAfter  = time.Second
	// PageSize is the most packets one /v1/packets page holds.
	PageSize = 50
	// MaxBodySize bounds a request body; the endpoints take none.
	MaxBodySize = 1 << 10
	// maxCachedCampaigns bounds the campaign page cache.
	maxCachedCampaigns = 4096
)

// Config configures New.
type Config struct {
	// Reader is the ledger; the server closes it in Run (or Close).
	Reader Reader
	// SessionKey is the 32-byte session.key shared with the login system.
	SessionKey []byte
	// MoreSessionKeys are further session keys accepted during a key rotation
	// (--session-key given more than once).
	MoreSessionKeys [][]byte
	// Listen is host:port, default DefaultListen (port 0 picks one).
	Listen string
	// HTTP is the admin listener (/metrics, /debug/pprof/) and connection limits,
	// passed to obs.Listen: /metrics is never served on the public listener.
	HTTP obs.Common
	// MaxInFlight bounds the requests served at once; beyond it the answer is an
	// immediate 503 with Retry-After. Default DefaultMaxInFlight.
	MaxInFlight int
	// DBTimeout bounds one request's wait for the ledger (a free connection included);
	// past it the answer is 503. Default DefaultDBTimeout.
	DBTimeout time.Duration
	// CacheTTL is how long a campaign page is served from memory, default 1 s.
	CacheTTL time.Duration
	// RetryAfter is the hint of a 503, default 1 s.
	RetryAfter time.Duration

	ReadTimeout, WriteTimeout, IdleTimeout, ShutdownTimeout time.Duration
	// Concurrency bounds the connections (0 = fasthttp's default).
	Concurrency int

	Logger   *slog.Logger
	Registry *obs.Registry
	// Now is the clock (session expiry, cache age), default time.Now.
	Now func() time.Time
}

// Server is a query server bound to its listen address.
type Server struct {
	cfg      Config
	rd       Reader
	sess     *ticket.SessionKey
	cursors  *cursorKey
	pages    *pageCache
	srv      *obs.Server
	log      *slog.Logger
	now      func() time.Time
	inflight atomic.Int64

	retryBody  []byte
	retryAfter string

	readyMu sync.Mutex
	readyAt time.Time
	readyOK bool

	m metrics
}

// ErrConfig reports an invalid Config.
var ErrConfig = errors.New("bad query configuration")

// New checks cfg and binds the listen address. Call Run to serve, or Close to release.
func New(cfg Config) (*Server, error) {
	if cfg.Reader == nil {
		return nil, fmt.Errorf("%w: no ledger reader", ErrConfig)
	}
	if cfg.Listen == "" {
		cfg.Listen = DefaultListen
	}
	if cfg.MaxInFlight <= 0 {
		cfg.MaxInFlight = DefaultMaxInFlight
	}
	if cfg.DBTimeout <= 0 {
		cfg.DBTimeout = DefaultDBTimeout
	}
	if cfg.CacheTTL <= 0 {
		cfg.CacheTTL = DefaultCacheTTL
	}
	if cfg.RetryAfter <= 0 {
		cfg.RetryAfter = DefaultRetryAfter
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Registry == nil {
		cfg.Registry = obs.NewRegistry()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	sk, err := ticket.NewSessionKeys(append([][]byte{cfg.SessionKey}, cfg.MoreSessionKeys...))
	if err != nil {
		return nil, fmt.Errorf("%w: session key: %v", ErrConfig, err)
	}
	s := &Server{cfg: cfg, rd: cfg.Reader, sess: sk, cursors: newCursorKey(cfg.SessionKey), log: cfg.Logger, now: cfg.Now}
	s.retryBody = fmt.Appendf(nil, `{"error":"unavailable","retry_after_ms":%d}`, cfg.RetryAfter.Milliseconds())
	s.retryAfter = fmt.Sprint(int((cfg.RetryAfter + time.Second - 1) / time.Second))
	s.pages = newPageCache(cfg.CacheTTL, maxCachedCampaigns, cfg.Now, s.loadCampaign)
	s.m = newMetrics(cfg.Registry)
	s.srv, err = obs.Listen(obs.ServerConfig{
		Name: "query", Listen: cfg.Listen, MaxBodySize: MaxBodySize,
		ReadTimeout: cfg.ReadTimeout, WriteTimeout: cfg.WriteTimeout, IdleTimeout: cfg.IdleTimeout,
		Concurrency: cfg.Concurrency, ShutdownTimeout: cfg.ShutdownTimeout,
		Logger: cfg.Logger, Registry: cfg.Registry, Ready: s.ready, Common: cfg.HTTP,
	}, s.handle)
	if err != nil {
		return nil, err
	}
	return s, nil
}

// Addr returns the bound host:port.
func (s *Server) Addr() string { return s.srv.Addr() }

// Handler returns the handler of the /v1 endpoints (Run's server adds /healthz,
// /readyz and /metrics).
func (s *Server) Handler() fasthttp.RequestHandler { return s.handle }

// Run serves until ctx is cancelled, then stops accepting, finishes in-flight requests
// and closes the ledger reader.
func (s *Server) Run(ctx context.Context) error {
	err := s.srv.Serve(ctx)
	if cerr := s.rd.Close(); err == nil {
		err = cerr
	}
	return err
}

// Close releases a server that was never Run.
func (s *Server) Close() error {
	s.srv.Close()
	return s.rd.Close()
}

// ready reports whether the ledger answers, asking it at most once a second so that
// probes cannot load it.
func (s *Server) ready() bool {
	s.readyMu.Lock()
	defer s.readyMu.Unlock()
	now := time.Now()
	if now.Sub(s.readyAt) < time.Second {
		return s.readyOK
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.DBTimeout)
	err := s.rd.Ping(ctx)
	cancel()
	if err != nil && s.readyOK {
		s.log.Warn("ledger unreachable", "err", err)
	}
	s.readyAt, s.readyOK = time.Now(), err == nil
	return s.readyOK
}

// metrics are the server's counters, by endpoint and result.
type metrics struct {
	packets   [numResults]*obs.Counter
	campaigns [numResults]*obs.Counter
	other     *obs.Counter
	hits      *obs.Counter
	loads     *obs.Counter
	dbErrors  *obs.Counter
	latency   *obs.Histogram
	dbLatency *obs.Histogram
}

func newMetrics(r *obs.Registry) metrics {
	var m metrics
	for i := range m.packets {
		m.packets[i] = r.Counter("shake_query_requests_total", "Query requests by endpoint and result.", "endpoint", "packets", "result", resultNames[i])
		m.campaigns[i] = r.Counter("shake_query_requests_total", "Query requests by endpoint and result.", "endpoint", "campaign", "result", resultNames[i])
	}
	m.other = r.Counter("shake_query_requests_total", "Query requests by endpoint and result.", "endpoint", "other", "result", "not_found")
	m.hits = r.Counter("shake_query_campaign_cache_hits_total", "Campaign pages answered from the one-second cache (or a load in flight).")
	m.loads = r.Counter("shake_query_campaign_loads_total", "Campaign pages loaded from the ledger.")
	m.dbErrors = r.Counter("shake_query_ledger_errors_total", "Ledger reads that failed or timed out (answered 503).")
	m.latency = r.Histogram("shake_query_request_seconds", "Latency of /v1/packets and /v1/campaigns/ID.", obs.LatencyBuckets)
	m.dbLatency = r.Histogram("shake_query_ledger_seconds", "Latency of one ledger read.", obs.LatencyBuckets)
	return m
}
