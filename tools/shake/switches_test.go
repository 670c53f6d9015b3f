package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"shake/ticket"
)

// adminDo sends a request to an admin listener with the given bearer token ("" none).
func adminDo(t *testing.T, method, url, token, body string) (int, string) {
	t.Helper()
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.Header.SetMethod(method)
	req.SetRequestURI(url)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != "" {
		req.SetBodyString(body)
	}
	if err := fasthttp.DoTimeout(req, resp, 15*time.Second); err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	return resp.StatusCode(), string(resp.Body())
}

// switchesOf reads a server's document.
func switchesOf(t *testing.T, admin string) *ticket.Switches {
	t.Helper()
	code, body := adminDo(t, "GET", "http://"+admin+"/admin/switches", "", "")
	if code != 200 {
		t.Fatalf("GET switches: %d %s", code, body)
	}
	d, err := ticket.ParseSwitches([]byte(body))
	if err != nil {
		t.Fatalf("GET switches: %v: %s", err, body)
	}
	return d
}

// serverLineRE matches one server's line of shake ctl's output (show's table too).
var serverLineRE = regexp.MustCompile(`(?m)^http://`)

// ctl runs shake ctl against servers and fails the test unless it exits 0.
func ctl(t *testing.T, keys string, servers []string, args ...string) string {
	t.Helper()
	code, out, errOut := runCLI(append([]string{"ctl", "--admin-key", filepath.Join(keys, "admin.key"),
		"--servers", strings.Join(servers, ",")}, args...)...)
	if code != 0 {
		t.Fatalf("shake ctl %v: exit %d\n%s%s", args, code, out, errOut)
	}
	if n := len(serverLineRE.FindAllString(out, -1)); n != len(servers) {
		t.Errorf("shake ctl %v: %d server lines for %d servers:\n%s", args, n, len(servers), out)
	}
	return out
}

// adminToken is the token a server of role accepts (its admin-ROLE.key's).
func (f *campaignFixture) adminToken(t *testing.T, role string) string {
	k, err := ticket.ReadKeyFile(f.key(ticket.AdminRoleKeyFile(role)))
	if err != nil {
		t.Fatal(err)
	}
	return ticket.AdminToken(k)
}

// shakeResult posts one shake for uid and returns the status and the result word (or
// error code).
func shakeResult(t *testing.T, f *campaignFixture, public string, uid uint64) (int, string) {
	t.Helper()
	code, body, _ := post(t, "http://"+public+"/v1/shake", f.session(uid), "")
	var r struct{ Result, Error string }
	json.Unmarshal([]byte(body), &r)
	return code, r.Result + r.Error
}

// wantRefused checks that a PUT is refused with status and names field, and that the
// document is unchanged.
func wantRefused(t *testing.T, admin, token, body string, status int, field string) {
	t.Helper()
	before := switchesOf(t, admin)
	code, resp := adminDo(t, "PUT", "http://"+admin+"/admin/switches", token, body)
	var e struct{ Error, Field, Message string }
	json.Unmarshal([]byte(resp), &e)
	if code != status || e.Field != field || (field != "" && !strings.Contains(e.Message, field)) {
		t.Errorf("PUT %s: %d %s, want %d naming %q", body, code, resp, status, field)
	}
	if after := switchesOf(t, admin); string(after.JSON()) != string(before.JSON()) {
		t.Errorf("refused PUT %s changed the document: %s -> %s", body, before.JSON(), after.JSON())
	}
}

