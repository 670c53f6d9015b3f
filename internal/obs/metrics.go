// Package obs is the observability and HTTP-server plumbing shared by the three
// servers (edge, verifier, settler): Prometheus-style metrics written by hand, slog
// loggers, signal handling, and a fasthttp server wrapper with health, readiness and
// metrics endpoints and JSON error bodies.
package obs

import (
	"bytes"
	"fmt"
	"io"
	"math"
	"slices"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// LatencyBuckets are histogram upper bounds in seconds, from 50µs to 10s in roughly
// doubling (1-2.5-5) steps; they suit both in-memory hot paths and slow durable writes.
var LatencyBuckets = []float64{
	0.00005, 0.0001, 0.00025, 0.0005,
	0.001, 0.0025, 0.005,
	0.01, 0.025, 0.05,
	0.1, 0.25, 0.5,
	1, 2.5, 5, 10,
}

type metricType uint8

const (
	typeCounter metricType = iota
	typeGauge
	typeHistogram
)

func (t metricType) String() string {
	switch t {
	case typeCounter:
		return "counter"
	case typeGauge:
		return "gauge"
	default:
		return "histogram"
	}
}

// Registry holds metric families and writes them in the Prometheus text exposition
// format 0.0.4. Registration takes a lock; updating a metric never does.
type Registry struct {
	mu         sync.Mutex
	families   map[string]*family
	collectors map[string]func([]byte) []byte
}

// family is every series sharing one metric name (one HELP and one TYPE line).
type family struct {
	name   string
	help   string
	typ    metricType
	series map[string]*series // keyed by the rendered, sorted label pairs
}

// series is one labelled metric of a family; exactly one of its value fields is set.
type series struct {
	labels    string // rendered `k="v",k2="v2"` without braces, escaped, sorted by key
	counter   *Counter
	gauge     *Gauge
	hist      *Histogram
	fn        func() float64
	fnCounter bool
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry {
	return &Registry{families: make(map[string]*family), collectors: make(map[string]func([]byte) []byte)}
}

// RegisterCollector adds fn, which appends whole metric families (HELP, TYPE and
// samples, in the text format) at exposition time, after the registered families. It
// is for families read together from one snapshot (the Go runtime's), or of a type
// the registry does not model (a summary). The families fn writes must not be
// registered otherwise. fn must be safe for concurrent use and must not call back into
// the registry; registering the same name again replaces fn.
func (r *Registry) RegisterCollector(name string, fn func(b []byte) []byte) {
	if fn == nil {
		panic("BUG: obs: nil collector " + name)
	}
	r.mu.Lock()
	r.collectors[name] = fn
	r.mu.Unlock()
}

// Counter returns the counter name{labels}, registering it on first use. Labels are
// key,value pairs; the same name and labels always return the same counter.
func (r *Registry) Counter(name, help string, labels ...string) *Counter {
	s := r.register(name, help, typeCounter, labels, func(s *series) { s.counter = new(Counter) })
	if s.counter == nil {
		panic(fmt.Sprintf("BUG: obs: metric %s{%s} is already registered as a func", name, s.labels))
	}
	return s.counter
}

// Gauge returns the gauge name{labels}, registering it on first use.
func (r *Registry) Gauge(name, help string, labels ...string) *Gauge {
	s := r.register(name, help, typeGauge, labels, func(s *series) { s.gauge = new(Gauge) })
	if s.gauge == nil {
		panic(fmt.Sprintf("BUG: obs: metric %s{%s} is already registered as a func", name, s.labels))
	}
	return s.gauge
}

// GaugeFunc registers a gauge whose value is fn() at exposition time. fn must be safe
// for concurrent use and must not call back into the registry. Registering the same
// name and labels again replaces fn.
func (r *Registry) GaugeFunc(name, help string, fn func() float64, labels ...string) {
	r.registerFunc(name, help, typeGauge, fn, labels)
}

// CounterFunc registers a counter whose value is fn() at exposition time (fn must be
// monotonic, concurrency-safe and must not call back into the registry). Registering
// the same name and labels again replaces fn.
func (r *Registry) CounterFunc(name, help string, fn func() float64, labels ...string) {
	r.registerFunc(name, help, typeCounter, fn, labels)
}

func (r *Registry) registerFunc(name, help string, typ metricType, fn func() float64, labels []string) {
	if fn == nil {
		panic("BUG: obs: nil func for metric " + name)
	}
	s := r.register(name, help, typ, labels, func(*series) {})
	if s.counter != nil || s.gauge != nil {
		panic(fmt.Sprintf("BUG: obs: metric %s{%s} is already registered as a value", name, s.labels))
	}
	r.mu.Lock()
	s.fn = fn
	s.fnCounter = typ == typeCounter
	r.mu.Unlock()
}

// Histogram returns the histogram name{labels} with the given upper bounds in seconds
// (strictly increasing, finite; +Inf is implicit), registering it on first use.
// Registering it again with different buckets is a bug.
func (r *Registry) Histogram(name, help string, buckets []float64, labels ...string) *Histogram {
	for i := 0; i+1 < len(labels); i += 2 {
		if labels[i] == "le" {
			panic("BUG: obs: histogram " + name + " cannot use the label le")
		}
	}
	checkBuckets(name, buckets)
	s := r.register(name, help, typeHistogram, labels, func(s *series) { s.hist = newHistogram(buckets) })
	if !slices.Equal(s.hist.bounds, buckets) {
		panic("BUG: obs: histogram " + name + " registered again with other buckets")
	}
	return s.hist
}

func checkBuckets(name string, buckets []float64) {
	if len(buckets) == 0 {
		panic("BUG: obs: histogram " + name + " has no buckets")
	}
	for i, b := range buckets {
		if math.IsNaN(b) || math.IsInf(b, 0) {
			panic("BUG: obs: histogram " + name + " has a non-finite bucket")
		}
		if i > 0 && b <= buckets[i-1] {
			panic("BUG: obs: histogram " + name + " buckets are not strictly increasing")
		}
	}
}

// register finds or creates the series name{labels}; mk initialises a new series.
func (r *Registry) register(name, help string, typ metricType, labels []string, mk func(*series)) *series {
	if !validMetricName(name) {
		panic(fmt.Sprintf("BUG: obs: invalid metric name %q", name))
	}
	key := renderLabels(name, labels)
	r.mu.Lock()
	defer r.mu.Unlock()
	f := r.families[name]
	if f == nil {
		f = &family{name: name, help: help, typ: typ, series: make(map[string]*series)}
		r.families[name] = f
	} else if f.typ != typ {
		panic(fmt.Sprintf("BUG: obs: metric %s registered as %s and %s", name, f.typ, typ))
	}
	s := f.series[key]
	if s == nil {
		s = &series{labels: key}
		mk(s)
		f.series[key] = s
	}
	return s
}

// renderLabels validates key,value pairs and renders them sorted by key.
func renderLabels(name string, labels []string) string {
	if len(labels)%2 != 0 {
		panic(fmt.Sprintf("BUG: obs: metric %s has an odd number of label arguments", name))
	}
	n := len(labels) / 2
	if n == 0 {
		return ""
	}
	idx := make([]int, n)
	for i := range idx {
		idx[i] = 2 * i
		k := labels[2*i]
		if !validLabelName(k) {
			panic(fmt.Sprintf("BUG: obs: metric %s has an invalid label name %q", name, k))
		}
	}
	sort.Slice(idx, func(a, b int) bool { return labels[idx[a]] < labels[idx[b]] })
	var b []byte
	for i, j := range idx {
		if i > 0 {
			if labels[j] == labels[idx[i-1]] {
				panic(fmt.Sprintf("BUG: obs: metric %s has the label %q twice", name, labels[j]))
			}
			b = append(b, ',')
		}
		b = append(b, labels[j]...)
		b = append(b, '=', '"')
		b = appendEscaped(b, labels[j+1], true)
		b = append(b, '"')
	}
	return string(b)
}

func validMetricName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		ok := c == '_' || c == ':' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (i > 0 && c >= '0' && c <= '9')
		if !ok {
			return false
		}
	}
	return true
}

