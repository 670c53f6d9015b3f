package bench

import (
	"encoding/json"
	"math"
	"time"

	hdr "github.com/HdrHistogram/hdrhistogram-go"
)

// Histogram bounds. Latencies are recorded in microseconds with three significant
// digits (0.1% error), from 1 µs up to MaxLatency; a larger value is clamped to
// MaxLatency rather than lost, so a pathological stall still shows as the max.
const (
	MaxLatency = time.Hour
	histDigits = 3
)

// Histogram is an HDR latency histogram in microseconds. It is not safe for concurrent
// use; the bench guards each one with its endpoint's lock.
type Histogram struct {
	h *hdr.Histogram
}

// NewHistogram returns an empty Histogram covering 1 µs to MaxLatency.
func NewHistogram() *Histogram {
	return &Histogram{h: hdr.New(1, int64(MaxLatency/time.Microsecond), histDigits)}
}

// Record adds one latency. Negative values count as zero and values beyond MaxLatency
// as MaxLatency. It allocates nothing.
func (h *Histogram) Record(d time.Duration) {
	us := int64(d / time.Microsecond)
	if us < 1 {
		us = 1
	}
	if max := int64(MaxLatency / time.Microsecond); us > max {
		us = max
	}
	// The value is clamped into range, so RecordValue cannot fail.
	_ = h.h.RecordValue(us)
}

// Count returns the number of recorded values.
func (h *Histogram) Count() int64 { return h.h.TotalCount() }

// Quantile returns the latency at quantile q in [0, 1] (0 when empty).
func (h *Histogram) Quantile(q float64) time.Duration {
	if h.h.TotalCount() == 0 {
		return 0
	}
	return time.Duration(h.h.ValueAtQuantile(q*100)) * time.Microsecond
}

// Merge adds every value of o to h.
func (h *Histogram) Merge(o *Histogram) { h.h.Merge(o.h) }

// Reset empties the histogram, keeping its memory.
func (h *Histogram) Reset() { h.h.Reset() }

// Summary extracts the percentiles the bench reports.
func (h *Histogram) Summary() Latency {
	n := h.h.TotalCount()
	if n == 0 {
		return Latency{}
	}
	us := time.Microsecond
	return Latency{
		Count: n,
		Min:   time.Duration(h.h.Min()) * us,
		Mean:  time.Duration(math.Round(h.h.Mean())) * us,
		P50:   h.Quantile(0.50),
		P90:   h.Quantile(0.90),
		P99:   h.Quantile(0.99),
		P999:  h.Quantile(0.999),
		Max:   time.Duration(h.h.Max()) * us,
	}
}

// Latency is a latency summary. In JSON every duration is a number of milliseconds
// (with microsecond precision) under the keys count, min, mean, p50, p90, p99, p99.9, max.
type Latency struct {
	Count int64
	Min   time.Duration
	Mean  time.Duration
	P50   time.Duration
	P90   time.Duration
	P99   time.Duration
	P999  time.Duration
	Max   time.Duration
}

type latencyJSON struct {
	Count int64   `json:"count"`
	Min   float64 `json:"min"`
	Mean  float64 `json:"mean"`
	P50   float64 `json:"p50"`
	P90   float64 `json:"p90"`
	P99   float64 `json:"p99"`
	P999  float64 `json:"p99.9"`
	Max   float64 `json:"max"`
}

// ms converts to milliseconds rounded to the microsecond.
func ms(d time.Duration) float64 { return float64(d/time.Microsecond) / 1000 }

func fromMS(f float64) time.Duration { return time.Duration(math.Round(f*1000)) * time.Microsecond }

// MarshalJSON writes the summary in milliseconds.
func (l Latency) MarshalJSON() ([]byte, error) {
	return json.Marshal(latencyJSON{l.Count, ms(l.Min), ms(l.Mean), ms(l.P50), ms(l.P90), ms(l.P99), ms(l.P999), ms(l.Max)})
}

// UnmarshalJSON reads what MarshalJSON wrote.
func (l *Latency) UnmarshalJSON(b []byte) error {
	var j latencyJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	*l = Latency{j.Count, fromMS(j.Min), fromMS(j.Mean), fromMS(j.P50), fromMS(j.P90), fromMS(j.P99), fromMS(j.P999), fromMS(j.Max)}
	return nil
}
