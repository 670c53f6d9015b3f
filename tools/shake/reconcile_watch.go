package main

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"shake/internal/control"
	"shake/internal/obs"
	"shake/settler"
	"shake/settler/ledger"
	"shake/ticket"
)

// defaultReconcileListen is where `shake reconcile --watch` serves its metrics.
const defaultReconcileListen = "127.0.0.1:8084"

// reconcileWatch is the configuration of `shake reconcile --watch`.
type reconcileWatch struct {
	every     time.Duration
	listen    string
	adminKey  []byte // admin-query.key: /debug/pprof/ needs its token (nil: never served)
	manifest  *ticket.Manifest
	dir       string // the manifest's directory, where the shard files are
	ledgerURL string
	log       *slog.Logger
	stderr    io.Writer
}

// reconcileWatcher holds the latest result for the metrics.
type reconcileWatcher struct {
	cfg reconcileWatch
	reg *obs.Registry

	mu     sync.Mutex
	fields map[string]bool // gauges registered so far, by report field
	last   atomic.Pointer[map[string]float64]
	reason atomic.Pointer[string] // why the last attempt is not ok ("" when it is)
	ready  atomic.Bool            // a check completed (ok or not) and the last attempt did too

	lastRun                       *obs.Gauge
	runsOK, runsFailed, runsError *obs.Counter
	duration                      *obs.Histogram
}

// runReconcileWatch repeats the reconciliation every cfg.every until SIGTERM, logs each
// result and exports it on cfg.listen/metrics: the report's numbers as
// shake_reconcile_<field> gauges (whatever the one-shot check reports, so a field added
// to settler.Report is exported without touching this file), its booleans as 0/1
// (shake_reconcile_ok), shake_reconcile_last_run_timestamp_seconds,
// shake_reconcile_interval_seconds, shake_reconcile_runs_total{result} and
// shake_reconcile_duration_seconds. /readyz is 200 once a check completed and while the
// last attempt did. It exits 0 on SIGTERM, 2 when it cannot start.
func runReconcileWatch(cfg reconcileWatch) int {
	ctx, stop := obs.SignalContext(context.Background())
	defer stop()
	if err := ledger.CheckURL(cfg.ledgerURL); err != nil {
		return usageError(cfg.stderr, "reconcile: --ledger: %v", err)
	}

	w := &reconcileWatcher{cfg: cfg, reg: obs.NewRegistry(), fields: make(map[string]bool)}
	w.reason.Store(new(string))
	for _, r := range settler.ReconcileReasons {
		w.reg.GaugeFunc("shake_reconcile_problem", "1 for the reason the last reconciliation is not ok (see shake reconcile -h), 0 for the others.", func() float64 {
			if *w.reason.Load() == r {
				return 1
			}
			return 0
		}, "campaign", cfg.manifest.Campaign, "reason", r)
	}
	w.lastRun = w.reg.Gauge("shake_reconcile_last_run_timestamp_seconds", "Unix time of the last completed reconciliation (0: none yet).")
	const runsHelp = "Reconciliation attempts by result: ok, failed (the money does not reconcile), error (could not check)."
	w.runsOK = w.reg.Counter("shake_reconcile_runs_total", runsHelp, "result", "ok")
	w.runsFailed = w.reg.Counter("shake_reconcile_runs_total", runsHelp, "result", "failed")
	w.runsError = w.reg.Counter("shake_reconcile_runs_total", runsHelp, "result", "error")
	w.duration = w.reg.Histogram("shake_reconcile_duration_seconds", "How long one reconciliation took.", obs.LatencyBuckets)
	w.reg.GaugeFunc("shake_reconcile_interval_seconds", "The --watch interval: a last run older than a few of these is stale.",
		func() float64 { return cfg.every.Seconds() })

	// --listen is reconcile --watch's admin listener (like the settler's): it serves /metrics.
	srv, err := obs.Listen(obs.ServerConfig{Name: "reconcile", Listen: cfg.listen, Logger: cfg.log, Registry: w.reg, Ready: w.ready.Load, AdminOnly: true,
		Common: obs.Common{AdminAuth: control.TokenAuth(cfg.adminKey)}},
		func(c *fasthttp.RequestCtx) { obs.NotFound(c) })
	if err != nil {
		return usageError(cfg.stderr, "reconcile: --listen: %v", err)
	}
	srvDone := make(chan error, 1)
	sctx, stopSrv := context.WithCancel(context.Background())
	go func() { srvDone <- srv.Serve(sctx) }()
	cfg.log.Info("reconciling continuously", "campaign", cfg.manifest.Campaign, "every", cfg.every, "metrics", "http://"+srv.Addr()+"/metrics")

	tick := time.NewTicker(cfg.every)
	defer tick.Stop()
	for {
		w.once(ctx)
		select {
		case <-ctx.Done():
			stopSrv()
			if err := <-srvDone; err != nil {
				cfg.log.Error("http server", "err", err)
			}
			return 0
		case <-tick.C:
		}
	}
}