func validLabelName(s string) bool {
	if s == "" || (len(s) >= 2 && s[0] == '_' && s[1] == '_') {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		ok := c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (i > 0 && c >= '0' && c <= '9')
		if !ok {
			return false
		}
	}
	return true
}

// appendEscaped escapes backslash and newline (HELP text) and, for label values,
// also the double quote, as the text format requires.
func appendEscaped(b []byte, s string, quote bool) []byte {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\\':
			b = append(b, '\\', '\\')
		case c == '\n':
			b = append(b, '\\', 'n')
		case c == '"' && quote:
			b = append(b, '\\', '"')
		default:
			b = append(b, c)
		}
	}
	return b
}

func appendFloat(b []byte, v float64) []byte {
	switch {
	case math.IsInf(v, 1):
		return append(b, "+Inf"...)
	case math.IsInf(v, -1):
		return append(b, "-Inf"...)
	case math.IsNaN(v):
		return append(b, "NaN"...)
	}
	return strconv.AppendFloat(b, v, 'g', -1, 64)
}

// WriteTo writes every metric in the text exposition format 0.0.4, families sorted by
// name and series by labels, so the output is deterministic.
func (r *Registry) WriteTo(w io.Writer) (int64, error) {
	r.mu.Lock()
	fams := make([]*family, 0, len(r.families))
	for _, f := range r.families {
		fams = append(fams, f)
	}
	sort.Slice(fams, func(i, j int) bool { return fams[i].name < fams[j].name })
	type snap struct {
		f      *family
		series []series
	}
	snaps := make([]snap, len(fams))
	for i, f := range fams {
		ss := make([]series, 0, len(f.series))
		for _, s := range f.series {
			ss = append(ss, *s)
		}
		sort.Slice(ss, func(a, b int) bool { return ss[a].labels < ss[b].labels })
		snaps[i] = snap{f: f, series: ss}
	}
	names := make([]string, 0, len(r.collectors))
	for name := range r.collectors {
		names = append(names, name)
	}
	sort.Strings(names)
	collect := make([]func([]byte) []byte, len(names))
	for i, name := range names {
		collect[i] = r.collectors[name]
	}
	r.mu.Unlock()

	var buf bytes.Buffer
	var b []byte
	for _, sn := range snaps {
		f := sn.f
		b = b[:0]
		b = append(b, "# HELP "...)
		b = append(b, f.name...)
		b = append(b, ' ')
		b = appendEscaped(b, f.help, false)
		b = append(b, "\n# TYPE "...)
		b = append(b, f.name...)
		b = append(b, ' ')
		b = append(b, f.typ.String()...)
		b = append(b, '\n')
		for i := range sn.series {
			b = appendSeries(b, f.name, &sn.series[i])
		}
		buf.Write(b)
	}
	for _, fn := range collect {
		buf.Write(fn(b[:0]))
	}
	return buf.WriteTo(w)
}

