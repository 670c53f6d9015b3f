package bench

import (
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"

	"shake/ticket"
)

// Event is what a caller that ran the servers (the demo) knows of the event beyond the
// load: the campaign, what ran, and the servers' own counters sampled over time. The
// report shows money over time, the amounts people got, the tickets left per shard and
// the settlement lag from it.
type Event struct {
	Campaign string
	Currency string
	Budget   int64 // minor units
	Tickets  uint64
	// Prizes are the campaign's fixed prizes (manifest prizes).
	Prizes []ticket.Prize
	// Shards names the edge shards, in order; Samples' TicketsLeft follow it.
	Shards []string
	// Ran lists what ran, for the record: version, flags, seed commitment, machine.
	Ran [][2]string
	// Samples are the servers' counters, about one a second from the load's start.
	Samples []EventSample
}

// EventSample is one reading of the servers' counters. A value that could not be read
// is NaN and is left out of the charts.
type EventSample struct {
	At time.Time
	// TicketsLeft is each shard's shake_edge_tickets_left.
	TicketsLeft []float64
	// SettledTickets and SettledAmount are the settler's posted totals (minor units).
	SettledTickets float64
	SettledAmount  float64
	// SettleLagP99 is the p99 from claim to commit of the claims committed since the
	// previous sample, in seconds (NaN when none was).
	SettleLagP99 float64
	// KafkaLag is the settler's consumer lag: claims on the topic not yet settled.
	KafkaLag float64
}

// headline writes the few figures a product owner reads first.
func (ev *Event) headline(b *strings.Builder, res *Result) {
	users := map[uint64]struct{}{}
	for _, o := range res.Opened {
		users[o.UID] = struct{}{}
	}
	tile := func(label, value string) {
		fmt.Fprintf(b, `<div class="tile">%s<b>%s</b></div>`, esc(label), esc(value))
	}
	b.WriteString(`<div class="tiles">`)
	tile("red packets opened", fmt.Sprintf("%d of %d", res.OpenedN, ev.Tickets))
	tile("money opened", ticket.FormatAmount(res.OpenedSum, ev.Currency))
	tile("budget", ticket.FormatAmount(ev.Budget, ev.Currency))
	if !res.OpenedTruncated {
		tile("people who opened one", strconv.Itoa(len(users)))
	}
	tile("shakes", strconv.FormatInt(res.Shake.Requests, 10))
	tile("shakes per second", fmt.Sprintf("%.0f", res.Shake.Throughput))
	b.WriteString("</div>\n")
}

// sections writes the event's own sections: money, amounts, shards, settlement, what ran.
func (ev *Event) sections(b *strings.Builder, res *Result) {
	b.WriteString("<h2>Money over time</h2><div class=\"charts\">\n")
	ev.moneyCharts(b, res)
	b.WriteString("</div>\n<h2>The amounts people got</h2><div class=\"cols\">")
	ev.amounts(b, res)
	b.WriteString("</div>\n<h2>Edges and settlement</h2><div class=\"charts\">\n")
	ev.serverCharts(b, res)
	b.WriteString("</div>\n<h2>What ran</h2><table>")
	for _, r := range ev.Ran {
		fmt.Fprintf(b, "<tr><td>%s</td><td style=\"text-align:left\">%s</td></tr>", esc(r[0]), esc(r[1]))
	}
	b.WriteString("</table>\n")
}

// yuanFmt formats a value in major units (yuan) for an axis.
func (ev *Event) yuanFmt(v float64) string {
	return ticket.FormatAmount(int64(math.Round(v*100)), ev.Currency)
}

// offsets returns each sample's time in seconds since start.
func (ev *Event) offsets(start time.Time) []float64 {
	xs := make([]float64, len(ev.Samples))
	for i, s := range ev.Samples {
		xs[i] = s.At.Sub(start).Seconds()
	}
	return xs
}

