package obs

import (
	"bytes"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// scrape returns the exposition of r as name (with labels) -> value.
func scrape(t *testing.T, r *Registry) (string, map[string]float64) {
	t.Helper()
	var b bytes.Buffer
	if _, err := r.WriteTo(&b); err != nil {
		t.Fatal(err)
	}
	vals := make(map[string]float64)
	for _, line := range strings.Split(b.String(), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("bad sample line %q: %v", line, err)
		}
		vals[line[:i]] = v
	}
	return b.String(), vals
}

// TestRuntimeMetricsStandardNames checks that the families stock dashboards (the Go
// processes and Go runtime dashboards built on client_golang) query are there, once,
// with plausible values.
func TestRuntimeMetricsStandardNames(t *testing.T) {
	r := NewRegistry()
	RegisterProcessMetrics(r)
	RegisterProcessMetrics(r) // idempotent
	runtime.GC()
	out, v := scrape(t, r)
	want := []string{
		"go_goroutines", "go_threads", "go_memstats_alloc_bytes", "go_memstats_alloc_bytes_total",
		"go_memstats_heap_inuse_bytes", "go_memstats_sys_bytes", "go_memstats_mallocs_total",
		"go_memstats_frees_total", "go_memstats_next_gc_bytes", "go_memstats_last_gc_time_seconds",
		"go_gc_duration_seconds_count", "go_gc_duration_seconds_sum", `go_gc_duration_seconds{quantile="0.5"}`,
		"go_heap_live_bytes", "go_sched_gomaxprocs_threads", "go_gc_gogc_percent", "process_start_time_seconds",
	}
	if runtime.GOOS == "linux" {
		want = append(want, "process_cpu_seconds_total", "process_resident_memory_bytes", "process_virtual_memory_bytes",
			"process_open_fds", "process_max_fds")
	}
	for _, name := range want {
		if _, ok := v[name]; !ok {
			t.Errorf("%s missing from:\n%s", name, out)
		}
		if n := strings.Count(out, "\n# TYPE "+strings.SplitN(name, "{", 2)[0]+" "); n > 1 {
			t.Errorf("%s has %d TYPE lines", name, n)
		}
	}
	if v["go_goroutines"] < 1 || v["go_threads"] < 1 || v["go_memstats_sys_bytes"] <= 0 || v["go_gc_duration_seconds_count"] < 1 {
		t.Errorf("implausible values: goroutines %v threads %v sys %v gc count %v",
			v["go_goroutines"], v["go_threads"], v["go_memstats_sys_bytes"], v["go_gc_duration_seconds_count"])
	}
	now := float64(time.Now().Unix())
	if st := v["process_start_time_seconds"]; st > now+1 || st < now-24*3600 {
		t.Errorf("process_start_time_seconds %v is not a recent past time (now %v)", st, now)
	}
	if runtime.GOOS == "linux" {
		if v["process_resident_memory_bytes"] < 1<<20 || v["process_open_fds"] < 3 || v["process_max_fds"] < v["process_open_fds"] {
			t.Errorf("implausible process values: rss %v open fds %v max fds %v",
				v["process_resident_memory_bytes"], v["process_open_fds"], v["process_max_fds"])
		}
	}
	if !strings.Contains(out, `go_info{version="`+runtime.Version()+`"} 1`) {
		t.Errorf("go_info missing or wrong:\n%s", out)
	}
	if !strings.Contains(out, `shake_build_info{goversion="`+runtime.Version()+`",revision="`) {
		t.Errorf("shake_build_info missing or wrong:\n%s", out)
	}
}

// TestProcessCPUCounts burns CPU until getrusage says 200ms were used (the machine is
// shared, so wall time says nothing) and checks process_cpu_seconds_total followed.
func TestProcessCPUCounts(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("process_cpu_seconds_total is read from /proc on Linux only")
	}
	cpu := func() float64 {
		var ru syscall.Rusage
		if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
			t.Fatal(err)
		}
		return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
	}
	r := NewRegistry()
	RegisterProcessMetrics(r)
	_, before := scrape(t, r)
	start := cpu()
	x := 0
	for deadline := time.Now().Add(20 * time.Second); cpu()-start < 0.2 && time.Now().Before(deadline); {
		for i := 0; i < 100000; i++ {
			x += i
		}
	}
	_ = x
	used := cpu() - start
	_, after := scrape(t, r)
	// /proc counts in 10ms ticks: allow two ticks of rounding.
	if d := after["process_cpu_seconds_total"] - before["process_cpu_seconds_total"]; d < used-0.03 {
		t.Errorf("process_cpu_seconds_total grew by %v while getrusage counted %v", d, used)
	}
}

// TestPromtoolCheckMetrics lints a registry with every kind of family plus the runtime
// ones through `promtool check metrics`, the linter stock Prometheus tooling uses.
func TestPromtoolCheckMetrics(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool not installed (Debian package prometheus; .ci/run installs it): skipping the lint")
	}
	r := NewRegistry()
	RegisterProcessMetrics(r)
	r.Counter("shake_test_requests_total", "Requests.", "result", "ok").Inc()
	r.Gauge("shake_test_queue_depth", "Queue depth.").Set(3)
	r.Histogram("shake_test_latency_seconds", "Latency.", LatencyBuckets).Observe(0.01)
	out, _ := scrape(t, r)
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = strings.NewReader(out)
	res, err := cmd.CombinedOutput()
	if err != nil || len(bytes.TrimSpace(res)) != 0 {
		t.Fatalf("promtool check metrics: %v\n%s", err, res)
	}
	// The lint must be able to fail: a counter without _total is a complaint.
	cmd = exec.Command(promtool, "check", "metrics")
	cmd.Stdin = strings.NewReader("# HELP shake_bad Bad.\n# TYPE shake_bad counter\nshake_bad 1\n")
	if res, err := cmd.CombinedOutput(); err == nil && len(bytes.TrimSpace(res)) == 0 {
		t.Fatal("promtool accepted a counter without _total: the lint is not running")
	}
}
