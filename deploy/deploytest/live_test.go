//go:build linux

package deploytest

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
	_ "modernc.org/sqlite"
)

// proc is one server of the chain.
type proc struct {
	name    string
	cmd     *exec.Cmd
	metrics string // host:port serving /metrics
	job     string
	logs    *os.File
}

// startProc starts the shake binary with args, logging to dir/name.log.
func startProc(t *testing.T, dir, name, job, metrics string, bin string, args ...string) *proc {
	t.Helper()
	logf, err := os.Create(filepath.Join(dir, name+".log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{name: name, cmd: cmd, metrics: metrics, job: job, logs: logf}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("--- %s log (last 2000 bytes):\n%s", name, tail(b, 2000))
		}
	})
	return p
}

// hasFlag reports whether `shake <cmd> -h` lists --flag (the admin listeners are
// being added while this kit is written: scrape them when they exist).
func hasFlag(bin, cmd, flag string) bool {
	out, _ := exec.Command(bin, cmd, "-h").CombinedOutput()
	return strings.Contains(string(out), "-"+flag+" ") || strings.Contains(string(out), "-"+flag+"\n")
}

// promQuery is the answer of /api/v1/query.
type promQuery struct {
	Status string `json:"status"`
	Error  string `json:"error"`
	Data   struct {
		Result []json.RawMessage `json:"result"`
	} `json:"data"`
}

