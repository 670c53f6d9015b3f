package obs

import (
	"math"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"strconv"
	"time"

	"shake/internal/buildinfo"
)

// RegisterProcessMetrics adds the standard runtime families every server exports, named
// exactly as Prometheus' client_golang names them so that stock dashboards and alerts
// work unchanged: process_cpu_seconds_total, process_resident_memory_bytes,
// process_virtual_memory_bytes, process_start_time_seconds, process_open_fds,
// process_max_fds (where the platform reports them), go_gc_duration_seconds (a
// summary), go_goroutines, go_threads, go_info, go_memstats_*, go_gc_gogc_percent,
// go_gc_gomemlimit_bytes, go_sched_gomaxprocs_threads, plus go_heap_live_bytes (the
// chaos suite watches it for leaks) and shake_build_info{version,revision,goversion}.
// They are read from one runtime/metrics snapshot per scrape, which does not stop the
// world (runtime.ReadMemStats would). Registering twice replaces the collector.
func RegisterProcessMetrics(r *Registry) {
	bi := buildinfo.Get()
	r.GaugeFunc("shake_build_info", "A metric with a constant '1' value labelled by the version, VCS revision and Go version shake was built from.",
		func() float64 { return 1 }, "version", bi.Version, "revision", bi.Revision, "goversion", bi.GoVersion)
	r.RegisterCollector("runtime", appendRuntimeMetrics)
}

// processStart approximates the start time where the platform cannot tell it: the
// moment this package was initialised, a few milliseconds after exec.
var processStart = time.Now()

// rmNames are the runtime/metrics samples read per scrape; the indices below follow it.
var rmNames = []string{
	"/gc/heap/allocs:objects", "/gc/heap/tiny/allocs:objects", "/gc/heap/frees:objects",
	"/gc/heap/allocs:bytes", "/memory/classes/total:bytes", "/memory/classes/heap/objects:bytes",
	"/memory/classes/heap/unused:bytes", "/memory/classes/heap/released:bytes", "/memory/classes/heap/free:bytes",
	"/gc/heap/objects:objects", "/memory/classes/heap/stacks:bytes", "/memory/classes/os-stacks:bytes",
	"/memory/classes/metadata/mspan/inuse:bytes", "/memory/classes/metadata/mspan/free:bytes",
	"/memory/classes/metadata/mcache/inuse:bytes", "/memory/classes/metadata/mcache/free:bytes",
	"/memory/classes/profiling/buckets:bytes", "/memory/classes/metadata/other:bytes", "/memory/classes/other:bytes",
	"/gc/heap/goal:bytes", "/gc/heap/live:bytes", "/gc/gogc:percent", "/gc/gomemlimit:bytes",
	"/sched/gomaxprocs:threads", "/sched/goroutines:goroutines",
}

const (
	rmAllocsObjects = iota
	rmTinyAllocs
	rmFreesObjects
	rmAllocsBytes
	rmTotalBytes
	rmHeapObjectsBytes
	rmHeapUnused
	rmHeapReleased
	rmHeapFree
	rmHeapObjects
	rmHeapStacks
	rmOSStacks
	rmMSpanInuse
	rmMSpanFree
	rmMCacheInuse
	rmMCacheFree
	rmProfBuckets
	rmMetaOther
	rmOther
	rmHeapGoal
	rmHeapLive
	rmGOGC
	rmMemLimit
	rmGOMAXPROCS
	rmGoroutines
)