// rates turns a cumulative counter into a per-second rate between samples.
func (ev *Event) rates(xs []float64, get func(*EventSample) float64) []float64 {
	out := make([]float64, len(ev.Samples))
	out[0] = math.NaN()
	for i := 1; i < len(ev.Samples); i++ {
		dt := xs[i] - xs[i-1]
		d := get(&ev.Samples[i]) - get(&ev.Samples[i-1])
		out[i] = math.NaN()
		if dt > 0 && !math.IsNaN(d) {
			out[i] = math.Max(d, 0) / dt
		}
	}
	return out
}

// moneyCharts draws tickets won, opened and settled per second, the money opened and
// settled per second, and the budget burning down.
func (ev *Event) moneyCharts(b *strings.Builder, res *Result) {
	var won, opened, openedYuan, openedCum []float64
	var cum float64
	for _, s := range res.Shake.Series {
		for len(won) < s.T {
			won = append(won, 0)
		}
		won = append(won, float64(s.Won))
	}
	if res.Open != nil {
		for _, s := range res.Open.Series {
			for len(opened) < s.T {
				opened, openedYuan, openedCum = append(opened, 0), append(openedYuan, 0), append(openedCum, cum)
			}
			cum += float64(s.Amount) / 100
			opened = append(opened, float64(s.Count-s.Errors))
			openedYuan, openedCum = append(openedYuan, float64(s.Amount)/100), append(openedCum, cum)
		}
	}
	counts := []chartSeries{{name: "won", color: "#2ca02c", pts: won}, {name: "opened", color: "#1f77b4", pts: opened}}
	yuan := []chartSeries{{name: "opened", color: "#1f77b4", pts: openedYuan}}
	budget := float64(ev.Budget) / 100
	left := []chartSeries{{name: "budget not yet opened", color: "#1f77b4", pts: subtractFrom(budget, openedCum)}}
	if len(ev.Samples) > 1 {
		xs := ev.offsets(res.Started)
		counts = append(counts, chartSeries{name: "settled (in the ledger)", color: "#ff7f0e", xs: xs,
			pts: ev.rates(xs, func(s *EventSample) float64 { return s.SettledTickets })})
		yuan = append(yuan, chartSeries{name: "settled (in the ledger)", color: "#ff7f0e", xs: xs,
			pts: ev.rates(xs, func(s *EventSample) float64 { return s.SettledAmount / 100 })})
		var settled []float64
		for _, s := range ev.Samples {
			settled = append(settled, s.SettledAmount/100)
		}
		left = append(left, chartSeries{name: "budget not yet settled", color: "#ff7f0e", xs: xs, pts: subtractFrom(budget, settled)})
	}
	cur := ev.yuanFmt
	lineChart(b, lineSpec{title: "Red packets per second: won, opened, settled", ylabel: "per second", start: res.Started, series: counts, wins: res.Windows})
	lineChart(b, lineSpec{title: "Money per second: opened and settled", ylabel: "per second", start: res.Started, series: yuan, wins: res.Windows, yfmt: cur})
	lineChart(b, lineSpec{title: "The budget burning down (" + ticket.FormatAmount(ev.Budget, ev.Currency) + ")", ylabel: "left", start: res.Started, series: left, wins: res.Windows, yfmt: cur})
}

func subtractFrom(total float64, vs []float64) []float64 {
	out := make([]float64, len(vs))
	for i, v := range vs {
		out[i] = total - v
	}
	return out
}

