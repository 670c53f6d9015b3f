package fleet

import (
	"fmt"
	"io"
	"math"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"shake/ticket"
)

// Render writes f as text: a header line, one table per role, the servers that could
// not be read, and what is not ready and why.
func Render(w io.Writer, f *Frame) error {
	ready, notReady := 0, 0
	for _, r := range f.Rows {
		switch {
		case r.Err != nil:
		case r.Ready:
			ready++
		default:
			notReady++
		}
	}
	fmt.Fprintf(w, "shake top  %s UTC  %d servers: %d ready, %d not ready, %d unreachable  %s\n\n",
		f.At.UTC().Format("2006-01-02 15:04:05"), len(f.Rows), ready, notReady, f.Unreachable(), switchesSummary(f))
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	for _, role := range []string{"edge", "verifier", "settler", "query", "reconcile", "?"} {
		rows := f.byRole(role)
		if len(rows) == 0 {
			continue
		}
		renderRole(tw, role, rows)
		fmt.Fprintln(tw)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	var problems []string
	for _, r := range f.Rows {
		switch {
		case r.Err != nil:
			problems = append(problems, fmt.Sprintf("  %s UNREACHABLE: %v", hostOf(r.URL), r.Err))
		case !r.Ready:
			why := r.Reason
			if why == "" {
				why = r.ReadyStatus
			}
			problems = append(problems, fmt.Sprintf("  %s %s NOT READY: %s", hostOf(r.URL), r.Role, why))
		}
		if r.SwitchesErr != nil {
			problems = append(problems, fmt.Sprintf("  %s %s switches unreadable: %v", hostOf(r.URL), r.Role, r.SwitchesErr))
		}
	}
	if len(problems) > 0 {
		fmt.Fprintf(w, "attention:\n%s\n", strings.Join(problems, "\n"))
	} else {
		fmt.Fprintln(w, "every server reachable and ready")
	}
	return nil
}

// byRole returns the rows of role ("?" also takes the unreachable ones' unknown role).
func (f *Frame) byRole(role string) []Row {
	var out []Row
	for _, r := range f.Rows {
		rr := r.Role
		if r.Err != nil || rr == "" {
			rr = "?"
		}
		if rr == role {
			out = append(out, r)
		}
	}
	return out
}

// switchesSummary says whether every server runs the same switches version.
func switchesSummary(f *Frame) string {
	switch v := f.SwitchVersions(); len(v) {
	case 0:
		return "switches: none read"
	case 1:
		return "switches v" + v[0] + " on every server"
	default:
		return "SWITCHES DIFFER: versions " + strings.Join(v, ", ")
	}
}

func renderRole(tw io.Writer, role string, rows []Row) {
	switch role {
	case "edge":
		fmt.Fprintln(tw, "EDGE\tSTATE\tSHAKES/S\tP99\tWON\tMISS\tCLOSED\tRETRY\tOTHER\tTICKETS LEFT\tSWITCHES")
		for _, r := range rows {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", hostOf(r.URL), state(r), rate(r.Rate), latency(r.P99),
				count(r.Results, "won"), count(r.Results, "miss"), count(r.Results, "closed"), count(r.Results, "retry"),
				others(r.Results, "won", "miss", "closed", "retry"), left(r), edgeSwitches(r.Switches))
		}
	case "verifier":
		fmt.Fprintln(tw, "VERIFIER\tSTATE\tOPENS/S\tP99\tOPENED\tREFUSED\tKAFKA\tSPOOLED\tSWITCHES")
		for _, r := range rows {
			kafka := "down"
			if v, ok := r.Metrics.Get("shake_verifier_kafka_up"); ok && v == 1 {
				kafka = "up"
			}
			spool, _ := r.Metrics.Get("shake_verifier_spool_records")
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%.0f\t%s\n", hostOf(r.URL), state(r), rate(r.Rate), latency(r.P99),
				count(r.Results, "opened"), others(r.Results, "opened", "repeat"), kafka, spool, verifierSwitches(r.Switches))
		}
	case "settler":
		fmt.Fprintln(tw, "SETTLER\tSTATE\tPOSTED/S\tLAG P99\tKAFKA LAG\tPOSTED\tPOSTED AMOUNT\tDEAD-LETTERED\tSWITCHES")
		for _, r := range rows {
			amount, _ := r.Metrics.Get("shake_settler_posted_amount_total")
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", hostOf(r.URL), state(r), rate(r.Rate), latency(r.P99),
				num(r.KafkaLag), count(r.Results, "posted"), ticket.FormatAmount(int64(amount), ""),
				count(r.Results, "dead-lettered"), settlerSwitches(r.Switches))
		}
	case "query":
		fmt.Fprintln(tw, "QUERY\tSTATE\tREQUESTS/S\tP99")
		for _, r := range rows {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", hostOf(r.URL), state(r), rate(r.Rate), latency(r.P99))
		}
	case "reconcile":
		fmt.Fprintln(tw, "RECONCILE\tSTATE\tLAST RUN\tRESULT")
		for _, r := range rows {
			res := "not run yet"
			switch r.ReconcileOK {
			case 1:
				res = "ok: the money reconciles"
			case 0:
				res = "FAILED"
			}
			last := "never"
			if r.ReconcileAge > 0 {
				last = r.ReconcileAge.Round(time.Second).String() + " ago"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", hostOf(r.URL), state(r), last, res)
		}
	default:
		fmt.Fprintln(tw, "SERVER\tSTATE\tROLE")
		for _, r := range rows {
			fmt.Fprintf(tw, "%s\t%s\t%s\n", hostOf(r.URL), state(r), "unknown")
		}
	}
}

