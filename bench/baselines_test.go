package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

func postgresURL(t testing.TB) string {
	t.Helper()
	u := os.Getenv("SHAKE_TEST_POSTGRES")
	if u == "" {
		t.Skip("skipping: SHAKE_TEST_POSTGRES is unset (CI sets postgres://postgres@127.0.0.1:5432/test?sslmode=disable)")
	}
	return u
}

func TestPostgresDispenser(t *testing.T) {
	url := postgresURL(t)
	ctx := context.Background()
	d, err := NewPostgresDispenser(ctx, url, 300, 4)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	var mu sync.Mutex
	seen := map[uint64]bool{}
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < 75; i++ {
				id, amount, _, err := d.take(ctx, uint64(w+1))
				mu.Lock()
				if err != nil || seen[id] || amount != baselineAmount(id) {
					t.Errorf("take: id %d amount %d dup %v err %v", id, amount, seen[id], err)
				}
				seen[id] = true
				mu.Unlock()
			}
		}(w)
	}
	wg.Wait()
	if _, _, _, err := d.take(ctx, 9); !errors.Is(err, errNoTicket) {
		t.Fatalf("take from an empty table: %v", err)
	}
	if n, err := d.Taken(ctx); err != nil || n != 300 {
		t.Fatalf("taken %d %v", n, err)
	}
}

func TestParseBaselines(t *testing.T) {
	got, err := ParseBaselines("bare, redis,bare,postgres")
	if err != nil || strings.Join(got, ",") != "bare,redis,postgres" {
		t.Fatalf("%v %v", got, err)
	}
	if _, err := ParseBaselines("bare,mysql"); !errors.Is(err, ErrConfig) {
		t.Fatalf("unknown baseline accepted: %v", err)
	}
}

func TestRunBaselines(t *testing.T) {
	cfg := Config{SessionKey: testSessionKey, EdgeURLs: []string{"unused:1"}, Users: 20, Rate: 200, Duration: 300 * time.Millisecond}
	kinds := []string{BaselineBare, BaselineRedis, BaselinePostgres}
	var log bytes.Buffer
	opt := BaselineOptions{Kinds: kinds, Log: &log}
	// An unreachable Redis and an unset PostgreSQL are skipped with the reason.
	if os.Getenv("SHAKE_TEST_POSTGRES") == "" {
		opt.PostgresURL = ""
	}
	bl, err := RunBaselines(context.Background(), cfg, opt)
	if err != nil {
		t.Fatal(err)
	}
	if len(bl) != 3 {
		t.Fatalf("%d baselines", len(bl))
	}
	for _, b := range bl {
		t.Logf("%s: skipped %q", b.Name, b.Skipped)
		if b.Result == nil {
			if b.Skipped == "" {
				t.Fatalf("%s: no result and no reason", b.Name)
			}
			continue
		}
		s := b.Result.Shake
		if s.Responses != b.Result.Arrivals || len(s.Errors) != 0 || b.Result.Label != b.Name {
			t.Fatalf("%s: arrivals %d responses %d errors %v", b.Name, b.Result.Arrivals, s.Responses, s.Errors)
		}
		if b.Name != BaselineBare && s.Results["won"] != s.Responses {
			t.Fatalf("%s: %v, every shake should win from a pool sized for the run", b.Name, s.Results)
		}
	}
	if bl[0].Result == nil {
		t.Fatal("the bare baseline needs nothing and must run")
	}
	bad := opt
	bad.Kinds = []string{BaselineRedis}
	bad.RedisAddr = "127.0.0.1:1"
	bl, _ = RunBaselines(context.Background(), cfg, bad)
	if bl[0].Result != nil || !strings.Contains(bl[0].Skipped, "not reachable") {
		t.Fatalf("unreachable Redis: %+v", bl[0])
	}
}

