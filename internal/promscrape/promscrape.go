// Package promscrape reads the Prometheus text format that every shake admin listener
// serves on /metrics, for the tools that watch a running event (the demo's report
// sampler, shake top). It understands what obs writes: counters, gauges and
// histograms, one sample per line; it is not a general exposition-format parser.
package promscrape

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"sort"
	"strconv"
	"strings"
)

// MaxBody bounds what Scrape reads from one /metrics answer: a server that streams
// without end cannot exhaust the reader's memory.
const MaxBody = 8 << 20

// Sample is one line of the exposition: a metric name, its labels and its value.
type Sample struct {
	Name   string
	Labels map[string]string
	Value  float64
}

// Samples is one scrape of one server.
type Samples []Sample

// Parse reads the text format from r. Lines it cannot read are skipped: the scrape
// of a newer server with a format this reader does not know still yields the rest.
func Parse(r io.Reader) (Samples, error) {
	var out Samples
	sc := bufio.NewScanner(io.LimitReader(r, MaxBody))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		if s, ok := parseLine(line); ok {
			out = append(out, s)
		}
	}
	return out, sc.Err()
}

// parseLine reads `name{a="b",c="d"} value [timestamp]`.
func parseLine(line string) (Sample, bool) {
	s := Sample{}
	rest := line
	if i := strings.IndexAny(line, "{ "); i < 0 {
		return s, false
	} else if line[i] == '{' {
		j := strings.LastIndexByte(line, '}')
		if j < i {
			return s, false
		}
		s.Name, s.Labels = line[:i], parseLabels(line[i+1:j])
		rest = line[j+1:]
	} else {
		s.Name, rest = line[:i], line[i:]
	}
	f := strings.Fields(rest)
	if len(f) == 0 {
		return s, false
	}
	v, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return s, false
	}
	s.Value = v
	return s, true
}

func parseLabels(s string) map[string]string {
	m := map[string]string{}
	for len(s) > 0 {
		eq := strings.IndexByte(s, '=')
		if eq < 0 || eq+1 >= len(s) || s[eq+1] != '"' {
			return m
		}
		key := strings.TrimSpace(strings.TrimLeft(s[:eq], ","))
		var val strings.Builder
		i := eq + 2
		for ; i < len(s) && s[i] != '"'; i++ {
			if s[i] == '\\' && i+1 < len(s) {
				i++
				switch s[i] {
				case 'n':
					val.WriteByte('\n')
					continue
				}
			}
			val.WriteByte(s[i])
		}
		m[key] = val.String()
		if i >= len(s) {
			return m
		}
		s = s[i+1:]
	}
	return m
}

// Scrape fetches base/metrics (base is http://host:port) with hc and parses it.
func Scrape(ctx context.Context, hc *http.Client, base string) (Samples, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(base, "/")+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s/metrics answered %s", base, resp.Status)
	}
	return Parse(resp.Body)
}

// match reports whether s has the name and every label pair of kv (name, value, ...).
func (s *Sample) match(name string, kv []string) bool {
	if s.Name != name {
		return false
	}
	for i := 0; i+1 < len(kv); i += 2 {
		if s.Labels[kv[i]] != kv[i+1] {
			return false
		}
	}
	return true
}

// Get returns the first sample named name whose labels include the pairs kv.
func (ss Samples) Get(name string, kv ...string) (float64, bool) {
	for i := range ss {
		if ss[i].match(name, kv) {
			return ss[i].Value, true
		}
	}
	return 0, false
}

// Sum adds every sample named name whose labels include the pairs kv (0, false when
// there is none).
func (ss Samples) Sum(name string, kv ...string) (float64, bool) {
	var sum float64
	found := false
	for i := range ss {
		if ss[i].match(name, kv) {
			sum += ss[i].Value
			found = true
		}
	}
	return sum, found
}

// By returns, for every sample named name, its value keyed by the value of label.
func (ss Samples) By(name, label string) map[string]float64 {
	m := map[string]float64{}
	for i := range ss {
		if ss[i].Name == name {
			m[ss[i].Labels[label]] += ss[i].Value
		}
	}
	return m
}

// Has reports whether any sample's name starts with prefix.
func (ss Samples) Has(prefix string) bool {
	for i := range ss {
		if strings.HasPrefix(ss[i].Name, prefix) {
			return true
		}
	}
	return false
}

// Bucket is one cumulative histogram bucket: Count observations at most LE.
type Bucket struct {
	LE    float64
	Count float64
}

// Buckets returns histogram name's cumulative buckets in ascending order.
func (ss Samples) Buckets(name string) []Bucket {
	var bs []Bucket
	for i := range ss {
		if ss[i].Name != name+"_bucket" {
			continue
		}
		le, err := strconv.ParseFloat(ss[i].Labels["le"], 64)
		if err != nil {
			continue
		}
		bs = append(bs, Bucket{le, ss[i].Value})
	}
	sort.Slice(bs, func(i, j int) bool { return bs[i].LE < bs[j].LE })
	return bs
}

// Delta returns the buckets of now minus those of before (the observations made in
// between), matched by bound; before may be nil.
func Delta(now, before []Bucket) []Bucket {
	out := make([]Bucket, len(now))
	for i, b := range now {
		out[i] = b
		for _, o := range before {
			if o.LE == b.LE {
				out[i].Count = max(b.Count-o.Count, 0)
			}
		}
	}
	return out
}

// Quantile estimates the q-quantile (0 < q < 1) of cumulative buckets the way
// Prometheus's histogram_quantile does: linear within the bucket that holds it. It
// returns NaN when there is no observation, and the highest finite bound when the
// quantile lies in the +Inf bucket.
func Quantile(q float64, bs []Bucket) float64 {
	if len(bs) == 0 || bs[len(bs)-1].Count == 0 {
		return math.NaN()
	}
	rank := q * bs[len(bs)-1].Count
	lower, below := 0.0, 0.0
	for _, b := range bs {
		if b.Count >= rank {
			if math.IsInf(b.LE, 1) {
				return lower
			}
			if b.Count == below {
				return b.LE
			}
			return lower + (b.LE-lower)*(rank-below)/(b.Count-below)
		}
		if !math.IsInf(b.LE, 1) {
			lower = b.LE
		}
		below = b.Count
	}
	return lower
}
