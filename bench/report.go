package bench

import (
	"fmt"
	"html"
	"io"
	"math"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"shake/ticket"
)

// Ratio returns the main run's shake throughput divided by the baseline's (0 when either
// is missing): above 1, shake served more shakes per second than the baseline.
func (b *BaselineResult) Ratio(main *Result) float64 {
	if b.Result == nil || main == nil || b.Result.Shake.Throughput == 0 {
		return 0
	}
	return main.Shake.Throughput / b.Result.Shake.Throughput
}

func fmtDur(d time.Duration) string {
	switch {
	case d == 0:
		return "0"
	case d < time.Millisecond:
		return fmt.Sprintf("%dµs", d/time.Microsecond)
	case d < time.Second:
		return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond))
	}
	return fmt.Sprintf("%.2fs", d.Seconds())
}

func sortedKeys(m map[string]int64) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func fmtCounts(m map[string]int64) string {
	if len(m) == 0 {
		return "-"
	}
	var parts []string
	for _, k := range sortedKeys(m) {
		parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
	}
	return strings.Join(parts, ", ")
}

// WriteText writes a readable summary of res (and its baselines) to w.
func WriteText(w io.Writer, res *Result) error {
	fmt.Fprintf(w, "shake bench: %s", res.Mode)
	if res.Rate > 0 {
		fmt.Fprintf(w, " at %.0f shakes/s", res.Rate)
		if res.Ramp > 0 {
			fmt.Fprintf(w, " (ramp %v)", res.Ramp)
		}
	} else {
		fmt.Fprintf(w, " with %d clients", res.Connections)
	}
	fmt.Fprintf(w, " for %v, %d users, think %v; took %v", res.Duration, res.Users, res.Think, res.Elapsed.Round(time.Millisecond))
	if res.Interrupted {
		fmt.Fprint(w, " (INTERRUPTED)")
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "endpoint\trequests\tresponses\tthroughput/s\tp50\tp90\tp99\tp99.9\tmax")
	for _, ep := range res.Endpoints() {
		l := ep.Latency
		fmt.Fprintf(tw, "%s\t%d\t%d\t%.0f\t%s\t%s\t%s\t%s\t%s\n", ep.Name, ep.Requests, ep.Responses, ep.Throughput,
			fmtDur(l.P50), fmtDur(l.P90), fmtDur(l.P99), fmtDur(l.P999), fmtDur(l.Max))
	}
	tw.Flush()
	for _, ep := range res.Endpoints() {
		fmt.Fprintf(w, "%s results: %s\n", ep.Name, fmtCounts(ep.Results))
		fmt.Fprintf(w, "%s errors:  %s\n", ep.Name, fmtCounts(ep.Errors))
		fmt.Fprintf(w, "%s status:  %s\n", ep.Name, fmtCounts(ep.Status))
	}
	if res.Open != nil {
		fmt.Fprintf(w, "opened %d tickets, amount %d", res.OpenedN, res.OpenedSum)
		if res.Campaign != "" {
			fmt.Fprintf(w, " (campaign %s)", res.Campaign)
		}
		if res.OpenedTruncated {
			fmt.Fprintf(w, "; ticket list truncated to %d", len(res.Opened))
		}
		fmt.Fprintln(w)
	}
	writeFarmText(w, res.Farm)
	if len(res.Baselines) > 0 {
		fmt.Fprintln(w, "\nbaselines (same client, same load shape, shakes only):")
		tw = tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
		fmt.Fprintln(tw, "target\tthroughput/s\tp50\tp99\tp99.9\terrors\tshake ÷ target")
		fmt.Fprintf(tw, "shake\t%.0f\t%s\t%s\t%s\t%d\t1.00\n", res.Shake.Throughput, fmtDur(res.Shake.Latency.P50),
			fmtDur(res.Shake.Latency.P99), fmtDur(res.Shake.Latency.P999), res.Shake.ErrorCount())
		for i := range res.Baselines {
			b := &res.Baselines[i]
			if b.Result == nil {
				fmt.Fprintf(tw, "%s\tskipped: %s\n", b.Name, b.Skipped)
				continue
			}
			s := &b.Result.Shake
			fmt.Fprintf(tw, "%s\t%.0f\t%s\t%s\t%s\t%d\t%.2f\n", b.Name, s.Throughput, fmtDur(s.Latency.P50),
				fmtDur(s.Latency.P99), fmtDur(s.Latency.P999), s.ErrorCount(), b.Ratio(res))
		}
		tw.Flush()
	}
	return nil
}

