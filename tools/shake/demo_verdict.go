package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"math"
	"strings"
	"time"

	"shake/bench"
	"shake/internal/control"
	"shake/internal/promscrape"
	"shake/settler"
	"shake/ticket"
)

// demoTargets are what the demo's verdict holds the users' experience to, besides the
// money: a demo whose money reconciles while shakes took 40 ms is not a good event.
type demoTargets struct {
	shakeP99  time.Duration
	openP99   time.Duration
	dropRate  float64
	settleLag time.Duration
}

// Defaults of the targets for the whole chain on one two-core machine: two edges, a
// verifier, a settler, the broker and the load generator share the two cores, so the
// user-facing p99 is not the per-server one (an edge's shake p99 alone stays under 5 ms
// and a verifier's open under 10 ms: shake bench and the Go benchmarks hold those). A run
// on an idle two-core machine measured shake p99 5.07 ms and open p99 19.6 ms with its
// money exact; the defaults leave room for that and still turn red on a chain that
// queues (a shake p99 of 40 ms, an open p99 of 100 ms). Nothing unanswered to speak of,
// claims in the ledger within seconds of being opened.
const (
	defaultMaxShakeP99  = 25 * time.Millisecond
	defaultMaxOpenP99   = 50 * time.Millisecond
	defaultMaxDropRate  = 0.001
	defaultMaxSettleLag = 5 * time.Second
)

func (t *demoTargets) addFlags(fs *flag.FlagSet) {
	fs.DurationVar(&t.shakeP99, "max-shake-p99", defaultMaxShakeP99, "verdict: the highest acceptable p99 of POST /v1/shake")
	fs.DurationVar(&t.openP99, "max-open-p99", defaultMaxOpenP99, "verdict: the highest acceptable p99 of POST /v1/open")
	fs.Float64Var(&t.dropRate, "max-drop-rate", defaultMaxDropRate, "verdict: the highest acceptable share of requests never answered (dropped, timed out, failed to connect), 0..1")
	fs.DurationVar(&t.settleLag, "max-settle-lag", defaultMaxSettleLag, "verdict: the highest acceptable p99 from a claim reaching Kafka to its posting committed in the ledger")
}

// check returns the first bad target's flag and why, or "".
func (t *demoTargets) check() string {
	switch {
	case t.shakeP99 <= 0:
		return "--max-shake-p99 must be positive"
	case t.openP99 <= 0:
		return "--max-open-p99 must be positive"
	case !(t.dropRate >= 0 && t.dropRate <= 1):
		return "--max-drop-rate must be in 0..1"
	case t.settleLag <= 0:
		return "--max-settle-lag must be positive"
	}
	return ""
}

// unanswered are the bench's error kinds for a request the user never got an answer
// to: "dropped" (the load generator's bound of requests in flight was full, because
// the servers answered too slowly, so the arrival was never sent), "queue_full" (an
// open or retry found the follow-up queue full), a timeout, a refused connection or a
// broken one.
var unanswered = []string{"dropped", "queue_full", "timeout", "connect", "transport"}

// dropRate returns the share of res's requests (shakes and opens) never answered.
func dropRate(res *bench.Result) (rate float64, lost, requests int64) {
	for _, ep := range []*bench.EndpointResult{&res.Shake, res.Open} {
		if ep == nil {
			continue
		}
		requests += ep.Requests
		for _, k := range unanswered {
			lost += ep.Errors[k]
		}
	}
	if requests == 0 {
		return 0, 0, 0
	}
	return float64(lost) / float64(requests), lost, requests
}

// latencyCheck compares an endpoint's p99 with its target; an endpoint that answered
// nothing cannot hold it.
func latencyCheck(name, flagName string, ep *bench.EndpointResult, limit time.Duration) bench.Check {
	c := bench.Check{Target: name, Threshold: "≤ " + limit.String(), Flag: flagName}
	if ep == nil || ep.Responses == 0 {
		c.Measured = "no answer"
		return c
	}
	c.Measured = fmtLatency(ep.Latency.P99)
	c.OK = ep.Latency.P99 <= limit
	return c
}

func fmtLatency(d time.Duration) string {
	switch {
	case d < time.Millisecond:
		return d.Round(time.Microsecond).String()
	case d >= time.Second:
		return fmt.Sprintf("%.2fs", d.Seconds())
	}
	return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond))
}

