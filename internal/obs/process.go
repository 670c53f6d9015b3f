package obs

import (
	"os"
	"runtime"
	"runtime/metrics"
)

// RegisterProcessMetrics adds the standard process gauges every server exports:
// go_goroutines, process_open_fds and go_heap_live_bytes. The whole-chain chaos test
// reads them to catch leaks. Registering twice replaces the functions (no duplicates).
func RegisterProcessMetrics(r *Registry) {
	r.GaugeFunc("go_goroutines", "Number of goroutines that currently exist.", func() float64 {
		return float64(runtime.NumGoroutine())
	})
	r.GaugeFunc("process_open_fds", "Number of open file descriptors.", func() float64 {
		ents, err := os.ReadDir("/proc/self/fd")
		if err != nil {
			return -1 // not Linux: unknown
		}
		return float64(len(ents))
	})
	r.GaugeFunc("go_heap_live_bytes", "Heap bytes occupied by live objects after the last GC.", func() float64 {
		s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
		metrics.Read(s)
		if s[0].Value.Kind() != metrics.KindUint64 {
			return -1
		}
		return float64(s[0].Value.Uint64())
	})
}
