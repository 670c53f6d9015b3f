package bench

import (
	"fmt"
	"math"
	"strings"
	"time"
)

// lineSpec is one line chart: series over time since start, drawn against the wall
// clock, with its y values formatted by yfmt (fmtNum when nil).
type lineSpec struct {
	title  string
	ylabel string // the y axis's unit, shown above it ("per second", "ms", "¥")
	start  time.Time
	series []chartSeries
	wins   []Window
	yfmt   func(float64) string
}

// x returns series s's i-th x in seconds.
func (s *chartSeries) x(i int) float64 {
	if s.xs != nil {
		return s.xs[i]
	}
	return float64(i)
}

// lineChart renders spec as an SVG line chart with wall-clock time on the x axis.
func lineChart(b *strings.Builder, spec lineSpec) {
	xmax, ymax := 1.0, 0.0
	for _, s := range spec.series {
		for i, v := range s.pts {
			xmax = math.Max(xmax, s.x(i))
			if !math.IsNaN(v) {
				ymax = math.Max(ymax, v)
			}
		}
	}
	ymax = niceMax(ymax)
	yfmt := spec.yfmt
	if yfmt == nil {
		yfmt = fmtNum
	}
	fmt.Fprintf(b, svgOpen, chartW, chartH, esc(spec.title))
	fmt.Fprintf(b, `<text x="%d" y="16" font-weight="bold">%s</text>`, padL, esc(spec.title))
	fmt.Fprintf(b, `<text x="4" y="%d" font-size="11" fill="#666">%s</text>`, padT-12, esc(spec.ylabel))
	fmt.Fprintf(b, `<line x1="%d" y1="%d" x2="%d" y2="%d" %s/>`, padL, padT+plotH, padL+plotW, padT+plotH, axisStyle)
	fmt.Fprintf(b, `<line x1="%d" y1="%d" x2="%d" y2="%d" %s/>`, padL, padT, padL, padT+plotH, axisStyle)
	for i := 0; i <= 4; i++ {
		y := padT + plotH - plotH*i/4
		fmt.Fprintf(b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#eee"/>`, padL, y, padL+plotW, y)
		fmt.Fprintf(b, `<text x="%d" y="%d" text-anchor="end" font-size="11">%s</text>`, padL-4, y+4, esc(yfmt(ymax*float64(i)/4)))
	}
	px := func(x float64) float64 { return float64(padL) + float64(plotW)*x/xmax }
	for _, w := range spec.wins {
		x0, x1 := px(math.Max(w.From, 0)), px(math.Min(w.To, xmax))
		if x1 > x0 {
			fmt.Fprintf(b, `<rect x="%.1f" y="%d" width="%.1f" height="%d" fill="#ffd54f" fill-opacity="0.35"/><text x="%.1f" y="%d" font-size="11">%s</text>`,
				x0, padT, x1-x0, plotH, x0+2, padT+plotH-4, esc(w.Label))
		}
	}
	timeAxis(b, spec.start, xmax, px)
	for k, s := range spec.series {
		var pts strings.Builder
		for i, v := range s.pts {
			if math.IsNaN(v) {
				continue
			}
			// A sample taken just before the start (the servers' first reading) is the
			// state at the start.
			fmt.Fprintf(&pts, "%.1f,%.1f ", px(math.Max(s.x(i), 0)), float64(padT+plotH)-float64(plotH)*v/ymax)
		}
		if pts.Len() > 0 {
			fmt.Fprintf(b, `<polyline fill="none" stroke="%s" stroke-width="2"%s points="%s"/>`, s.color, dash(k), strings.TrimSpace(pts.String()))
		}
	}
	legend(b, spec.series)
	b.WriteString(`</svg>`)
}

// dash draws every other line dashed, so lines that lie on each other (two shards with
// the same tickets left) both show.
func dash(k int) string {
	if k%2 == 1 {
		return ` stroke-dasharray="6 3"`
	}
	return ""
}

// timeAxis labels the x axis with the wall clock (UTC) at round intervals.
func timeAxis(b *strings.Builder, start time.Time, xmax float64, px func(float64) float64) {
	step := max(niceMax(xmax/6), 1) // labels are whole seconds
	for x := 0.0; x <= xmax+1e-9; x += step {
		anchor := "middle"
		switch {
		case x == 0:
			anchor = "start"
		case x+step > xmax+1e-9:
			anchor = "end"
		}
		fmt.Fprintf(b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" %s/><text x="%.1f" y="%d" text-anchor="%s" font-size="11">%s</text>`,
			px(x), padT+plotH, px(x), padT+plotH+4, axisStyle, px(x), padT+plotH+16, anchor,
			start.Add(time.Duration(x*float64(time.Second))).UTC().Format("15:04:05"))
	}
	fmt.Fprintf(b, `<text x="%d" y="%d" text-anchor="end" font-size="11" fill="#666">time (UTC)</text>`, padL+plotW, chartH-4)
}

// legend draws the series' names in a row under the time axis.
func legend(b *strings.Builder, series []chartSeries) {
	x := padL
	for _, s := range series {
		fmt.Fprintf(b, `<rect x="%d" y="%d" width="10" height="10" fill="%s"/><text x="%d" y="%d" font-size="11">%s</text>`,
			x, chartH-13, s.color, x+14, chartH-4, esc(s.name))
		x += 24 + 7*len([]rune(s.name))
	}
}