func sampleResult(t *testing.T) *Result {
	t.Helper()
	_, edge, verifier := newFakeChain(t)
	res, err := Run(context.Background(), Config{EdgeURLs: []string{edge}, VerifierURL: verifier,
		SessionKey: testSessionKey, Users: 50, Rate: 300, Duration: 1200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	bl, err := RunBaselines(context.Background(), Config{EdgeURLs: []string{edge}, SessionKey: testSessionKey,
		Users: 50, Rate: 300, Duration: 1200 * time.Millisecond}, BaselineOptions{Kinds: []string{BaselineBare, BaselinePostgres}, PostgresURL: "postgres://127.0.0.1:1/x"})
	if err != nil {
		t.Fatal(err)
	}
	res.Baselines = bl
	return res
}

func TestReportHTMLSelfContained(t *testing.T) {
	t.Parallel() // sampleResult waits on two 1.2 s runs against a fake chain of its own
	res := sampleResult(t)
	var b bytes.Buffer
	if err := WriteHTML(&b, res); err != nil {
		t.Fatal(err)
	}
	page := b.String()
	if n := strings.Count(page, "<svg"); n != 5 {
		t.Fatalf("%d charts, want 5", n)
	}
	for _, want := range []string{"<polyline", "<rect", "Requests answered per second", "Shake results per second", ">miss<", ">retry (429)<", "time (UTC)", "Latency percentiles", "Result mix",
		"Baselines", "bare", "skipped:", "won", "opened", "</html>"} {
		if !strings.Contains(page, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	// No network: no scheme-qualified URL at all, no script, no external resource.
	if m := regexp.MustCompile(`(?i)(https?:)?//[a-z0-9]|<script|<link|src=|@import|url\(`).FindString(page); m != "" {
		t.Fatalf("report references something external: %q", m)
	}
	if strings.Count(page, "<svg") != strings.Count(page, "</svg>") {
		t.Fatal("unbalanced svg elements")
	}
}

func TestTextSummaryAndJSON(t *testing.T) {
	t.Parallel() // sampleResult waits on two 1.2 s runs against a fake chain of its own
	res := sampleResult(t)
	var b bytes.Buffer
	WriteText(&b, res)
	out := b.String()
	for _, want := range []string{"endpoint", "shake", "open", "p99.9", "shake results: ", "won", "baselines", "bare", "skipped"} {
		if !strings.Contains(out, want) {
			t.Errorf("summary lacks %q:\n%s", want, out)
		}
	}
	j, err := json.Marshal(res)
	if err != nil {
		t.Fatal(err)
	}
	var back Result
	if err := json.Unmarshal(j, &back); err != nil {
		t.Fatal(err)
	}
	if back.Shake.Latency != res.Shake.Latency && back.Shake.Latency.P99 != res.Shake.Latency.P99 {
		t.Fatalf("latency did not round-trip")
	}
	if back.OpenedN != res.OpenedN || len(back.Opened) != len(res.Opened) || back.Open.Results["opened"] != res.Open.Results["opened"] {
		t.Fatal("result did not round-trip")
	}
	for _, key := range []string{`"throughput_rps"`, `"p99.9"`, `"latency_ms"`, `"results"`, `"errors"`, `"status"`, `"series"`, `"baselines"`} {
		if !bytes.Contains(j, []byte(key)) {
			t.Errorf("JSON lacks %s", key)
		}
	}
}

// TestReportShadesWindows: a marked window (the demo's pause) is shaded and labelled on
// every time chart.
func TestReportShadesWindows(t *testing.T) {
	t.Parallel() // sampleResult waits on two 1.2 s runs against a fake chain of its own
	res := sampleResult(t)
	res.Windows = []Window{{Label: "paused", From: 0, To: 1}}
	var b bytes.Buffer
	if err := WriteHTML(&b, res); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(b.String(), `fill="#ffd54f"`); n != 3 {
		t.Errorf("%d shaded windows, want one on each of the 3 time charts", n)
	}
	if !strings.Contains(b.String(), ">paused</text>") {
		t.Error("window label missing")
	}
}
