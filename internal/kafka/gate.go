package kafka

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"
	"time"

	"shake/internal/obs"
)

// Reasons a Gate gives while it is closed, as /readyz shows them.
const (
	GateUnchecked   = "topic_unchecked"   // the check has not run yet
	GateUnreachable = "kafka_unreachable" // no broker answered: the topic could not be checked
	GateAccess      = "kafka_refused"     // a broker refused this client (TLS, SASL, ACL)
	// GateRefusedPrefix, followed by the flag or configuration (--min-replication,
	// retention.ms, ...), is the reason of a topic the policy refuses.
	GateRefusedPrefix = "topic_refused:"
)

// GateFlags are the flags and configurations a refusal can name (one metric series each).
var GateFlags = []string{"--topic", "--min-replication", MinInsyncConfig, RetentionMsConfig, RetentionBytesConfig}

// GateConfig configures a Gate.
type GateConfig struct {
	Admin    *Admin
	Topic    string // the claims topic; its .dlq is checked too
	Policy   Policy
	Logger   *slog.Logger
	Registry *obs.Registry // shake_topic_check_ok and shake_topic_refused{flag}
	// Retry is the pause between checks while the topic is unreachable or refused
	// (default 500ms; a refusal waits ten of them: someone must change the topic).
	Retry time.Duration
}

// Gate holds a role back from writing claims to the topic (verifier) or consuming them
// (settler) until the claims topic has passed the policy. The start-up check may not
// have seen the topic (Kafka down at start); the gate checks it again as soon as Kafka
// answers, and keeps checking a refused topic until someone fixes it. Until it is open
// the role is not ready, with Reason saying why; a refusal is logged as an error.
type Gate struct {
	cfg     GateConfig
	reason  atomic.Pointer[string] // "" once open
	refused string                 // the flag of the current refusal (Run's goroutine only)
	flags   map[string]*obs.Gauge
}

// NewGate returns a closed gate (reason topic_unchecked) and registers its metrics.
func NewGate(cfg GateConfig) *Gate {
	if cfg.Retry <= 0 {
		cfg.Retry = 500 * time.Millisecond
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Registry == nil {
		cfg.Registry = obs.NewRegistry()
	}
	g := &Gate{cfg: cfg, flags: map[string]*obs.Gauge{}}
	g.set(GateUnchecked)
	cfg.Registry.GaugeFunc("shake_topic_check_ok", "1 once the claims topic passed the policy (replication, min.insync.replicas, retention), 0 until then.", func() float64 {
		if g.Open() {
			return 1
		}
		return 0
	})
	for _, f := range GateFlags {
		g.flags[f] = cfg.Registry.Gauge("shake_topic_refused", "1 while the claims topic is refused for this flag or configuration.", "flag", f)
	}
	return g
}

func (g *Gate) set(reason string) { g.reason.Store(&reason) }

// Open reports whether the topic passed the policy.
func (g *Gate) Open() bool { return *g.reason.Load() == "" }

// Reason is "" once the gate is open, else why not.
func (g *Gate) Reason() string { return *g.reason.Load() }

// Run checks the topic until it passes (and returns nil) or ctx ends (ctx.Err()).
func (g *Gate) Run(ctx context.Context) error {
	var lastErr string
	for {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		infos, err := g.cfg.Admin.CheckClaimsTopic(cctx, g.cfg.Topic, g.cfg.Policy)
		cancel()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		wait := g.cfg.Retry
		switch {
		case err == nil:
			g.refuse("")
			g.set("")
			for _, t := range infos {
				g.cfg.Logger.Info("topic checked", "topic", t.Name, "partitions", len(t.Partitions), "replication", t.Replication,
					"min_insync_replicas", t.MinInsync, "retention_ms", t.RetentionMs, "retention_bytes", t.RetentionBytes)
			}
			return nil
		case errors.Is(err, ErrUnreachable):
			g.set(GateUnreachable)
		case errors.Is(err, ErrRefused):
			flag := RefusedFlag(err)
			g.refuse(flag)
			g.set(GateRefusedPrefix + flag)
			wait *= 10
		default:
			g.set(GateAccess)
			wait *= 10
		}
		if msg := err.Error(); msg != lastErr && !errors.Is(err, ErrUnreachable) {
			g.cfg.Logger.Error("the claims topic is refused: nothing is written to it or consumed from it until it is fixed", "topic", g.cfg.Topic, "reason", g.Reason(), "err", msg)
			lastErr = msg
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
	}
}

// refuse sets the refusal gauges to flag alone ("" clears them).
func (g *Gate) refuse(flag string) {
	if g.refused != "" {
		g.flags[g.refused].Set(0)
	}
	g.refused = flag
	if gg := g.flags[flag]; gg != nil {
		gg.Set(1)
	}
}
