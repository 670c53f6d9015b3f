package bench

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"

	"shake/bench/baseline"
	"shake/internal/obs"
)

// Baseline names, as --baseline takes them.
const (
	BaselineBare     = "bare"
	BaselineRedis    = "redis"
	BaselinePostgres = "postgres"
)

// DefaultRedisAddr is where the Redis baseline looks when SHAKE_TEST_REDIS is unset.
const DefaultRedisAddr = "127.0.0.1:6379"

// Baseline pool sizes for closed-loop runs (open-loop runs size the pool from the
// arrivals). When a pool runs dry its dispenser answers "miss", which the result shows.
const (
	closedLoopRedisTickets    = 1_000_000
	closedLoopPostgresTickets = 300_000
	maxBaselineTickets        = 5_000_000
)

// BaselineOptions selects and locates the baselines.
type BaselineOptions struct {
	// Kinds lists the baselines to run, in order: "bare", "redis", "postgres".
	Kinds []string
	// RedisAddr is host:port; empty means SHAKE_TEST_REDIS or DefaultRedisAddr.
	RedisAddr string
	// PostgresURL is a postgres:// URL; empty means SHAKE_TEST_POSTGRES. The postgres
	// baseline is skipped when neither is set.
	PostgresURL string
	// Tickets overrides the number of tickets the Redis and PostgreSQL pools hold.
	Tickets int
	// StoreConns is the number of connections a dispenser holds to its store
	// (default 16).
	StoreConns int
	// Log receives one line per baseline as it starts (nil: silent).
	Log io.Writer
	// BareURL, when set, is a bare baseline server already running in a process of its
	// own (shake baseline), measured instead of one started in this process. The edge
	// always runs in its own process, and a server that shares the client's runtime
	// answers measurably faster, so the fair ceiling is out of process too.
	BareURL string
}

// BaselineResult is one baseline's run, or why it was skipped.
type BaselineResult struct {
	Name string `json:"name"`
	// Skipped says why the baseline did not run (store unreachable); empty if it ran.
	Skipped string  `json:"skipped,omitempty"`
	Result  *Result `json:"result,omitempty"`
	// Tickets is the size of the store's pool (redis, postgres).
	Tickets int `json:"tickets,omitempty"`
}

// ParseBaselines splits a comma-separated --baseline value and checks every name.
func ParseBaselines(s string) ([]string, error) {
	var out []string
	seen := map[string]bool{}
	for _, k := range strings.Split(s, ",") {
		k = strings.TrimSpace(k)
		if k == "" {
			continue
		}
		switch k {
		case BaselineBare, BaselineRedis, BaselinePostgres:
		default:
			return nil, fmt.Errorf("%w: unknown baseline %q (want bare, redis or postgres)", ErrConfig, k)
		}
		if !seen[k] {
			seen[k] = true
			out = append(out, k)
		}
	}
	return out, nil
}

// RunBaselines runs the same load as cfg (same client, same shape, shakes only: there is
// no verifier behind a baseline) against each baseline in turn. A baseline whose store
// is unreachable is reported as skipped, with the reason; the error is returned only
// when ctx is cancelled.
func RunBaselines(ctx context.Context, cfg Config, opt BaselineOptions) ([]BaselineResult, error) {
	if opt.StoreConns <= 0 {
		opt.StoreConns = 16
	}
	var out []BaselineResult
	for _, kind := range opt.Kinds {
		if err := ctx.Err(); err != nil {
			return out, err
		}
		if opt.Log != nil {
			fmt.Fprintf(opt.Log, "baseline %s: starting\n", kind)
		}
		br := runBaseline(ctx, cfg, opt, kind)
		if br.Skipped != "" && opt.Log != nil {
			fmt.Fprintf(opt.Log, "baseline %s: skipped: %s\n", kind, br.Skipped)
		}
		out = append(out, br)
	}
	return out, ctx.Err()
}

func baselineTickets(cfg *Config, opt *BaselineOptions, closedLoopDefault int) int {
	if opt.Tickets > 0 {
		return min(opt.Tickets, maxBaselineTickets)
	}
	if cfg.Rate == 0 {
		return closedLoopDefault
	}
	// Every arrival may win (retries too): a pool that cannot run dry during the run.
	n := int(cfg.Rate*cfg.Duration.Seconds()*1.2) + 1000
	return min(n, maxBaselineTickets)
}

func runBaseline(ctx context.Context, cfg Config, opt BaselineOptions, kind string) BaselineResult {
	br := BaselineResult{Name: kind}
	var take takeFunc
	var cleanup func()
	switch kind {
	case BaselineBare:
		if opt.BareURL != "" {
			return runAgainst(ctx, cfg, br, opt.BareURL, func() {})
		}
		srv, err := obs.Listen(obs.ServerConfig{Name: "bare", Listen: "127.0.0.1:0"}, baseline.Handler)
		if err != nil {
			br.Skipped = err.Error()
			return br
		}
		sctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { srv.Serve(sctx); close(done) }()
		return runAgainst(ctx, cfg, br, "http://"+srv.Addr(), func() { cancel(); <-done })
	case BaselineRedis:
		addr := opt.RedisAddr
		if addr == "" {
			addr = os.Getenv("SHAKE_TEST_REDIS")
		}
		if addr == "" {
			addr = DefaultRedisAddr
		}
		addr = strings.TrimPrefix(addr, "redis://")
		if c, err := net.DialTimeout("tcp", addr, time.Second); err != nil {
			br.Skipped = fmt.Sprintf("Redis not reachable at %s (set SHAKE_TEST_REDIS): %v", addr, err)
			return br
		} else {
			c.Close()
		}
		br.Tickets = baselineTickets(&cfg, &opt, closedLoopRedisTickets)
		d, err := NewRedisDispenser(ctx, addr, br.Tickets, opt.StoreConns)
		if err != nil {
			br.Skipped = fmt.Sprintf("Redis at %s unusable: %v", addr, err)
			return br
		}
		take, cleanup = d.take, func() { d.Close() }
	case BaselinePostgres:
		url := opt.PostgresURL
		if url == "" {
			url = os.Getenv("SHAKE_TEST_POSTGRES")
		}
		if url == "" {
			br.Skipped = "PostgreSQL not configured (set SHAKE_TEST_POSTGRES or --postgres)"
			return br
		}
		br.Tickets = baselineTickets(&cfg, &opt, closedLoopPostgresTickets)
		d, err := NewPostgresDispenser(ctx, url, br.Tickets, opt.StoreConns)
		if err != nil {
			br.Skipped = fmt.Sprintf("PostgreSQL not reachable or unusable: %v", err)
			return br
		}
		take, cleanup = d.take, func() { d.Close() }
	default:
		br.Skipped = "unknown baseline"
		return br
	}
	sk, sealer, _, err := newBaselineKeys(cfg.SessionKey)
	if err != nil {
		cleanup()
		br.Skipped = err.Error()
		return br
	}
	url, stop, err := startDispenser(kind, &dispenser{sk: sk, sealer: sealer, take: take})
	if err != nil {
		cleanup()
		br.Skipped = err.Error()
		return br
	}
	return runAgainst(ctx, cfg, br, url, func() { stop(); cleanup() })
}

func runAgainst(ctx context.Context, cfg Config, br BaselineResult, url string, stop func()) BaselineResult {
	defer stop()
	cfg.Label = br.Name
	cfg.EdgeURLs = []string{url}
	cfg.VerifierURL = ""
	res, err := Run(ctx, cfg)
	if res == nil && err != nil {
		br.Skipped = err.Error()
		return br
	}
	br.Result = res
	return br
}
