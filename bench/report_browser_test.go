package bench

import (
	"bufio"
	"bytes"
	"context"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"shake/ticket"
)

// sampleEvent is an event around res: two shards emptying, settlement following the
// opens, one interval where nothing was committed (NaN lag), one unreadable shard.
func sampleEvent(res *Result) *Event {
	ev := &Event{Campaign: "gala", Currency: "CNY", Budget: 5_640_00, Tickets: 3000, Shards: []string{"edge-000", "edge-001"},
		Prizes: []ticket.Prize{{Amount: 1888, Count: 3}},
		Ran:    [][2]string{{"shake", "(devel)"}, {"machine", "2 cores"}}}
	for i := 0; i <= 4; i++ {
		lag := 0.02 * float64(i)
		if i == 2 {
			lag = math.NaN()
		}
		left1 := float64(1500 - 300*i)
		if i == 3 {
			left1 = math.NaN()
		}
		ev.Samples = append(ev.Samples, EventSample{At: res.Started.Add(time.Duration(i) * 400 * time.Millisecond),
			TicketsLeft: []float64{float64(1500 - 250*i), left1}, SettledTickets: float64(100 * i), SettledAmount: float64(18800 * i),
			SettleLagP99: lag, KafkaLag: float64(5 - i)})
	}
	return ev
}

// chromium finds a headless Chromium (.ci/run installs the Debian package).
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Skip("no chromium on PATH (apt-get install chromium; .ci/run installs it)")
	return ""
}

// browse loads path in headless Chromium with every network request sent to a proxy
// of the test's, and returns the DOM it built, its log, and how many connections the
// proxy was asked for.
func browse(t *testing.T, bin, path string) (dom, log string, requests int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var n atomic.Int64
	var mu sync.Mutex
	var asked []string
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.SetReadDeadline(time.Now().Add(time.Second))
			line, _ := bufio.NewReader(c).ReadString('\n')
			if !browserOwn(line) {
				n.Add(1)
			}
			mu.Lock()
			asked = append(asked, strings.TrimSpace(line))
			mu.Unlock()
			c.Close()
		}
	}()
	defer func() {
		mu.Lock()
		defer mu.Unlock()
		if len(asked) > 0 {
			t.Logf("%s asked the proxy for: %q", filepath.Base(path), asked)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	// The browser's own background traffic (updates, safe browsing...) is turned off, so
	// that whatever reaches the proxy was asked for by the page.
	cmd := exec.CommandContext(ctx, bin, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-extensions",
		"--disable-default-apps", "--no-pings", "--disable-domain-reliability", "--safebrowsing-disable-auto-update",
		"--user-data-dir="+t.TempDir(), "--proxy-server=http://"+ln.Addr().String(), "--proxy-bypass-list=<-loopback>",
		"--enable-logging=stderr", "--v=0", "--virtual-time-budget=3000", "--dump-dom", "file://"+path)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("chromium: %v\n%s", err, stderr.String())
	}
	return stdout.String(), stderr.String(), n.Load()
}

// browserOwn reports whether a proxied request line is Chromium's own traffic, which
// its flags do not all turn off (the clock check, the component updater, the account
// service), rather than the page's.
func browserOwn(line string) bool {
	f := strings.Fields(line)
	if len(f) < 2 {
		return false
	}
	host := strings.TrimPrefix(f[1], "http://")
	host, _, _ = strings.Cut(host, "/")
	host, _, _ = strings.Cut(host, ":")
	switch host {
	case "clients2.google.com", "update.googleapis.com", "accounts.google.com":
		return true
	}
	return false
}

// consoleErrors returns the page's console messages and script or SVG errors from
// Chromium's log.
func consoleErrors(log string) []string {
	var out []string
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, "CONSOLE") || strings.Contains(l, "Uncaught") || strings.Contains(l, "attribute ") {
			out = append(out, l)
		}
	}
	return out
}

// TestReportRendersInChromium opens the event report in headless Chromium: it renders
// every chart, logs no console error, and makes no network request. Two control pages
// first prove that the checks see a console error and a network request.
func TestReportRendersInChromium(t *testing.T) {
	bin := chromium(t)
	t.Parallel() // sampleResult waits on two 1.2 s runs against a fake chain of its own
	dir := t.TempDir()

	control := filepath.Join(dir, "control.html")
	os.WriteFile(control, []byte(`<!DOCTYPE html><html><body><svg><polyline points="1,NaN"/></svg>`+
		`<script>console.error("control error")</script><img src="http://192.0.2.1/x.png"></body></html>`), 0o644)
	_, log, requests := browse(t, bin, control)
	if errs := consoleErrors(log); len(errs) < 2 || requests == 0 {
		t.Fatalf("the checks are blind: control page gave console errors %q and %d proxied requests", errs, requests)
	}

	res := sampleResult(t)
	res.Windows = []Window{{Label: "paused", From: 0.5, To: 0.9}}
	var page bytes.Buffer
	sections := []ReportSection{{Title: "Verdict", Checks: []Check{{Target: "shake p99", Threshold: "≤ 5ms", Measured: "9ms", Flag: "--max-shake-p99"}}}}
	if err := WriteEventReport(&page, res, "shake demo", sections, sampleEvent(res)); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "report.html")
	if err := os.WriteFile(path, page.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	dom, log, requests := browse(t, bin, path)
	if errs := consoleErrors(log); len(errs) > 0 {
		t.Errorf("console errors:\n%s", strings.Join(errs, "\n"))
	}
	if requests != 0 {
		t.Errorf("the report made %d network requests", requests)
	}
	want := strings.Count(page.String(), "<svg")
	if got := strings.Count(dom, "<svg"); got != want || want < 12 {
		t.Errorf("the browser built %d charts of the %d written (want at least 12)", got, want)
	}
	for _, s := range []string{"Money over time", "The budget burning down (¥5,640.00)", "Tickets left per edge shard",
		"Settlement lag", "The luckiest ten", "The prizes", "¥18.88", "What ran", `class="verdict fail"`, "✗"} {
		if !strings.Contains(dom, s) {
			t.Errorf("the rendered page lacks %q", s)
		}
	}
	if m := regexp.MustCompile(`points="[^"]*(NaN|Inf)`).FindString(page.String()); m != "" {
		t.Errorf("a chart line has a point that is not a number: %s", m)
	}
}