// TestLivePrometheus runs the chain (broker, edge, verifier, settler, reconcile --watch)
// under a little load, has Debian's real Prometheus scrape every role with the kit's
// rules loaded, and checks that every target is up, every role's /metrics passes
// promtool check metrics, every dashboard panel query and every rule evaluates without
// error against the live data, and that ShakeReconcileFailed really fires when a
// posting is corrupted behind the watcher's back (the time from the fault to the alert
// is logged), and that the switches group's alerts fire when shake ctl pauses the
// settler alone. Bounded to about a minute.
func TestLivePrometheus(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("starts the whole chain and a Prometheus")
	}
	prom := tool(t, "prometheus", "prometheus")
	promtool := tool(t, "promtool", "prometheus")
	bin := shakeBinary(t)
	dir := t.TempDir()
	run := func(args ...string) {
		if out, err := exec.Command(bin, args...).CombinedOutput(); err != nil {
			t.Fatalf("shake %v: %v\n%s", args, err, out)
		}
	}
	camp := filepath.Join(dir, "camp")
	run("keys", "init", "--out", dir)
	run("gen", "--campaign", "live", "--key", filepath.Join(dir, "campaign.key"), "--budget", "2000000", "--count", "20000",
		"--edges", "1", "--out", camp)
	manifest := filepath.Join(camp, "manifest.json")
	db := filepath.Join(dir, "ledger.db")
	ledgerURL := "sqlite://" + db

	brokerAddr := freePort(t)
	startProc(t, dir, "broker", "", "", bin, "broker", "--listen", brokerAddr)
	waitTCP(t, brokerAddr)

	var procs []*proc
	// Edge and verifier: /metrics on their admin listener when they have one.
	edgeAddr := freePort(t)
	edgeArgs := []string{"edge", "--tickets", filepath.Join(camp, "edge-000.tickets"), "--key", filepath.Join(camp, "edge-000.key"),
		"--session-key", filepath.Join(dir, "session.key"), "--state", filepath.Join(dir, "edge.state"),
		"--listen", edgeAddr, "--log-format", "json"}
	if hasFlag(bin, "edge", "init-state") {
		edgeArgs = append(edgeArgs, "--init-state")
	}
	edgeMetrics := edgeAddr
	if hasFlag(bin, "edge", "admin-listen") {
		edgeMetrics = freePort(t)
		edgeArgs = append(edgeArgs, "--admin-listen", edgeMetrics, "--admin-key", filepath.Join(dir, "admin-edge.key"))
	}
	procs = append(procs, startProc(t, dir, "edge", "shake-edge", edgeMetrics, bin, edgeArgs...))

	verAddr := freePort(t)
	verArgs := []string{"verifier", "--manifest", manifest, "--key", filepath.Join(dir, "campaign.key"),
		"--session-key", filepath.Join(dir, "session.key"), "--brokers", brokerAddr, "--spool", filepath.Join(dir, "spool"),
		"--listen", verAddr, "--log-format", "json"}
	verMetrics := verAddr
	if hasFlag(bin, "verifier", "admin-listen") {
		verMetrics = freePort(t)
		verArgs = append(verArgs, "--admin-listen", verMetrics, "--admin-key", filepath.Join(dir, "admin-verifier.key"))
	}
	if hasFlag(bin, "verifier", "min-replication") {
		verArgs = append(verArgs, "--min-replication", "1")
	}
	procs = append(procs, startProc(t, dir, "verifier", "shake-verifier", verMetrics, bin, verArgs...))

	setAddr := freePort(t)
	setArgs := []string{"settler", "--brokers", brokerAddr, "--ledger", ledgerURL, "--manifest", manifest,
		"--key", filepath.Join(dir, "campaign.key"), "--listen", setAddr, "--log-format", "json"}
	if hasFlag(bin, "settler", "min-replication") {
		setArgs = append(setArgs, "--min-replication", "1")
	}
	if hasFlag(bin, "settler", "admin-key") {
		setArgs = append(setArgs, "--admin-key", filepath.Join(dir, "admin-settler.key"))
	}
	procs = append(procs, startProc(t, dir, "settler", "shake-settler", setAddr, bin, setArgs...))
	for _, p := range procs {
		waitHTTP(t, "http://"+p.metrics+"/readyz", 30*time.Second)
	}
	recAddr := freePort(t)
	procs = append(procs, startProc(t, dir, "reconcile", "shake-reconcile", recAddr, bin,
		"reconcile", "--manifest", manifest, "--ledger", ledgerURL, "--watch", "1s", "--listen", recAddr, "--log-format", "json"))
	waitHTTP(t, "http://"+recAddr+"/readyz", 30*time.Second)

	// A real Prometheus with the kit's rules, scraping every second.
	promAddr := freePort(t)
	ruleFile, err := os.ReadFile(filepath.Join(deployDir(t), "prometheus", "rules.yml"))
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "rules.yml"), shortenFor(t, ruleFile, "shake.switches"), 0o644)
	cfg := "global: {scrape_interval: 1s, evaluation_interval: 1s}\nrule_files: [rules.yml]\nscrape_configs:\n"
	for _, p := range procs {
		cfg += fmt.Sprintf("  - job_name: %s\n    static_configs: [{targets: [%q]}]\n", p.job, p.metrics)
	}
	os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfg), 0o644)
	startProc(t, dir, "prometheus", "", "", prom, "--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "tsdb"), "--web.listen-address="+promAddr, "--storage.tsdb.retention.time=1h")
	api := "http://" + promAddr + "/api/v1/"
	waitHTTP(t, "http://"+promAddr+"/-/ready", 30*time.Second)

	// Load: winners open, claims are produced, settled and reconciled.
	bench := exec.Command(bin, "bench", "--edge", "http://"+edgeAddr, "--verifier", "http://"+verAddr,
		"--session-key", filepath.Join(dir, "session.key"), "--users", "2000", "--rate", "300", "--duration", "6s", "--think", "10ms")
	if out, err := bench.CombinedOutput(); err != nil {
		t.Fatalf("shake bench: %v\n%s", err, out)
	}

	// Every role's real /metrics is clean for promtool.
	for _, p := range procs {
		resp, err := httpClient.Get("http://" + p.metrics + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		lint := exec.Command(promtool, "check", "metrics")
		lint.Stdin = strings.NewReader(string(body))
		if out, err := lint.CombinedOutput(); err != nil || strings.TrimSpace(string(out)) != "" {
			t.Errorf("promtool check metrics on the %s's /metrics: %v\n%s", p.name, err, out)
		}
	}

	query := func(expr string) (promQuery, error) {
		var q promQuery
		err := getJSON(api+"query?query="+url.QueryEscape(expr), &q)
		if err == nil && q.Status != "success" {
			err = fmt.Errorf("%s: %s", q.Status, q.Error)
		}
		return q, err
	}
	// Wait until every target is up and rate() has two scrapes of the load.
	deadline := time.Now().Add(30 * time.Second)
	for {
		q, err := query(`count(up{job=~"shake-.*"} == 1)`)
		if err == nil && len(q.Data.Result) == 1 && strings.Contains(string(q.Data.Result[0]), fmt.Sprintf(`"%d"`, len(procs))) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not every target is up: %v %s", err, q.Data.Result)
		}
		time.Sleep(200 * time.Millisecond)
	}
	time.Sleep(3 * time.Second)

	// Every dashboard panel query evaluates without error; count those with data.
	var dash struct {
		Panels []struct {
			Type, Title string
			Targets     []struct{ Expr string }
		}
	}
	b, err := os.ReadFile(filepath.Join(deployDir(t), "grafana", "shake.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatal(err)
	}
	panels, withData, queries := 0, 0, 0
	var empty []string
	for _, p := range dash.Panels {
		if p.Type == "row" {
			continue
		}
		panels++
		data := false
		for _, tg := range p.Targets {
			queries++
			q, err := query(dashboardVars.Replace(tg.Expr))
			if err != nil {
				t.Errorf("panel %q: %s: %v", p.Title, tg.Expr, err)
				continue
			}
			data = data || len(q.Data.Result) > 0
		}
		if data {
			withData++
		} else {
			empty = append(empty, p.Title)
		}
	}
	t.Logf("dashboard: %d panels (%d queries) evaluated without error, %d with live data; without data: %v", panels, queries, withData, empty)

	// Every rule has been evaluated by Prometheus, healthy.
	var rules struct {
		Data struct {
			Groups []struct {
				Rules []struct {
					Name, Health, LastError, Type, Query string
				}
			}
		}
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		if err := getJSON(api+"rules", &rules); err != nil {
			t.Fatal(err)
		}
		bad := 0
		for _, g := range rules.Data.Groups {
			for _, r := range g.Rules {
				if r.Health != "ok" {
					bad++
				}
			}
		}
		if bad == 0 || time.Now().After(deadline) {
			break
		}
	}
	nRules, nAlerts := 0, 0
	for _, g := range rules.Data.Groups {
		for _, r := range g.Rules {
			nRules++
			if r.Type == "alerting" {
				nAlerts++
			}
			if r.Health != "ok" || r.LastError != "" {
				t.Errorf("rule %s: health %q, error %q", r.Name, r.Health, r.LastError)
			}
			if _, err := query(r.Query); err != nil {
				t.Errorf("rule %s: %s: %v", r.Name, r.Query, err)
			}
		}
	}
	if want := len(alertNames(t, filepath.Join(deployDir(t), "prometheus", "rules.yml"))); nAlerts != want {
		t.Errorf("Prometheus loaded %d alerts, rules.yml has %d", nAlerts, want)
	}
	t.Logf("rules: %d (%d alerts) evaluated healthy against live data", nRules, nAlerts)
	if q, _ := query(`ALERTS{alertstate="firing"}`); len(q.Data.Result) > 0 {
		t.Errorf("alerts firing on a healthy chain: %s", q.Data.Result)
	}

	// The fault: one posted amount changed behind everyone's back.
	sdb, err := sql.Open("sqlite", "file:"+db+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	defer sdb.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := sdb.ExecContext(ctx, `UPDATE postings SET amount = amount + 1 WHERE id = (SELECT min(id) FROM postings)`)
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		t.Fatal("no posting to corrupt: the load settled nothing")
	}
	fault := time.Now()
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		var alerts struct {
			Data struct {
				Alerts []struct {
					Labels map[string]string
					State  string
				}
			}
		}
		if err := getJSON(api+"alerts", &alerts); err != nil {
			t.Fatal(err)
		}
		fired := false
		for _, a := range alerts.Data.Alerts {
			if a.Labels["alertname"] == "ShakeReconcileFailed" && a.State == "firing" && a.Labels["campaign"] == "live" {
				fired = true
			}
		}
		if fired {
			t.Logf("ShakeReconcileFailed firing %v after the ledger was corrupted (watch 1s, scrape 1s, evaluation 1s)", time.Since(fault).Round(10*time.Millisecond))
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("ShakeReconcileFailed did not fire within 20s of the corruption: %+v", alerts.Data.Alerts)
		}
	}

	// The control plane: an operator pauses the settler alone. The dashboard says so,
	// the settler runs another switches version than the rest, and both alerts of the
	// switches group fire (their for: shortened to 1s in this Prometheus's copy).
	if !hasFlag(bin, "settler", "admin-key") {
		t.Skip("this settler takes no --admin-key: its switches cannot be changed")
	}
	run("ctl", "--admin-key", filepath.Join(dir, "admin.key"), "--servers", setAddr, "set", "settler.paused=true")
	paused := time.Now()
	if l := waitAlert(t, api, "ShakeSettlerPausedLong", 20*time.Second); l["instance"] != setAddr {
		t.Errorf("ShakeSettlerPausedLong fired for %v, want instance %s", l, setAddr)
	}
	waitAlert(t, api, "ShakeSwitchVersionsDiffer", 20*time.Second)
	t.Logf("ShakeSettlerPausedLong and ShakeSwitchVersionsDiffer firing %v after shake ctl paused the settler", time.Since(paused).Round(10*time.Millisecond))
	q, err := query(`max(shake_switch{job=~"shake-.*",switch="settler.paused"})`)
	if err != nil || len(q.Data.Result) != 1 || !strings.Contains(string(q.Data.Result[0]), `"1"`) {
		t.Errorf("the dashboard's settler-paused query: %v %s", err, q.Data.Result)
	}
}