// serverCharts draws each shard's tickets left and the settlement lag over time.
func (ev *Event) serverCharts(b *strings.Builder, res *Result) {
	if len(ev.Samples) < 2 {
		b.WriteString("<p class=\"note\">The servers' counters were not sampled.</p>")
		return
	}
	xs := ev.offsets(res.Started)
	var shards []chartSeries
	for k, name := range ev.Shards {
		s := chartSeries{name: name, color: palette[(k+1)%len(palette)], xs: xs}
		for _, smp := range ev.Samples {
			v := math.NaN()
			if k < len(smp.TicketsLeft) {
				v = smp.TicketsLeft[k]
			}
			s.pts = append(s.pts, v)
		}
		shards = append(shards, s)
	}
	var lag, klag []float64
	for _, smp := range ev.Samples {
		lag, klag = append(lag, smp.SettleLagP99*1000), append(klag, smp.KafkaLag)
	}
	lineChart(b, lineSpec{title: "Tickets left per edge shard", ylabel: "tickets", start: res.Started, series: shards, wins: res.Windows})
	lineChart(b, lineSpec{title: "Settlement lag: claim to ledger commit, p99", ylabel: "ms", start: res.Started, wins: res.Windows,
		series: []chartSeries{{name: "p99 of the claims committed in each interval", color: "#9467bd", xs: xs, pts: lag}}})
	lineChart(b, lineSpec{title: "Claims waiting in Kafka for the settler", ylabel: "claims", start: res.Started, wins: res.Windows,
		series: []chartSeries{{name: "consumer lag", color: "#8c564b", xs: xs, pts: klag}}})
}

// amounts shows the distribution of the opened amounts and the luckiest ten.
func (ev *Event) amounts(b *strings.Builder, res *Result) {
	if len(res.Opened) == 0 {
		b.WriteString("<p>No red packet was opened.</p>")
		return
	}
	as := make([]int64, len(res.Opened))
	for i, o := range res.Opened {
		as[i] = o.Amount
	}
	sort.Slice(as, func(i, j int) bool { return as[i] < as[j] })
	var sum int64
	for _, a := range as {
		sum += a
	}
	cur := func(v int64) string { return ticket.FormatAmount(v, ev.Currency) }
	b.WriteString(`<div class="charts" style="flex:2 1 600px">`)
	amountHistogram(b, ev.withoutPrizes(as), ev.Currency, len(ev.Prizes) > 0)
	b.WriteString("</div><div><h3>In figures</h3><table>")
	for _, r := range [][2]string{{"opened", strconv.Itoa(len(as))}, {"smallest", cur(as[0])}, {"median", cur(as[len(as)/2])},
		{"mean", cur(sum / int64(len(as)))}, {"largest", cur(as[len(as)-1])}} {
		fmt.Fprintf(b, "<tr><td>%s</td><td>%s</td></tr>", r[0], esc(r[1]))
	}
	if res.OpenedTruncated {
		fmt.Fprintf(b, "<tr><td colspan=\"2\">of the first %d opened</td></tr>", len(as))
	}
	b.WriteString("</table></div>")
	ev.prizes(b, as)
	b.WriteString("<div><h3>The luckiest ten</h3><table><tr><th>user</th><th>amount</th><th>ticket</th></tr>")
	top := append([]OpenedTicket(nil), res.Opened...)
	sort.SliceStable(top, func(i, j int) bool { return top[i].Amount > top[j].Amount })
	for _, o := range top[:min(10, len(top))] {
		fmt.Fprintf(b, "<tr><td>%s</td><td>%s</td><td>%d</td></tr>", esc(string(ticket.MaskUID(nil, strconv.FormatUint(o.UID, 10)))),
			esc(cur(o.Amount)), o.Ticket)
	}
	b.WriteString("</table><p class=\"note\">Users are masked as on the campaign page.</p></div>")
}