// once runs one reconciliation, bounded so that a hung ledger cannot stop the watch.
// It opens the ledger read-only each time (settler.ReconcileURL), so a ledger created or
// migrated after the watch started is seen, and nothing is ever written. An attempt
// that cannot check sets shake_reconcile_ok to 0 with reason cannot_check: what was not
// checked is not ok.
func (w *reconcileWatcher) once(ctx context.Context) {
	rctx, cancel := context.WithTimeout(ctx, max(w.cfg.every, 30*time.Second))
	defer cancel()
	start := time.Now()
	rep, err := settler.ReconcileURL(rctx, w.cfg.manifest, w.cfg.dir, w.cfg.ledgerURL)
	if err != nil {
		if ctx.Err() != nil {
			return // SIGTERM during the check: not a failure
		}
		w.runsError.Inc()
		w.ready.Store(false)
		w.notOK(settler.ReasonCannotCheck)
		w.cfg.log.Error("cannot reconcile", "campaign", w.cfg.manifest.Campaign, "reason", settler.ReasonCannotCheck, "err", err)
		return
	}
	w.duration.ObserveDuration(time.Since(start))
	vals, err := reportValues(rep)
	if err != nil {
		panic("BUG: reconcile report does not encode: " + err.Error())
	}
	w.publish(vals)
	w.reason.Store(&rep.Reason)
	w.lastRun.Set(time.Now().Unix())
	w.ready.Store(true)
	attrs := []any{"campaign", rep.Campaign, "ok", rep.OK, "settled_tickets", rep.SettledTickets,
		"settled_amount", rep.SettledAmount, "outstanding_amount", rep.OutstandingAmount, "took", time.Since(start).Round(time.Millisecond)}
	if rep.OK {
		w.runsOK.Inc()
		w.cfg.log.Info("reconciled", attrs...)
	} else {
		w.runsFailed.Inc()
		msg := "the money does not reconcile"
		if rep.Reason != settler.ReasonMoney {
			msg = "the ledger is not this campaign's to reconcile"
		}
		w.cfg.log.Error(msg, append(attrs, "reason", rep.Reason, "problems", rep.Problems)...)
	}
}

// notOK exports ok 0 with reason, keeping the other figures of the last completed check.
func (w *reconcileWatcher) notOK(reason string) {
	vals := map[string]float64{}
	if last := w.last.Load(); last != nil {
		for k, v := range *last {
			vals[k] = v
		}
	}
	vals["ok"] = 0
	w.publish(vals)
	w.reason.Store(&reason)
}

// reportValues turns the report's numeric and boolean fields into gauge values, by
// JSON name: whatever settler.Report carries, now or after it grows.
func reportValues(rep *settler.Report) (map[string]float64, error) {
	b, err := json.Marshal(rep)
	if err != nil {
		return nil, err
	}
	var raw map[string]any
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, err
	}
	vals := make(map[string]float64, len(raw))
	for k, v := range raw {
		switch v := v.(type) {
		case float64:
			vals[k] = v
		case bool:
			if k == "refund_posted" { // what this run did, not a state
				continue
			}
			vals[k] = 0
			if v {
				vals[k] = 1
			}
		}
	}
	return vals, nil
}

// publish makes vals the current result and registers a gauge for each new field.
func (w *reconcileWatcher) publish(vals map[string]float64) {
	w.last.Store(&vals)
	names := make([]string, 0, len(vals))
	for k := range vals {
		names = append(names, k)
	}
	sort.Strings(names)
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, k := range names {
		if w.fields[k] {
			continue
		}
		w.fields[k] = true
		w.reg.GaugeFunc(reconcileMetricName(k), "The last reconciliation's "+k+" (see shake reconcile -h).", func() float64 {
			return (*w.last.Load())[k]
		}, "campaign", w.cfg.manifest.Campaign)
	}
}

// reconcileMetricName is the gauge of a report field: shake_reconcile_<field>, except
// that a field ending in a suffix Prometheus reserves for histograms, summaries and
// counters (balance_sum) gets "_value" appended, so that linters and query builders do
// not take it for part of one.
func reconcileMetricName(field string) string {
	name := "shake_reconcile_" + field
	for _, suf := range []string{"_sum", "_count", "_bucket", "_total"} {
		if strings.HasSuffix(name, suf) {
			return name + "_value"
		}
	}
	return name
}
