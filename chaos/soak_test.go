//go:build chaos

package chaos

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

// soakRow is what one TestChaos run printed on its SOAK-RESULT line.
type soakRow struct {
	Seed     uint64         `json:"seed"`
	Duration string         `json:"duration"`
	Rate     float64        `json:"rate"`
	Faults   map[string]int `json:"faults"`
	Breaches map[string]int `json:"breaches"`
	Opened   int            `json:"opened"`
	Posted   int            `json:"posted"`
	DrainS   float64        `json:"drain_s"`
	Early    int            `json:"early_exits"`
	Failed   bool           `json:"failed"`
	wall     time.Duration
	err      string
}

// parseSeeds reads "1-20", "1,5,777" or a mix.
func parseSeeds(s string) ([]uint64, error) {
	var out []uint64
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := strconv.ParseUint(lo, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("seed %q: %v", part, err)
		}
		b := a
		if isRange {
			if b, err = strconv.ParseUint(hi, 10, 64); err != nil || b < a || b-a > 10000 {
				return nil, fmt.Errorf("seed range %q", part)
			}
		}
		for x := a; x <= b; x++ {
			out = append(out, x)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no seeds in %q", s)
	}
	return out, nil
}

// TestChaosSoak runs TestChaos once per seed, each in a process of its own (this test
// binary, re-run with -test.run '^TestChaos$'), one after the other, and prints a table
// of seeds, faults injected and invariants held. It fails if any run breached anything.
//
//	SHAKE_SOAK_SEEDS=1-20 SHAKE_SOAK_DURATION=60s SHAKE_SOAK_RATE=2000 \
//	  go test -tags chaos -count=1 -run TestChaosSoak -timeout 0 -v ./chaos/
//
// SHAKE_SOAK_OUT=FILE also writes the table there, after every seed. It skips unless SHAKE_SOAK_SEEDS is
// set (CI runs one short TestChaos seed instead).
func TestChaosSoak(t *testing.T) {
	spec := os.Getenv("SHAKE_SOAK_SEEDS")
	if spec == "" {
		t.Skip("SHAKE_SOAK_SEEDS is unset (e.g. 1-20)")
	}
	if os.Getenv("SHAKE_TEST_POSTGRES") == "" {
		t.Skip("SHAKE_TEST_POSTGRES is unset: TestChaos needs a PostgreSQL ledger")
	}
	seeds, err := parseSeeds(spec)
	if err != nil {
		t.Fatal(err)
	}
	duration := envDuration(t, "SHAKE_SOAK_DURATION", 60*time.Second)
	rate := envFloat(t, "SHAKE_SOAK_RATE", 2000)
	var rows []soakRow
	for _, seed := range seeds {
		row := runSoakSeed(t, seed, duration, rate)
		rows = append(rows, row)
		t.Logf("seed %d done in %v: failed %v %s", seed, row.wall.Truncate(time.Second), row.Failed, row.err)
		if row.Failed {
			t.Errorf("seed %d breached: %v %s (replay with SHAKE_CHAOS_SEED=%d)", seed, row.Breaches, row.err, seed)
		}
		// The table so far, so that a soak cut short still leaves its rows.
		if out := os.Getenv("SHAKE_SOAK_OUT"); out != "" {
			if err := os.WriteFile(out, []byte(soakTable(rows)), 0o644); err != nil {
				t.Error(err)
			}
		}
	}
	t.Logf("soak table:\n%s", soakTable(rows))
}

// runSoakSeed runs one seed in a child process and reads its SOAK-RESULT line.
func runSoakSeed(t *testing.T, seed uint64, d time.Duration, rate float64) soakRow {
	start := time.Now()
	cmd := exec.Command(os.Args[0], "-test.run", "^TestChaos$", "-test.count", "1", "-test.v",
		"-test.timeout", (d + 12*time.Minute).String())
	cmd.Env = append(os.Environ(), "SHAKE_CHAOS_SEED="+strconv.FormatUint(seed, 10),
		"SHAKE_CHAOS_DURATION="+d.String(), "SHAKE_CHAOS_RATE="+strconv.FormatFloat(rate, 'f', -1, 64))
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	runErr := cmd.Run()
	row := soakRow{Seed: seed, Failed: true}
	var breaches []string
	sc := bufio.NewScanner(bytes.NewReader(out.Bytes()))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if i := strings.Index(line, "SOAK-RESULT "); i >= 0 {
			if err := json.Unmarshal([]byte(line[i+len("SOAK-RESULT "):]), &row); err != nil {
				row.err = "bad SOAK-RESULT line: " + err.Error()
			}
		}
		if strings.Contains(line, "BREACH:") && len(breaches) < 5 {
			breaches = append(breaches, strings.TrimSpace(line))
		}
	}
	row.wall = time.Since(start)
	if runErr != nil {
		row.Failed = true
		if row.err == "" {
			row.err = runErr.Error()
		}
	}
	if row.Failed {
		// Keep the child's output for whoever reads the failure.
		f, err := os.CreateTemp("", fmt.Sprintf("shake-soak-%d-*.log", seed))
		if err == nil {
			f.Write(out.Bytes())
			f.Close()
			row.err += " (output " + f.Name() + ")"
		}
		for _, b := range breaches {
			t.Logf("seed %d: %s", seed, b)
		}
	}
	return row
}

// soakTable renders rows: one line per seed with the faults injected and each
// invariant as ok or its number of breaches.
func soakTable(rows []soakRow) string {
	var b strings.Builder
	var kinds []string
	for _, n := range faultNames {
		kinds = append(kinds, n)
	}
	fmt.Fprintf(&b, "%-6s %-9s %-6s %-8s %-8s %-7s %-5s %-7s", "seed", "duration", "rate", "opened", "posted", "drain_s", "early", "result")
	for _, inv := range invariants {
		fmt.Fprintf(&b, " %s", inv)
	}
	b.WriteString(" faults\n")
	for _, r := range rows {
		res := "ok"
		if r.Failed {
			res = "FAIL"
		}
		fmt.Fprintf(&b, "%-6d %-9s %-6.0f %-8d %-8d %-7.1f %-5d %-7s", r.Seed, r.Duration, r.Rate, r.Opened, r.Posted, r.DrainS, r.Early, res)
		for _, inv := range invariants {
			v := "ok"
			if n := r.Breaches[inv]; n > 0 {
				v = strconv.Itoa(n)
			} else if r.Duration == "" {
				v = "?"
			}
			fmt.Fprintf(&b, " %-*s", len(inv), v)
		}
		var fs []string
		for _, k := range kinds {
			if n := r.Faults[k]; n > 0 {
				fs = append(fs, fmt.Sprintf("%s=%d", k, n))
			}
		}
		sort.Strings(fs)
		fmt.Fprintf(&b, " %s", strings.Join(fs, ","))
		if r.err != "" {
			fmt.Fprintf(&b, "  [%s]", r.err)
		}
		b.WriteString("\n")
	}
	return b.String()
}