// scrapeSettleLag reads the p99 of shake_settler_claim_to_commit_seconds from the
// settler's admin listener, and how many claims it covers.
func scrapeSettleLag(ctx context.Context, admin string) (p99 time.Duration, claims float64, err error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	ss, err := promscrape.Scrape(ctx, scrapeClient, control.NormalizeServer(admin))
	if err != nil {
		return 0, 0, err
	}
	bs := ss.Buckets("shake_settler_claim_to_commit_seconds")
	q := promscrape.Quantile(0.99, bs)
	if math.IsNaN(q) {
		return 0, 0, fmt.Errorf("the settler has committed no claim")
	}
	return time.Duration(q * float64(time.Second)), bs[len(bs)-1].Count, nil
}

// verdict checks every target: the users' (latencies, answers), settlement's, and the
// money's (reconcile and the ticket-by-ticket cross-check).
func (d *demo) verdict(res *bench.Result, rep *settler.Report) []bench.Check {
	t := &d.cfg.targets
	checks := []bench.Check{
		latencyCheck("shake p99", "--max-shake-p99", &res.Shake, t.shakeP99),
		latencyCheck("open p99", "--max-open-p99", res.Open, t.openP99),
	}
	rate, lost, requests := dropRate(res)
	checks = append(checks, bench.Check{Target: "drop rate", Threshold: fmt.Sprintf("≤ %.2f%%", 100*t.dropRate),
		Measured: fmt.Sprintf("%.3f%% (%d of %d requests unanswered)", 100*rate, lost, requests),
		OK:       requests > 0 && rate <= t.dropRate, Flag: "--max-drop-rate"})
	lag := bench.Check{Target: "settlement lag p99", Threshold: "≤ " + t.settleLag.String(), Flag: "--max-settle-lag"}
	if d.settleLagErr != nil {
		lag.Measured = "not measured: " + d.settleLagErr.Error()
	} else {
		lag.Measured = fmt.Sprintf("%s over %.0f claims (then %.1fs to settle the last after the load)",
			fmtLatency(d.settleLag), d.settleLagClaims, d.summary.SettleWait)
		lag.OK = d.settleLag <= t.settleLag
	}
	cc := &d.summary.CrossCheck
	money := bench.Check{Target: "money", Threshold: "reconciles, every opened ticket posted once",
		OK: rep != nil && rep.OK && cc.ExactlyMatched}
	if rep != nil {
		money.Measured = fmt.Sprintf("%s settled of %s; %d of %d opened tickets matched the ledger",
			ticket.FormatAmount(rep.SettledAmount, rep.Currency), ticket.FormatAmount(rep.Budget, rep.Currency), cc.Checked-cc.Missing-cc.WrongAmount, cc.OpenedTickets)
		if !money.OK {
			money.Measured += "; " + strings.Join(append(append([]string(nil), rep.Problems...), crossCheckProblems(cc)...), "; ")
		}
	}
	return append(checks, lag, money)
}

func crossCheckProblems(cc *demoCrossCheck) []string {
	if cc.ExactlyMatched {
		return nil
	}
	return []string{fmt.Sprintf("cross-check: %d missing, %d wrong amount, %d posted but never opened", cc.Missing, cc.WrongAmount, cc.NotOpened)}
}

// writeVerdict prints the checks k6 style: a mark, the target, the measured value and
// the threshold.
func writeVerdict(w io.Writer, checks []bench.Check) {
	width := 0
	for _, c := range checks {
		width = max(width, len(c.Target))
	}
	fmt.Fprintln(w, "verdict:")
	for _, c := range checks {
		mark := "✓"
		if !c.OK {
			mark = "✗"
		}
		dots := strings.Repeat(".", width-len(c.Target)+3)
		fmt.Fprintf(w, "  %s %s %s %s  (target %s", mark, c.Target, dots, c.Measured, c.Threshold)
		if c.Flag != "" {
			fmt.Fprintf(w, ", %s", c.Flag)
		}
		fmt.Fprintln(w, ")")
	}
}

// failedTargets names the checks that failed.
func failedTargets(checks []bench.Check) []string {
	var names []string
	for _, c := range checks {
		if !c.OK {
			names = append(names, c.Target)
		}
	}
	return names
}

func okWord(ok bool) string {
	if ok {
		return "ok"
	}
	return "NOT OK"
}

// writeOutcome prints the demo's last line: OK, or FAILED with the targets missed.
func writeOutcome(w io.Writer, s *demoSummary) {
	switch missed := failedTargets(s.Targets); {
	case s.OK:
		fmt.Fprintf(w, "demo OK: the money reconciles and every target held, in %.1fs\n", s.TotalSeconds)
	case len(missed) > 0:
		fmt.Fprintf(w, "demo FAILED in %.1fs: missed %s\n", s.TotalSeconds, strings.Join(missed, ", "))
	default:
		fmt.Fprintf(w, "demo FAILED in %.1fs\n", s.TotalSeconds)
	}
}
