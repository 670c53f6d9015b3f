package edge

import (
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestStartup10M measures start-up and resident memory with a 10-million-ticket shard.
// It writes a 10M-ticket shard first (tens of seconds), so it runs only when asked:
//
//	SHAKE_EDGE_BIG=1 go test -run Startup10M -v ./edge/
func TestStartup10M(t *testing.T) {
	if os.Getenv("SHAKE_EDGE_BIG") == "" {
		t.Skip("set SHAKE_EDGE_BIG=1 to measure start-up with a 10M-ticket shard")
	}
	const count = 10_000_000
	f := newFixture(t, shardSpec{count: count})
	f.amounts = nil
	runtime.GC()
	debug.FreeOSMemory()
	before := rssBytes(t)
	t0 := time.Now()
	s, err := New(f.config(filepath.Join(f.dir, "edge.state")))
	if err != nil {
		t.Fatal(err)
	}
	took := time.Since(t0)
	defer s.Close()
	runtime.GC()
	debug.FreeOSMemory()
	after := rssBytes(t)
	perTicket := float64(after-before) / count
	t.Logf("start-up with %d tickets: %v; resident +%d MiB = %.1f bytes/ticket (per-user table untouched)", count, took, (after-before)>>20, perTicket)
	if took > 2*time.Second {
		t.Errorf("start-up took %v, want <= 2s", took)
	}
	if perTicket > 24 {
		t.Errorf("%.1f bytes per ticket resident, want <= 24", perTicket)
	}
}

func rssBytes(t *testing.T) int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Skip("no /proc/self/status")
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return n << 10
		}
	}
	t.Skip("no VmRSS")
	return 0
}