func appendSample(b []byte, name, suffix, labels, extra string) []byte {
	b = append(b, name...)
	b = append(b, suffix...)
	if labels != "" || extra != "" {
		b = append(b, '{')
		b = append(b, labels...)
		if labels != "" && extra != "" {
			b = append(b, ',')
		}
		b = append(b, extra...)
		b = append(b, '}')
	}
	return append(b, ' ')
}

func appendSeries(b []byte, name string, s *series) []byte {
	switch {
	case s.counter != nil:
		b = appendSample(b, name, "", s.labels, "")
		b = strconv.AppendUint(b, s.counter.Value(), 10)
	case s.gauge != nil:
		b = appendSample(b, name, "", s.labels, "")
		b = strconv.AppendInt(b, s.gauge.Value(), 10)
	case s.fn != nil:
		b = appendSample(b, name, "", s.labels, "")
		b = appendFloat(b, s.fn())
	case s.hist != nil:
		h := s.hist
		var cum uint64
		var le []byte
		for i := range h.counts {
			cum += h.counts[i].Load()
			le = append(le[:0], `le="`...)
			if i < len(h.bounds) {
				le = appendFloat(le, h.bounds[i])
			} else {
				le = append(le, "+Inf"...)
			}
			le = append(le, '"')
			b = appendSample(b, name, "_bucket", s.labels, string(le))
			b = strconv.AppendUint(b, cum, 10)
			b = append(b, '\n')
		}
		b = appendSample(b, name, "_sum", s.labels, "")
		b = appendFloat(b, h.Sum())
		b = append(b, '\n')
		b = appendSample(b, name, "_count", s.labels, "")
		b = strconv.AppendUint(b, cum, 10)
	default:
		// A func series whose fn is being set concurrently: skip it this time.
		return b
	}
	return append(b, '\n')
}