func state(r Row) string {
	switch {
	case r.Err != nil:
		return "UNREACHABLE"
	case r.Ready:
		return "ready"
	case r.ReadyStatus == "paused":
		return "PAUSED"
	}
	return "NOT READY"
}

func rate(v float64) string {
	if math.IsNaN(v) {
		return "-"
	}
	return fmt.Sprintf("%.0f", v)
}

func latency(sec float64) string {
	if math.IsNaN(sec) {
		return "-"
	}
	d := time.Duration(sec * float64(time.Second))
	if d < time.Millisecond {
		return d.Round(time.Microsecond).String()
	}
	return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond))
}

func num(v float64) string {
	if math.IsNaN(v) {
		return "-"
	}
	return fmt.Sprintf("%.0f", v)
}

func count(m map[string]float64, k string) string {
	if m == nil {
		return "-"
	}
	return fmt.Sprintf("%.0f", m[k])
}

// others lists the non-zero results not in skip, "-" when there is none.
func others(m map[string]float64, skip ...string) string {
	var parts []string
	for k, v := range m {
		if v != 0 && !contains(skip, k) {
			parts = append(parts, fmt.Sprintf("%s %.0f", k, v))
		}
	}
	if len(parts) == 0 {
		return "-"
	}
	sort.Strings(parts)
	return strings.Join(parts, ", ")
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

func left(r Row) string {
	if math.IsNaN(r.Left) {
		return "-"
	}
	if math.IsNaN(r.Shard) || r.Shard == 0 {
		return fmt.Sprintf("%.0f", r.Left)
	}
	return fmt.Sprintf("%.0f of %.0f (%.0f%%)", r.Left, r.Shard, 100*r.Left/r.Shard)
}

// edgeSwitches names the edge switches that differ from the defaults.
func edgeSwitches(s *ticket.Switches) string {
	if s == nil {
		return "?"
	}
	var on []string
	e := s.Edge
	if e.Paused {
		on = append(on, "PAUSED")
	}
	if len(e.ClosedRounds) > 0 {
		on = append(on, fmt.Sprintf("rounds %v closed", e.ClosedRounds))
	}
	if e.ShedRatio > 0 {
		on = append(on, fmt.Sprintf("SHED %.0f%%", 100*e.ShedRatio))
	}
	if e.PaceFactor != 1 {
		on = append(on, fmt.Sprintf("pace ×%.2f", e.PaceFactor))
	}
	if e.PerUser != nil {
		on = append(on, fmt.Sprintf("per_user %d", *e.PerUser))
	}
	return switchText(s.Version, on)
}

func verifierSwitches(s *ticket.Switches) string {
	if s == nil {
		return "?"
	}
	var on []string
	if s.Verifier.OpenPaused {
		on = append(on, "OPENS PAUSED")
	}
	if len(s.Verifier.RevokedShards) > 0 {
		on = append(on, fmt.Sprintf("shards %v revoked", s.Verifier.RevokedShards))
	}
	return switchText(s.Version, on)
}

func settlerSwitches(s *ticket.Switches) string {
	if s == nil {
		return "?"
	}
	var on []string
	if s.Settler.Paused {
		on = append(on, "PAUSED")
	}
	return switchText(s.Version, on)
}

func switchText(version uint64, on []string) string {
	if len(on) == 0 {
		return fmt.Sprintf("v%d, none", version)
	}
	return fmt.Sprintf("v%d: %s", version, strings.Join(on, ", "))
}
