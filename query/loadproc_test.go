package query

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The latency runs of BenchmarkPacketsPG1M drive the servers from a second process:
// this test binary run again with loadEnv set. A client in the server's own process
// shares its garbage collector, its scheduler and its two Ps with the server under
// test, and what it measured was mostly itself: its stop-the-world pauses and
// run-queue waits landed in the server's tail. Real clients are other processes (on
// other machines); on one 2-core machine a second process still shares the cores,
// but not the runtime.
const loadEnv = "SHAKE_QUERY_LOADGEN"

// TestMain runs the load generator instead of the tests when loadEnv is set.
func TestMain(m *testing.M) {
	if spec := os.Getenv(loadEnv); spec != "" {
		if err := runLoadgen(spec, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "loadgen:", err)
			os.Exit(2)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// loadSpec is what the child needs: addr,conns,duration,rate,users.
type loadSpec struct {
	addr  string
	conns int
	d     time.Duration
	rate  float64
	users int
}

func (s loadSpec) String() string {
	return fmt.Sprintf("%s,%d,%s,%g,%d", s.addr, s.conns, s.d, s.rate, s.users)
}

func parseLoadSpec(spec string) (loadSpec, error) {
	f := strings.Split(spec, ",")
	if len(f) != 5 {
		return loadSpec{}, fmt.Errorf("want addr,conns,duration,rate,users, got %q", spec)
	}
	var s loadSpec
	var err error
	s.addr = f[0]
	if s.conns, err = strconv.Atoi(f[1]); err != nil || s.conns < 1 {
		return s, fmt.Errorf("bad conns %q", f[1])
	}
	if s.d, err = time.ParseDuration(f[2]); err != nil || s.d <= 0 {
		return s, fmt.Errorf("bad duration %q", f[2])
	}
	if s.rate, err = strconv.ParseFloat(f[3], 64); err != nil || s.rate < 0 || math.IsInf(s.rate, 0) {
		return s, fmt.Errorf("bad rate %q", f[3])
	}
	if s.users, err = strconv.Atoi(f[4]); err != nil || s.users < 1 {
		return s, fmt.Errorf("bad users %q", f[4])
	}
	return s, nil
}

// runLoadgen hammers spec.addr and writes, little-endian: the rate achieved (float64
// bits), the number of latencies, then each latency in nanoseconds, sorted. A warm-up
// second at the same rate comes first and is not counted.
func runLoadgen(spec string, out io.Writer) error {
	s, err := parseLoadSpec(spec)
	if err != nil {
		return err
	}
	var failed error
	errorf := func(format string, args ...any) {
		if failed == nil {
			failed = fmt.Errorf(format, args...)
		}
	}
	toks := newTokens(s.users)
	hammer(errorf, s.addr, toks, s.conns, time.Second, s.rate)
	qps, lats := hammer(errorf, s.addr, toks, s.conns, s.d, s.rate)
	if failed != nil {
		return failed
	}
	w := bufio.NewWriter(out)
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], math.Float64bits(qps))
	w.Write(b[:])
	binary.LittleEndian.PutUint64(b[:], uint64(len(lats)))
	w.Write(b[:])
	for _, l := range lats {
		binary.LittleEndian.PutUint64(b[:], uint64(l))
		w.Write(b[:])
	}
	return w.Flush()
}

// hammerProc runs the load generator in a child process and returns what it measured.
func hammerProc(tb testing.TB, s loadSpec) (float64, []time.Duration) {
	tb.Helper()
	exe, err := os.Executable()
	if err != nil {
		tb.Fatal(err)
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), loadEnv+"="+s.String())
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		tb.Fatalf("load generator: %v: %s", err, stderr.String())
	}
	if len(out) < 16 {
		tb.Fatalf("load generator wrote %d bytes", len(out))
	}
	qps := math.Float64frombits(binary.LittleEndian.Uint64(out))
	n := binary.LittleEndian.Uint64(out[8:])
	if uint64(len(out)-16) != n*8 {
		tb.Fatalf("load generator wrote %d latencies in %d bytes", n, len(out)-16)
	}
	lats := make([]time.Duration, n)
	for i := range lats {
		lats[i] = time.Duration(binary.LittleEndian.Uint64(out[16+8*i:]))
	}
	return qps, lats
}