// TestSwitchesEdge drives every edge switch through a real edge: its effect, its
// metric, its log line, the refusals, the survival across a restart with --switches,
// SIGHUP, and the SIGTERM drain.
func TestSwitchesEdge(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("whole-process test")
	}
	now := time.Now().UTC()
	round := now.Add(-30*time.Minute).Format(time.RFC3339) + "/" + now.Add(30*time.Minute).Format(time.RFC3339)
	f := newCampaign(t, 1000, 1, "--round", round)
	swFile := filepath.Join(t.TempDir(), "edge.switches")
	args := f.edgeArgs(t, 0, "--pace", "--admin-key", f.key("admin-edge.key"), "--switches", swFile, "--drain", "1s")
	p := startServer(t, 0, args...)
	public := p.waitLine(t, edgeReadyRE, 20*time.Second)
	admin := p.adminAddr(t)
	token := f.adminToken(t, "edge")
	servers := []string{admin}

	// The public listener serves none of the admin endpoints.
	for _, path := range []string{"/metrics", "/admin/switches", "/debug/pprof/"} {
		if code, _ := get(t, "http://"+public+path); code != 404 {
			t.Errorf("public %s: %d, want 404", path, code)
		}
	}
	if code, _ := adminDo(t, "PUT", "http://"+public+"/admin/switches", token, `{"version":9}`); code != 404 {
		t.Errorf("public PUT /admin/switches: %d, want 404", code)
	}
	if code, _ := get(t, "http://"+admin+"/debug/pprof/"); code != 401 {
		t.Errorf("admin /debug/pprof/ without the token: %d, want 401", code)
	}
	if code, _ := adminDo(t, "GET", "http://"+admin+"/debug/pprof/", token, ""); code != 200 {
		t.Errorf("admin /debug/pprof/ with the token: %d", code)
	}
	if d := switchesOf(t, admin); d.Version != 0 || d.Edge.Paused || d.Edge.PaceFactor != 1 {
		t.Fatalf("initial switches: %s", d.JSON())
	}

	// Bad documents: refused, the field named, nothing changed.
	wantRefused(t, admin, "", `{"version":1,"edge":{"paused":true}}`, 401, "")
	wantRefused(t, admin, "bm90LXRoZS10b2tlbg", `{"version":1,"edge":{"paused":true}}`, 401, "")
	wantRefused(t, admin, token, `{"version":1,"edge":{"paused":true,"pasued":true}}`, 400, "edge.pasued")
	wantRefused(t, admin, token, `{"version":1,"edgy":{}}`, 400, "edgy")
	wantRefused(t, admin, token, `{"version":1,"edge":{"shed_ratio":1.5}}`, 400, "edge.shed_ratio")
	wantRefused(t, admin, token, `{"version":1,"edge":{"pace_factor":0}}`, 400, "edge.pace_factor")
	wantRefused(t, admin, token, `{"version":1,"edge":{"retry_after_ms":0}}`, 400, "edge.retry_after_ms")
	wantRefused(t, admin, token, `{"version":1,"edge":{"per_user":-1}}`, 400, "edge.per_user")
	wantRefused(t, admin, token, `{"version":1,"edge":{"closed_rounds":[-1]}}`, 400, "edge.closed_rounds")
	wantRefused(t, admin, token, `{"version":1,"edge":{"paused":"yes"}}`, 400, "edge.paused")
	wantRefused(t, admin, token, `{"version":1,"verifier":{"message":"a\u0007b"}}`, 400, "verifier.message")
	wantRefused(t, admin, token, `{"version":0,"edge":{"paused":true}}`, 409, "version")
	wantRefused(t, admin, token, `not json`, 400, "document")
	if code, _, e := runCLI("ctl", "--admin-key", f.key("admin.key"), "--servers", admin, "set", "edge.shed_ratio=2"); code != 2 || !strings.Contains(e, "edge.shed_ratio") {
		t.Errorf("ctl set edge.shed_ratio=2: exit %d %s", code, e)
	}
	if _, err := os.Stat(swFile); err == nil {
		t.Error("a refused change wrote the switches file")
	}

	uid := uint64(1)
	next := func() uint64 { uid++; return uid }
	if code, r := shakeResult(t, f, public, next()); code != 200 || r != "won" {
		t.Fatalf("shake before any switch: %d %s", code, r)
	}

	// pause: every shake answers closed; metric, log line, file.
	out := ctl(t, f.keys, servers, "pause")
	if !strings.Contains(out, "ok version 1") {
		t.Errorf("ctl pause: %s", out)
	}
	if code, r := shakeResult(t, f, public, next()); code != 200 || r != "closed" {
		t.Errorf("shake while paused: %d %s", code, r)
	}
	if v := metricValue(t, admin, `shake_switch{switch="edge.paused"}`); v != 1 {
		t.Errorf("paused gauge %v", v)
	}
	if v := metricValue(t, admin, "shake_switches_version"); v != 1 {
		t.Errorf("version gauge %v", v)
	}
	p.waitLine(t, regexp.MustCompile(`msg="switch changed".*switch=edge.paused old=false new=true version=1`), 5*time.Second)
	if d, err := readSwitchesFile(swFile); err != nil || !d.Edge.Paused || d.Version != 1 {
		t.Errorf("switches file after pause: %v %v", d, err)
	}
	wantRefused(t, admin, token, `{"version":1}`, 409, "version")
	ctl(t, f.keys, servers, "resume")
	if code, r := shakeResult(t, f, public, next()); code != 200 || r != "won" {
		t.Errorf("shake after resume: %d %s", code, r)
	}

	// closed_rounds: the open round answers closed.
	ctl(t, f.keys, servers, "set", "edge.closed_rounds=0")
	if code, body, _ := post(t, "http://"+public+"/v1/shake", f.session(next()), ""); code != 200 || body != `{"result":"closed","next_round_at":null}` {
		t.Errorf("shake in a closed round: %d %s", code, body)
	}
	if v := metricValue(t, admin, `shake_switch{switch="edge.closed_rounds"}`); v != 1 {
		t.Errorf("closed_rounds gauge %v", v)
	}
	ctl(t, f.keys, servers, "set", "edge.closed_rounds=")

	// per_user: the edge was started without a limit; 1 makes a second win a miss.
	u := next()
	if _, r := shakeResult(t, f, public, u); r != "won" {
		t.Fatalf("first shake of %d: %s", u, r)
	}
	if _, r := shakeResult(t, f, public, u); r != "won" {
		t.Fatalf("second shake of %d without a limit: %s", u, r)
	}
	ctl(t, f.keys, servers, "set", "edge.per_user=1")
	u = next()
	if _, r := shakeResult(t, f, public, u); r != "won" {
		t.Errorf("first shake under per_user=1: %s", r)
	}
	if _, r := shakeResult(t, f, public, u); r != "miss" {
		t.Errorf("second shake under per_user=1: %s", r)
	}
	ctl(t, f.keys, servers, "set", "edge.per_user=null")
	if _, r := shakeResult(t, f, public, u); r != "won" {
		t.Errorf("shake after per_user=null: %s", r)
	}

	// pace_factor: half an hour into an hour-long round about 500 tickets are released;
	// at 0.1 only about 50 are, fewer than are already out.
	for i := 0; i < 60; i++ {
		if _, r := shakeResult(t, f, public, next()); r != "won" {
			t.Fatalf("paced shake %d: %s", i, r)
		}
	}
	ctl(t, f.keys, servers, "set", "edge.pace_factor=0.1")
	if _, r := shakeResult(t, f, public, next()); r != "miss" {
		t.Errorf("shake at pace_factor=0.1 with 60+ out: %s", r)
	}
	if v := metricValue(t, admin, `shake_switch{switch="edge.pace_factor"}`); v != 0.1 {
		t.Errorf("pace_factor gauge %v", v)
	}
	ctl(t, f.keys, servers, "set", "edge.pace_factor=1")
	if _, r := shakeResult(t, f, public, next()); r != "won" {
		t.Errorf("shake back at pace_factor=1: %s", r)
	}

	// shed_ratio close to 1 with its own retry hint.
	ctl(t, f.keys, servers, "set", "edge.shed_ratio=0.999", "edge.retry_after_ms=2500")
	code, body, retry := post(t, "http://"+public+"/v1/shake", f.session(next()), "")
	if code != 429 || body != `{"result":"retry","retry_after_ms":2500}` || retry != "3" {
		t.Errorf("shed shake: %d %s Retry-After %q", code, body, retry)
	}
	ctl(t, f.keys, servers, "set", "edge.shed_ratio=0", "edge.paused=true")

	// Restart with the same --switches: the document and its effect survive.
	want := switchesOf(t, admin)
	if code := p.stop(t, syscall.SIGTERM); code != 0 {
		t.Fatalf("edge exit %d", code)
	}
	restart := withoutFlag(args, "--init-state")
	p = startServer(t, 0, restart...)
	public = p.waitLine(t, edgeReadyRE, 20*time.Second)
	admin = p.adminAddr(t)
	if got := switchesOf(t, admin); string(got.JSON()) != string(want.JSON()) {
		t.Errorf("after restart: %s, want %s", got.JSON(), want.JSON())
	}
	if _, r := shakeResult(t, f, public, next()); r != "closed" {
		t.Errorf("shake after restart while paused: %s", r)
	}

	// SIGHUP rereads the file.
	d := *want
	d.Version = want.Version + 1
	d.Edge.Paused = false
	if err := os.WriteFile(swFile, d.JSON(), 0o600); err != nil {
		t.Fatal(err)
	}
	p.cmd.Process.Signal(syscall.SIGHUP)
	p.waitLine(t, regexp.MustCompile(`msg="switch changed".*switch=edge.paused old=true new=false.*source=sighup`), 5*time.Second)
	if _, r := shakeResult(t, f, public, next()); r != "won" {
		t.Errorf("shake after SIGHUP unpaused: %s", r)
	}

	// SIGTERM drains: /readyz 503 while shakes are still served.
	p.cmd.Process.Signal(syscall.SIGTERM)
	time.Sleep(200 * time.Millisecond)
	if code, body := get(t, "http://"+public+"/readyz"); code != 503 || body != `{"status":"draining"}` {
		t.Errorf("readyz while draining: %d %s", code, body)
	}
	if code, r := shakeResult(t, f, public, next()); code != 200 || r != "won" {
		t.Errorf("shake while draining: %d %s", code, r)
	}
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		t.Fatal("edge did not stop after the drain")
	}
}

// TestSwitchesWarnWithoutFile: a server without --switches (or --admin-key) says so.
func TestSwitchesWarnWithoutFile(t *testing.T) {
	if testing.Short() {
		t.Skip("whole-process test")
	}
	f := newCampaign(t, 100, 1)
	p := startServer(t, 0, f.edgeArgs(t, 0)...)
	admin := p.adminAddr(t)
	p.waitLine(t, regexp.MustCompile(`level=WARN msg="no --switches file: switches changed at run time will not survive a restart"`), 5*time.Second)
	p.waitLine(t, regexp.MustCompile(`level=WARN msg="no --admin-key`), 5*time.Second)
	code, body := adminDo(t, "PUT", "http://"+admin+"/admin/switches", f.adminToken(t, "edge"), `{"version":1}`)
	if code != 401 || !strings.Contains(body, "no --admin-key") {
		t.Errorf("PUT on a server without --admin-key: %d %s", code, body)
	}
}

func readSwitchesFile(path string) (*ticket.Switches, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return ticket.ParseSwitches(b)
}

// withoutFlag returns args without the boolean flag name.
func withoutFlag(args []string, name string) []string {
	var out []string
	for _, a := range args {
		if a != name {
			out = append(out, a)
		}
	}
	return out
}