// chartSeries is one line of a chart.
type chartSeries struct {
	name  string
	color string
	pts   []float64 // one value per second, or at xs when set
	xs    []float64 // seconds since the chart's start, one per point (nil: 0, 1, 2...)
}

var palette = []string{"#d62728", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#17becf"}

const (
	chartW, chartH             = 720, 270
	padL, padR, padT, padB     = 72, 16, 28, 42
	plotW, plotH               = chartW - padL - padR, chartH - padT - padB
	svgOpen                    = `<svg viewBox="0 0 %d %d" role="img" aria-label="%s">`
	axisStyle                  = `stroke="#888" stroke-width="1"`
	latencyQuantileCategoryLen = 5
)

func esc(s string) string { return html.EscapeString(s) }

// niceMax rounds v up to 1, 2 or 5 times a power of ten.
func niceMax(v float64) float64 {
	if v <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if v <= m*p {
			return m * p
		}
	}
	return 10 * p
}

func fmtNum(v float64) string {
	switch {
	case v >= 1e6:
		return fmt.Sprintf("%.1fM", v/1e6)
	case v >= 1e4:
		return fmt.Sprintf("%.0fk", v/1e3)
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	}
	return strings.TrimRight(strings.TrimRight(fmt.Sprintf("%.2f", v), "0"), ".")
}