// appendRuntimeMetrics appends the process, Go runtime and build families. It
// allocates its sample buffers per call: a scrape is rare, and this keeps it safe for
// concurrent scrapes without a lock.
func appendRuntimeMetrics(b []byte) []byte {
	samples := make([]metrics.Sample, len(rmNames))
	for i, n := range rmNames {
		samples[i].Name = n
	}
	metrics.Read(samples)
	v := func(i int) float64 {
		switch samples[i].Value.Kind() {
		case metrics.KindUint64:
			return float64(samples[i].Value.Uint64())
		case metrics.KindFloat64:
			return samples[i].Value.Float64()
		}
		return 0 // not supported by this Go version: client_golang reports 0 too
	}

	// The summary of stop-the-world pause durations, as client_golang computes it.
	var gc debug.GCStats
	gc.PauseQuantiles = make([]time.Duration, 5)
	debug.ReadGCStats(&gc)
	b = appendHead(b, "go_gc_duration_seconds", "A summary of the wall-time pause (stop-the-world) duration in garbage collection cycles.", "summary")
	for i, q := range []string{"0", "0.25", "0.5", "0.75", "1"} {
		b = append(b, `go_gc_duration_seconds{quantile="`...)
		b = append(b, q...)
		b = append(b, "\"} "...)
		b = appendFloat(b, gc.PauseQuantiles[i].Seconds())
		b = append(b, '\n')
	}
	b = append(b, "go_gc_duration_seconds_sum "...)
	b = appendFloat(b, gc.PauseTotal.Seconds())
	b = append(b, "\ngo_gc_duration_seconds_count "...)
	b = strconv.AppendInt(b, gc.NumGC, 10)
	b = append(b, '\n')

	b = appendOne(b, "go_gc_gogc_percent", "Heap size target percentage configured by the user, otherwise 100. This value is set by the GOGC environment variable, and the runtime/debug.SetGCPercent function. Sourced from /gc/gogc:percent.", "gauge", v(rmGOGC))
	b = appendOne(b, "go_gc_gomemlimit_bytes", "Go runtime memory limit configured by the user, otherwise math.MaxInt64. This value is set by the GOMEMLIMIT environment variable, and the runtime/debug.SetMemoryLimit function. Sourced from /gc/gomemlimit:bytes.", "gauge", v(rmMemLimit))
	b = appendOne(b, "go_goroutines", "Number of goroutines that currently exist.", "gauge", float64(runtime.NumGoroutine()))
	b = appendOne(b, "go_heap_live_bytes", "Heap bytes occupied by live objects after the last GC. Sourced from /gc/heap/live:bytes.", "gauge", v(rmHeapLive))
	b = appendHead(b, "go_info", "Information about the Go environment.", "gauge")
	b = append(b, `go_info{version="`...)
	b = appendEscaped(b, runtime.Version(), true)
	b = append(b, "\"} 1\n"...)

	heapAlloc := v(rmHeapObjectsBytes)
	heapInuse := heapAlloc + v(rmHeapUnused)
	heapIdle := v(rmHeapReleased) + v(rmHeapFree)
	stackInuse := v(rmHeapStacks)
	mspanInuse, mcacheInuse := v(rmMSpanInuse), v(rmMCacheInuse)
	var lastGC float64
	if !gc.LastGC.IsZero() {
		lastGC = float64(gc.LastGC.UnixNano()) / 1e9
	}
	// The same derivations from runtime/metrics as client_golang's memStatsFromRM.
	for _, m := range []struct {
		name, help, typ string
		v               float64
	}{
		{"go_memstats_alloc_bytes", "Number of heap bytes allocated and currently in use, same as go_memstats_heap_alloc_bytes. Equals to /memory/classes/heap/objects:bytes.", "gauge", heapAlloc},
		{"go_memstats_alloc_bytes_total", "Total number of heap bytes allocated, even if freed. Equals to /gc/heap/allocs:bytes.", "counter", v(rmAllocsBytes)},
		{"go_memstats_buck_hash_sys_bytes", "Number of bytes used by the profiling bucket hash table. Equals to /memory/classes/profiling/buckets:bytes.", "gauge", v(rmProfBuckets)},
		{"go_memstats_frees_total", "Total number of heap objects frees. Equals to /gc/heap/frees:objects + /gc/heap/tiny/allocs:objects.", "counter", v(rmFreesObjects) + v(rmTinyAllocs)},
		{"go_memstats_gc_sys_bytes", "Number of bytes used for garbage collection system metadata. Equals to /memory/classes/metadata/other:bytes.", "gauge", v(rmMetaOther)},
		{"go_memstats_heap_alloc_bytes", "Number of heap bytes allocated and currently in use, same as go_memstats_alloc_bytes. Equals to /memory/classes/heap/objects:bytes.", "gauge", heapAlloc},
		{"go_memstats_heap_idle_bytes", "Number of heap bytes waiting to be used. Equals to /memory/classes/heap/released:bytes + /memory/classes/heap/free:bytes.", "gauge", heapIdle},
		{"go_memstats_heap_inuse_bytes", "Number of heap bytes that are in use. Equals to /memory/classes/heap/objects:bytes + /memory/classes/heap/unused:bytes", "gauge", heapInuse},
		{"go_memstats_heap_objects", "Number of currently allocated objects. Equals to /gc/heap/objects:objects.", "gauge", v(rmHeapObjects)},
		{"go_memstats_heap_released_bytes", "Number of heap bytes released to OS. Equals to /memory/classes/heap/released:bytes.", "gauge", v(rmHeapReleased)},
		{"go_memstats_heap_sys_bytes", "Number of heap bytes obtained from system. Equals to /memory/classes/heap/objects:bytes + /memory/classes/heap/unused:bytes + /memory/classes/heap/released:bytes + /memory/classes/heap/free:bytes.", "gauge", heapInuse + heapIdle},
		{"go_memstats_last_gc_time_seconds", "Number of seconds since 1970 of last garbage collection.", "gauge", lastGC},
		{"go_memstats_mallocs_total", "Total number of heap objects allocated, both live and gc-ed. Semantically a counter version for go_memstats_heap_objects gauge. Equals to /gc/heap/allocs:objects + /gc/heap/tiny/allocs:objects.", "counter", v(rmAllocsObjects) + v(rmTinyAllocs)},
		{"go_memstats_mcache_inuse_bytes", "Number of bytes in use by mcache structures. Equals to /memory/classes/metadata/mcache/inuse:bytes.", "gauge", mcacheInuse},
		{"go_memstats_mcache_sys_bytes", "Number of bytes used for mcache structures obtained from system. Equals to /memory/classes/metadata/mcache/inuse:bytes + /memory/classes/metadata/mcache/free:bytes.", "gauge", mcacheInuse + v(rmMCacheFree)},
		{"go_memstats_mspan_inuse_bytes", "Number of bytes in use by mspan structures. Equals to /memory/classes/metadata/mspan/inuse:bytes.", "gauge", mspanInuse},
		{"go_memstats_mspan_sys_bytes", "Number of bytes used for mspan structures obtained from system. Equals to /memory/classes/metadata/mspan/inuse:bytes + /memory/classes/metadata/mspan/free:bytes.", "gauge", mspanInuse + v(rmMSpanFree)},
		{"go_memstats_next_gc_bytes", "Number of heap bytes when next garbage collection will take place. Equals to /gc/heap/goal:bytes.", "gauge", v(rmHeapGoal)},
		{"go_memstats_other_sys_bytes", "Number of bytes used for other system allocations. Equals to /memory/classes/other:bytes.", "gauge", v(rmOther)},
		{"go_memstats_stack_inuse_bytes", "Number of bytes obtained from system for stack allocator in non-CGO environments. Equals to /memory/classes/heap/stacks:bytes.", "gauge", stackInuse},
		{"go_memstats_stack_sys_bytes", "Number of bytes obtained from system for stack allocator. Equals to /memory/classes/heap/stacks:bytes + /memory/classes/os-stacks:bytes.", "gauge", stackInuse + v(rmOSStacks)},
		{"go_memstats_sys_bytes", "Number of bytes obtained from system. Equals to /memory/classes/total:byte.", "gauge", v(rmTotalBytes)},
	} {
		b = appendOne(b, m.name, m.help, m.typ, m.v)
	}
	b = appendOne(b, "go_sched_gomaxprocs_threads", "The current runtime.GOMAXPROCS setting, or the number of operating system threads that can execute user-level Go code simultaneously. Sourced from /sched/gomaxprocs:threads.", "gauge", v(rmGOMAXPROCS))
	threads, _ := runtime.ThreadCreateProfile(nil)
	b = appendOne(b, "go_threads", "Number of OS threads created.", "gauge", float64(threads))

	p := readProcStats()
	if p.cpu >= 0 {
		b = appendOne(b, "process_cpu_seconds_total", "Total user and system CPU time spent in seconds.", "counter", p.cpu)
	}
	if p.maxFDs >= 0 {
		b = appendOne(b, "process_max_fds", "Maximum number of open file descriptors.", "gauge", p.maxFDs)
	}
	if p.openFDs >= 0 {
		b = appendOne(b, "process_open_fds", "Number of open file descriptors.", "gauge", p.openFDs)
	}
	if p.rss >= 0 {
		b = appendOne(b, "process_resident_memory_bytes", "Resident memory size in bytes.", "gauge", p.rss)
	}
	start := p.start
	if start < 0 {
		start = float64(processStart.UnixNano()) / 1e9
	}
	b = appendOne(b, "process_start_time_seconds", "Start time of the process since unix epoch in seconds.", "gauge", start)
	if p.vsize >= 0 {
		b = appendOne(b, "process_virtual_memory_bytes", "Virtual memory size in bytes.", "gauge", p.vsize)
	}
	return b
}

// procStats are the process figures the platform reports; -1 is "unknown here" and
// leaves the family out rather than exporting a made-up value.
type procStats struct {
	cpu, rss, vsize, start, openFDs, maxFDs float64
}

func unknownProcStats() procStats { return procStats{-1, -1, -1, -1, -1, -1} }

func appendHead(b []byte, name, help, typ string) []byte {
	b = append(b, "# HELP "...)
	b = append(b, name...)
	b = append(b, ' ')
	b = appendEscaped(b, help, false)
	b = append(b, "\n# TYPE "...)
	b = append(b, name...)
	b = append(b, ' ')
	b = append(b, typ...)
	return append(b, '\n')
}

func appendOne(b []byte, name, help, typ string, v float64) []byte {
	b = appendHead(b, name, help, typ)
	b = append(b, name...)
	b = append(b, ' ')
	if math.IsNaN(v) {
		v = 0
	}
	b = appendFloat(b, v)
	return append(b, '\n')
}