// dashboardVars sets the dashboard's variables as Grafana does with "All" selected.
var dashboardVars = strings.NewReplacer(`$campaign`, `.*`)

// shortenFor rewrites the rules of group so that their alerts fire after 1s instead of
// their `for:` (minutes), so the live test sees them fire.
func shortenFor(t *testing.T, rules []byte, group string) []byte {
	t.Helper()
	var doc struct {
		Groups []map[string]any `yaml:"groups"`
	}
	if err := yaml.Unmarshal(rules, &doc); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, g := range doc.Groups {
		if g["name"] != group {
			continue
		}
		found = true
		for _, r := range g["rules"].([]any) {
			if rule := r.(map[string]any); rule["for"] != nil {
				rule["for"] = "1s"
			}
		}
	}
	if !found {
		t.Fatalf("rules.yml has no group %s", group)
	}
	out, err := yaml.Marshal(&doc)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// waitAlert waits until Prometheus says alert is firing, and returns its labels.
func waitAlert(t *testing.T, api, alert string, within time.Duration) map[string]string {
	t.Helper()
	for deadline := time.Now().Add(within); ; time.Sleep(100 * time.Millisecond) {
		var alerts struct {
			Data struct {
				Alerts []struct {
					Labels map[string]string
					State  string
				}
			}
		}
		if err := getJSON(api+"alerts", &alerts); err != nil {
			t.Fatal(err)
		}
		for _, a := range alerts.Data.Alerts {
			if a.Labels["alertname"] == alert && a.State == "firing" {
				return a.Labels
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not fire within %v: %+v", alert, within, alerts.Data.Alerts)
		}
	}
}

func waitTCP(t *testing.T, addr string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return
		}
	}
	t.Fatalf("%s never accepted a connection", addr)
}