// latencyChart renders grouped bars (p50 ... max) per target on a log scale, because
// the max is often orders of magnitude above the median.
func latencyChart(b *strings.Builder, names []string, lats []Latency) {
	const title = "Latency percentiles (log scale, from intended send time)"
	fmt.Fprintf(b, svgOpen, chartW, chartH, esc(title))
	fmt.Fprintf(b, `<text x="%d" y="16" font-weight="bold">%s</text>`, padL, esc(title))
	// The scale starts at the decade below the smallest bar, not at 1 µs: on a log
	// scale, empty decades under the data flatten every difference that matters.
	lo, hi := math.Inf(1), 10.0 // µs
	for _, l := range lats {
		hi = math.Max(hi, float64(l.Max/time.Microsecond))
		if l.P50 > 0 {
			lo = math.Min(lo, float64(l.P50/time.Microsecond))
		}
	}
	hi = math.Pow(10, math.Ceil(math.Log10(hi)))
	lo = math.Pow(10, math.Floor(math.Log10(math.Max(math.Min(lo, hi/10), 1))))
	ylog := func(us float64) float64 {
		us = math.Max(us, lo)
		return float64(padT+plotH) - float64(plotH)*math.Log10(us/lo)/math.Log10(hi/lo)
	}
	for d := lo; d <= hi; d *= 10 {
		y := ylog(d)
		fmt.Fprintf(b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#eee"/>`, padL, y, padL+plotW, y)
		fmt.Fprintf(b, `<text x="%d" y="%.1f" text-anchor="end" font-size="11">%s</text>`, padL-4, y+4, esc((time.Duration(d) * time.Microsecond).String()))
	}
	cats := []string{"p50", "p90", "p99", "p99.9", "max"}
	groupW := float64(plotW) / float64(len(cats))
	barW := (groupW - 12) / float64(max(len(names), 1))
	for ci, c := range cats {
		gx := float64(padL) + groupW*float64(ci)
		fmt.Fprintf(b, `<text x="%.1f" y="%d" text-anchor="middle" font-size="11">%s</text>`, gx+groupW/2, chartH-18, c)
		for k, l := range lats {
			v := []time.Duration{l.P50, l.P90, l.P99, l.P999, l.Max}[ci]
			y := ylog(float64(v / time.Microsecond))
			fmt.Fprintf(b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"><title>%s %s %s</title></rect>`,
				gx+6+barW*float64(k), y, math.Max(barW-1, 1), float64(padT+plotH)-y, palette[k%len(palette)], esc(names[k]), c, esc(fmtDur(v)))
		}
	}
	for k, n := range names {
		fmt.Fprintf(b, `<rect x="%d" y="%d" width="10" height="10" fill="%s"/><text x="%d" y="%d" font-size="11">%s</text>`,
			padL+4+130*k, chartH-12, palette[k%len(palette)], padL+18+130*k, chartH-2, esc(n))
	}
	b.WriteString(`</svg>`)
}

// mixChart renders one stacked horizontal bar per endpoint: its results and errors.
func mixChart(b *strings.Builder, eps []*EndpointResult) {
	const title = "Result mix"
	h := padT + 50*len(eps) + 20
	fmt.Fprintf(b, svgOpen, chartW, h, esc(title))
	fmt.Fprintf(b, `<text x="%d" y="16" font-weight="bold">%s</text>`, padL, esc(title))
	colors := map[string]string{"won": "#2ca02c", "opened": "#2ca02c", "miss": "#9e9e9e", "closed": "#8c564b", "retry": "#ff7f0e"}
	for i, ep := range eps {
		type part struct {
			name string
			n    int64
		}
		var parts []part
		var total int64
		for _, k := range []string{"won", "opened", "miss", "closed", "retry"} {
			if v := ep.Results[k]; v > 0 {
				parts = append(parts, part{k, v})
				total += v
			}
		}
		for _, k := range sortedKeys(ep.Errors) {
			parts = append(parts, part{"error: " + k, ep.Errors[k]})
			total += ep.Errors[k]
		}
		y := padT + 50*i
		x := float64(padL)
		for _, p := range parts {
			w := float64(plotW) * float64(p.n) / float64(max(total, 1))
			c, ok := colors[p.name]
			if !ok {
				c = "#d62728"
			}
			pct := 100 * float64(p.n) / float64(max(total, 1))
			fmt.Fprintf(b, `<rect x="%.1f" y="%d" width="%.1f" height="24" fill="%s" stroke="#fff"><title>%s: %d (%.1f%%)</title></rect>`,
				x, y, w, c, esc(p.name), p.n, pct)
			if w > 70 {
				fmt.Fprintf(b, `<text x="%.1f" y="%d" font-size="11" fill="#fff">%s %.0f%%</text>`, x+4, y+16, esc(p.name), pct)
			}
			x += w
		}
		fmt.Fprintf(b, `<text x="%d" y="%d" font-size="11"><tspan font-weight="bold">%s</tspan>: %d answers and errors</text>`, padL, y+38, esc(endpointTitle(ep.Name)), total)
	}
	b.WriteString(`</svg>`)
}

// writeChecks renders a verdict's checks as a table, red when any failed.
func writeChecks(b *strings.Builder, checks []Check) {
	if len(checks) == 0 {
		return
	}
	cls := "pass"
	for _, c := range checks {
		if !c.OK {
			cls = "fail"
		}
	}
	fmt.Fprintf(b, `<table class="verdict %s" style="text-align:left"><tr><th></th><th>target</th><th>measured</th><th>threshold</th><th>flag</th></tr>`, cls)
	for _, c := range checks {
		mark, color := "✓", "#1a7f37"
		if !c.OK {
			mark, color = "✗", "#cf222e"
		}
		fmt.Fprintf(b, `<tr><td style="color:%s;font-weight:bold">%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td></tr>`,
			color, mark, esc(c.Target), esc(c.Measured), esc(c.Threshold), esc(c.Flag))
	}
	b.WriteString("</table>")
}

// endpointTitle names an endpoint for people: what it is and who answers it.
func endpointTitle(name string) string {
	switch name {
	case "shake":
		return "shakes (edges, POST /v1/shake)"
	case "open":
		return "opens (verifier, POST /v1/open)"
	case "packets":
		return "my packets (query, GET /v1/packets)"
	}
	return name
}

// loadCharts draws the load's charts: requests, results and p99 per second, the
// latency percentiles and the result mix, the main run's endpoints first, then each
// baseline's shakes.
func loadCharts(b *strings.Builder, res *Result) {
	var rps, p99 []chartSeries
	names := []string{}
	lats := []Latency{}
	add := func(name string, ep *EndpointResult) {
		c := palette[len(names)%len(palette)]
		var r, p []float64
		for _, s := range ep.Series {
			for len(r) < s.T {
				r, p = append(r, 0), append(p, math.NaN())
			}
			r = append(r, float64(s.Count))
			p = append(p, float64(s.P99)/float64(time.Millisecond))
		}
		rps = append(rps, chartSeries{name: name, color: c, pts: r})
		p99 = append(p99, chartSeries{name: name, color: c, pts: p})
		names = append(names, name)
		lats = append(lats, ep.Latency)
	}
	add("shakes", &res.Shake)
	if res.Open != nil {
		add("opens", res.Open)
	}
	if res.Packets != nil {
		add("my packets", res.Packets)
	}
	for i := range res.Baselines {
		if r := res.Baselines[i].Result; r != nil {
			add("baseline "+res.Baselines[i].Name, &r.Shake)
		}
	}
	b.WriteString("<div class=\"charts\">\n")
	lineChart(b, lineSpec{title: "Requests answered per second", ylabel: "per second", start: res.Started, series: rps, wins: res.Windows})
	lineChart(b, lineSpec{title: "Shake results per second", ylabel: "per second", start: res.Started, series: shakeResultSeries(&res.Shake), wins: res.Windows})
	lineChart(b, lineSpec{title: "p99 latency, second by second", ylabel: "ms", start: res.Started, series: p99, wins: res.Windows})
	latencyChart(b, names, lats)
	eps := res.Endpoints()
	for i := range res.Baselines {
		if r := res.Baselines[i].Result; r != nil {
			e := r.Shake
			e.Name = "baseline " + res.Baselines[i].Name
			eps = append(eps, &e)
		}
	}
	mixChart(b, eps)
	b.WriteString("</div>\n")
}

// shakeResultSeries is every class of shake answer per second: won, miss, closed,
// retry (429) and errors (including drops).
func shakeResultSeries(ep *EndpointResult) []chartSeries {
	out := []chartSeries{{name: "won", color: "#2ca02c"}, {name: "miss", color: "#9e9e9e"},
		{name: "closed", color: "#8c564b"}, {name: "retry (429)", color: "#ff7f0e"}, {name: "errors and drops", color: "#d62728"}}
	for _, s := range ep.Series {
		for len(out[0].pts) < s.T {
			for k := range out {
				out[k].pts = append(out[k].pts, 0)
			}
		}
		for k, v := range []int64{s.Won, s.Miss, s.Closed, s.Retry, s.Errors} {
			out[k].pts = append(out[k].pts, float64(v))
		}
	}
	return out
}

func stripScheme(u string) string {
	if i := strings.Index(u, "://"); i >= 0 {
		return u[i+3:]
	}
	return u
}

// ReportSection is a titled table of facts that a caller (the demo) puts at the top of
// the report: settlement and reconciliation, say. Verdict, when set, is shown as OK or
// FAILED next to the title.
type ReportSection struct {
	Title   string
	Verdict *bool
	// Checks, when set, are shown first, one line per target with a ✓ or a ✗.
	Checks []Check
	Rows   [][2]string
}

// Check is one target of a verdict, k6 style: what was measured against its threshold.
type Check struct {
	Target    string `json:"target"`
	Threshold string `json:"threshold"`
	Measured  string `json:"measured"`
	OK        bool   `json:"ok"`
	// Flag names the command-line flag that sets the threshold.
	Flag string `json:"flag,omitempty"`
}

// WriteHTML writes one self-contained HTML page for res: inline CSS and SVG charts, no
// script and no external resource, so it renders offline.
func WriteHTML(w io.Writer, res *Result) error { return WriteHTMLReport(w, res, "shake bench", nil) }

// WriteHTMLReport is WriteHTML with a title and sections of the caller's, shown first.
func WriteHTMLReport(w io.Writer, res *Result, title string, sections []ReportSection) error {
	return WriteEventReport(w, res, title, sections, nil)
}

// reportCSS lays the page out over the whole window: tables and text on top, charts two
// or three to a row on a wide screen, one on a narrow one.
const reportCSS = "body{font-family:system-ui,sans-serif;margin:1.5em 2em;color:#222}" +
	"table{border-collapse:collapse;margin:.5em 0 1em}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}" +
	"th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}" +
	".charts{display:grid;grid-template-columns:repeat(auto-fill,minmax(520px,1fr));gap:1em 2em}" +
	".charts svg{width:100%;height:auto;display:block;font-family:inherit}svg{max-width:100%}" +
	".cols{display:flex;flex-wrap:wrap;gap:0 2.5em;align-items:flex-start}" +
	".tiles{display:flex;flex-wrap:wrap;gap:1em;margin:1em 0}.tile{border:1px solid #ddd;border-radius:6px;padding:.6em 1em;min-width:10em}" +
	".tile b{display:block;font-size:150%}.note{color:#666;font-size:90%;max-width:70em}" +
	".verdict.fail{border:2px solid #cf222e}.verdict.pass{border:2px solid #1a7f37}.verdict td{text-align:left}"

// WriteEventReport is WriteHTMLReport with what the caller knows of the event beyond
// the load (ev, may be nil): money over time, the amounts people got, tickets left per
// shard, settlement lag, and what ran.
func WriteEventReport(w io.Writer, res *Result, title string, sections []ReportSection, ev *Event) error {
	var b strings.Builder
	b.WriteString("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>" + esc(title) + " report</title><style>" +
		reportCSS + "</style></head><body>\n")
	fmt.Fprintf(&b, "<h1>%s</h1>", esc(title))
	if ev != nil {
		ev.headline(&b, res)
	}
	b.WriteString(`<div class="cols">`)
	for i, sec := range sections {
		if i == 1 {
			b.WriteString(`</div><div class="cols">`)
		}
		b.WriteString("<div>")
		fmt.Fprintf(&b, "<h2>%s", esc(sec.Title))
		if sec.Verdict != nil {
			if *sec.Verdict {
				b.WriteString(` <span style="color:#1a7f37">OK</span>`)
			} else {
				b.WriteString(` <span style="color:#cf222e">FAILED</span>`)
			}
		}
		b.WriteString("</h2>")
		writeChecks(&b, sec.Checks)
		b.WriteString("<table>")
		for _, r := range sec.Rows {
			fmt.Fprintf(&b, "<tr><td>%s</td><td>%s</td></tr>", esc(r[0]), esc(r[1]))
		}
		b.WriteString("</table></div>\n")
	}
	b.WriteString("</div>\n")
	if ev != nil {
		ev.sections(&b, res)
	}
	if len(sections) > 0 || ev != nil {
		b.WriteString("<h2>Load</h2>")
	}
	fmt.Fprintf(&b, "<p>%s, ", esc(res.Mode))
	if res.Rate > 0 {
		fmt.Fprintf(&b, "%.0f shakes/s offered", res.Rate)
		if res.Ramp > 0 {
			fmt.Fprintf(&b, " after a %v ramp", res.Ramp)
		}
	} else {
		fmt.Fprintf(&b, "%d closed-loop clients", res.Connections)
	}
	fmt.Fprintf(&b, ", %v, %d users, think time %v, started %s, took %v.", res.Duration, res.Users, res.Think,
		esc(res.Started.UTC().Format(time.RFC3339)), res.Elapsed.Round(time.Millisecond))
	if res.Interrupted {
		b.WriteString(" <strong>Interrupted before the end.</strong>")
	}
	b.WriteString("</p>\n<p class=\"note\">Latency is measured from each request's intended send time, so queueing in a stalled server shows (no coordinated omission). " +
		"<b>dropped</b> counts arrivals the load generator never sent because its bound of requests in flight was full: the servers were answering too slowly to take them.</p>\n")

	b.WriteString(`<div class="cols"><div>`)
	b.WriteString("<h3>Endpoints</h3><table><tr><th>endpoint</th><th>targets</th><th>requests</th><th>responses</th><th>throughput/s</th><th>p50</th><th>p90</th><th>p99</th><th>p99.9</th><th>max</th></tr>")
	for _, ep := range res.Endpoints() {
		var targets []string
		for _, u := range ep.URLs {
			targets = append(targets, stripScheme(u))
		}
		l := ep.Latency
		fmt.Fprintf(&b, "<tr><td>%s</td><td>%s</td><td>%d</td><td>%d</td><td>%.0f</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td></tr>",
			esc(endpointTitle(ep.Name)), esc(strings.Join(targets, " ")), ep.Requests, ep.Responses, ep.Throughput,
			fmtDur(l.P50), fmtDur(l.P90), fmtDur(l.P99), fmtDur(l.P999), fmtDur(l.Max))
	}
	b.WriteString("</table></div><div><h3>Results</h3><table><tr><th>endpoint</th><th>results</th><th>errors</th><th>HTTP status</th></tr>")
	for _, ep := range res.Endpoints() {
		fmt.Fprintf(&b, "<tr><td>%s</td><td>%s</td><td>%s</td><td>%s</td></tr>", esc(endpointTitle(ep.Name)),
			esc(fmtCounts(ep.Results)), esc(fmtCounts(ep.Errors)), esc(fmtCounts(ep.Status)))
	}
	b.WriteString("</table></div></div>\n" + farmHTML(res.Farm))
	if res.Open != nil {
		cur := ""
		if ev != nil {
			cur = ev.Currency
		}
		fmt.Fprintf(&b, "<p>Opened %d tickets worth %s", res.OpenedN, esc(ticket.FormatAmount(res.OpenedSum, cur)))
		if res.Campaign != "" {
			fmt.Fprintf(&b, " in campaign %s", esc(res.Campaign))
		}
		b.WriteString(".</p>\n")
	}
	loadCharts(&b, res)
	if len(res.Baselines) > 0 {
		b.WriteString("<h2>Baselines</h2><p class=\"note\">Same client, same load shape, same machine; shakes only. " +
			"The ratio is shake's /v1/shake throughput divided by the baseline's.</p>" +
			"<table><tr><th>target</th><th>throughput/s</th><th>p50</th><th>p99</th><th>p99.9</th><th>max</th><th>results</th><th>errors</th><th>shake ÷ target</th></tr>")
		row := func(name string, ep *EndpointResult, ratio string) {
			l := ep.Latency
			fmt.Fprintf(&b, "<tr><td>%s</td><td>%.0f</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td><td>%s</td></tr>",
				esc(name), ep.Throughput, fmtDur(l.P50), fmtDur(l.P99), fmtDur(l.P999), fmtDur(l.Max),
				esc(fmtCounts(ep.Results)), esc(fmtCounts(ep.Errors)), ratio)
		}
		row("shake", &res.Shake, "1.00")
		for i := range res.Baselines {
			bl := &res.Baselines[i]
			if bl.Result == nil {
				fmt.Fprintf(&b, "<tr><td>%s</td><td colspan=\"8\">skipped: %s</td></tr>", esc(bl.Name), esc(bl.Skipped))
				continue
			}
			row(bl.Name, &bl.Result.Shake, fmt.Sprintf("%.2f×", bl.Ratio(res)))
		}
		b.WriteString("</table>\n")
	}
	b.WriteString("</body></html>\n")
	_, err := io.WriteString(w, b.String())
	return err
}