// prizes lists the campaign's fixed prizes and how many opened tickets had each
// amount (sorted holds the opened amounts, ascending).
func (ev *Event) prizes(b *strings.Builder, sorted []int64) {
	b.WriteString("<div><h3>The prizes</h3>")
	if len(ev.Prizes) == 0 {
		b.WriteString("<p>This campaign has no fixed prize: every amount is a lucky one.</p></div>")
		return
	}
	b.WriteString("<table><tr><th>prize</th><th>in the campaign</th><th>opened</th></tr>")
	for _, p := range ev.Prizes {
		lo := sort.Search(len(sorted), func(i int) bool { return sorted[i] >= p.Amount })
		hi := sort.Search(len(sorted), func(i int) bool { return sorted[i] > p.Amount })
		fmt.Fprintf(b, "<tr><td>%s</td><td>%d</td><td>%d</td></tr>", esc(ticket.FormatAmount(p.Amount, ev.Currency)), p.Count, hi-lo)
	}
	b.WriteString("</table><p class=\"note\">Opened counts the opened tickets of exactly<br>that amount (a lucky amount may equal it).</p></div>")
}

// withoutPrizes returns the sorted amounts without those equal to a prize, so that a
// few large prizes do not squash the lucky amounts into a corner of the histogram
// (they have their own table). With nothing left, it returns sorted.
func (ev *Event) withoutPrizes(sorted []int64) []int64 {
	if len(ev.Prizes) == 0 {
		return sorted
	}
	prize := map[int64]bool{}
	for _, p := range ev.Prizes {
		prize[p.Amount] = true
	}
	var out []int64
	for _, a := range sorted {
		if !prize[a] {
			out = append(out, a)
		}
	}
	if len(out) == 0 {
		return sorted
	}
	return out
}

// amountHistogram draws the opened amounts in 20 equal bins between the smallest and
// the largest (sorted ascending, not empty).
func amountHistogram(b *strings.Builder, sorted []int64, currency string, prizesLeftOut bool) {
	const bins = 20
	lo, hi := sorted[0], sorted[len(sorted)-1]
	width := max((hi-lo+bins)/bins, 1)
	counts := make([]int, bins)
	for _, a := range sorted {
		counts[min(int((a-lo)/width), bins-1)]++
	}
	peak := 0
	for _, c := range counts {
		peak = max(peak, c)
	}
	ymax := niceMax(float64(peak))
	title := "How many red packets of each amount"
	if prizesLeftOut {
		title += " (prizes aside)"
	}
	fmt.Fprintf(b, svgOpen, chartW, chartH, esc(title))
	fmt.Fprintf(b, `<text x="%d" y="16" font-weight="bold">%s</text>`, padL, esc(title))
	fmt.Fprintf(b, `<text x="4" y="%d" font-size="11" fill="#666">packets</text>`, padT-12)
	for i := 0; i <= 4; i++ {
		y := padT + plotH - plotH*i/4
		fmt.Fprintf(b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#eee"/><text x="%d" y="%d" text-anchor="end" font-size="11">%s</text>`,
			padL, y, padL+plotW, y, padL-4, y+4, fmtNum(ymax*float64(i)/4))
	}
	bw := float64(plotW) / bins
	for i, c := range counts {
		h := float64(plotH) * float64(c) / ymax
		from, to := lo+int64(i)*width, lo+int64(i+1)*width-1
		fmt.Fprintf(b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="#d62728"><title>%s to %s: %d</title></rect>`,
			float64(padL)+bw*float64(i)+1, float64(padT+plotH)-h, bw-2, h, esc(ticket.FormatAmount(from, currency)), esc(ticket.FormatAmount(to, currency)), c)
		if i%4 == 0 {
			fmt.Fprintf(b, `<text x="%.1f" y="%d" font-size="11">%s</text>`, float64(padL)+bw*float64(i), padT+plotH+16, esc(ticket.FormatAmount(from, currency)))
		}
	}
	fmt.Fprintf(b, `<line x1="%d" y1="%d" x2="%d" y2="%d" %s/>`, padL, padT+plotH, padL+plotW, padT+plotH, axisStyle)
	fmt.Fprintf(b, `<text x="%d" y="%d" text-anchor="end" font-size="11" fill="#666">amount (each bar %s wide)</text>`, padL+plotW, chartH-4, esc(ticket.FormatAmount(width, currency)))
	b.WriteString(`</svg>`)
}