// Counter is a monotonically increasing count; safe for concurrent use, never allocates.
type Counter struct{ v atomic.Uint64 }

// Inc adds one.
func (c *Counter) Inc() { c.v.Add(1) }

// Add adds n.
func (c *Counter) Add(n uint64) { c.v.Add(n) }

// Value returns the current count.
func (c *Counter) Value() uint64 { return c.v.Load() }

// Gauge is a value that goes up and down; safe for concurrent use, never allocates.
type Gauge struct{ v atomic.Int64 }

// Set sets the gauge to v.
func (g *Gauge) Set(v int64) { g.v.Store(v) }

// Add adds d (which may be negative).
func (g *Gauge) Add(d int64) { g.v.Add(d) }

// Value returns the current value.
func (g *Gauge) Value() int64 { return g.v.Load() }

// Histogram counts observations (in seconds) into fixed buckets. It is lock-free and
// never allocates; its count is the sum of its buckets, so an exposition is always
// self-consistent (+Inf bucket == _count).
type Histogram struct {
	bounds []float64       // upper bounds, strictly increasing
	counts []atomic.Uint64 // per bucket (not cumulative); last one is +Inf
	sum    atomic.Uint64   // float64 bits of the sum of observations
}

func newHistogram(buckets []float64) *Histogram {
	return &Histogram{
		bounds: append([]float64(nil), buckets...),
		counts: make([]atomic.Uint64, len(buckets)+1),
	}
}

// Observe records one observation of v seconds. NaN is ignored.
func (h *Histogram) Observe(v float64) {
	if math.IsNaN(v) {
		return
	}
	// Binary search for the first bound >= v (Prometheus buckets are le, inclusive).
	lo, hi := 0, len(h.bounds)
	for lo < hi {
		m := int(uint(lo+hi) >> 1)
		if h.bounds[m] < v {
			lo = m + 1
		} else {
			hi = m
		}
	}
	h.counts[lo].Add(1)
	for {
		old := h.sum.Load()
		if h.sum.CompareAndSwap(old, math.Float64bits(math.Float64frombits(old)+v)) {
			return
		}
	}
}

// ObserveDuration records d in seconds.
func (h *Histogram) ObserveDuration(d time.Duration) { h.Observe(d.Seconds()) }

// Count returns the number of observations.
func (h *Histogram) Count() uint64 {
	var n uint64
	for i := range h.counts {
		n += h.counts[i].Load()
	}
	return n
}

// Sum returns the sum of all observations in seconds.
func (h *Histogram) Sum() float64 { return math.Float64frombits(h.sum.Load()) }

// Quantile estimates the q-quantile (0 <= q <= 1) in seconds by linear interpolation
// inside the bucket holding it, like Prometheus' histogram_quantile. It returns 0 with
// no observations, and the highest finite bound when the quantile is in the +Inf bucket.
func (h *Histogram) Quantile(q float64) float64 {
	if math.IsNaN(q) {
		return math.NaN()
	}
	q = min(max(q, 0), 1)
	var counts [64]uint64
	cs := counts[:0]
	var total uint64
	for i := range h.counts {
		c := h.counts[i].Load()
		cs = append(cs, c)
		total += c
	}
	if total == 0 {
		return 0
	}
	rank := q * float64(total)
	var cum uint64
	for i, c := range cs {
		if c == 0 || float64(cum+c) < rank {
			cum += c
			continue
		}
		if i == len(h.bounds) {
			return h.bounds[len(h.bounds)-1]
		}
		lower := 0.0
		if i > 0 {
			lower = h.bounds[i-1]
		}
		upper := h.bounds[i]
		return lower + (upper-lower)*(rank-float64(cum))/float64(c)
	}
	return h.bounds[len(h.bounds)-1]
}
