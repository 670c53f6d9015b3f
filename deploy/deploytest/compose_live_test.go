//go:build linux

package deploytest

import (
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestComposeRuns brings deploy/compose.yaml up under Debian's podman-compose with the
// image built from the Dockerfile's run-time stage (and the proxy and Prometheus from
// Debian's haproxy and prometheus, no registry being reachable): every service passes its
// own healthcheck; shake ctl pause from the host reaches both edges and a restarted edge
// comes back paused; thousands of users shake through the proxy and open what they win
// while an edge and the settler are killed (podman kill -s KILL) and started again; no
// open answers 421, no ticket is opened by two users, and every opened ticket is posted
// (count and amount, through the query API); reconcile passes; Prometheus has every
// target up; down leaves no container.
func TestComposeRuns(t *testing.T) {
	if testing.Short() {
		t.Skip("builds three images and runs the whole compose stack")
	}
	tool(t, "podman-compose", "podman-compose")
	haproxy, prom := tool(t, "haproxy", "haproxy"), tool(t, "prometheus", "prometheus")
	imageBuilder(t)
	t0 := time.Now()
	s := newComposeStack(t, 20000)
	images := []string{"SHAKE_IMAGE=localhost/" + s.project + "-shake:test", "SHAKE_PROXY_IMAGE=localhost/" + s.project + "-haproxy:test",
		"SHAKE_PROMETHEUS_IMAGE=localhost/" + s.project + "-prometheus:test"}
	buildRuntimeImage(t, "podman", strings.TrimPrefix(images[0], "SHAKE_IMAGE="))
	hostImage(t, strings.TrimPrefix(images[1], "SHAKE_PROXY_IMAGE="), haproxy, nil)
	hostImage(t, strings.TrimPrefix(images[2], "SHAKE_PROMETHEUS_IMAGE="), prom, []string{prom}, "/prometheus")
	t1 := time.Now()
	s.up(images)
	s.waitHealthy(2 * time.Minute)
	t2 := time.Now()
	t.Logf("images %v, up and healthy %v", t1.Sub(t0).Round(100*time.Millisecond), t2.Sub(t1).Round(100*time.Millisecond))

	s.pausedSurvivesRestart()
	res := &loadResult{counts: map[string]int{}, tickets: map[string]uint64{}}
	uids := randomUIDs(3000, 7)
	s.shakeAndOpen(uids[:1000], res)
	killed := make(chan struct{})
	go func() {
		defer close(killed)
		time.Sleep(300 * time.Millisecond)
		s.run("podman", "kill", "-s", "KILL", s.container("edge-1"), s.container("settler"))
	}()
	s.shakeAndOpen(uids[1000:2500], res)
	<-killed
	// podman kill is a stop by the user: the restart policy leaves the containers down.
	s.run("podman", "start", s.container("edge-1"), s.container("settler"))
	s.waitHealthy(time.Minute)
	s.shakeAndOpen(uids[2500:], res)
	t3 := time.Now()
	t.Logf("load %v: %d users through the proxy: %v", t3.Sub(t2).Round(100*time.Millisecond), len(uids), res.counts)
	if len(res.dup) > 0 || res.counts["open 421"] > 0 || res.counts["open 200"] < 2000 {
		t.Fatalf("tickets opened by two users: %v; answers: %v (want no 421, at least 2000 opened)", res.dup, res.counts)
	}
	s.allPosted(res)
	s.shake("reconcile", "--manifest", filepath.Join(s.dir, "campaign", "manifest.json"), "--key",
		filepath.Join(s.dir, "secrets", "campaign.key"), "--ledger", "sqlite://"+s.volume("ledger")+"/ledger.db")
	s.targetsUp(8)
	t.Logf("checks %v", time.Since(t3).Round(100*time.Millisecond))
}

// pausedSurvivesRestart pauses the event from the host with shake ctl and the operator's
// admin.key through both edges' published admin listeners, restarts edge-0's container,
// and checks that it comes back paused (its switches file is on its volume) and that
// every shake through the proxy answers closed; then resumes.
func (s *composeStack) pausedSurvivesRestart() {
	t := s.t
	t.Helper()
	ctl := func(verb string) string {
		return s.shake("ctl", "--admin-key", filepath.Join(s.dir, "admin.key"), "--servers",
			s.port("EDGE0_ADMIN")+","+s.port("EDGE1_ADMIN"), verb)
	}
	ctl("pause")
	s.run("podman", "restart", s.container("edge-0"))
	s.waitHealthy(time.Minute)
	if out := ctl("show"); strings.Count(out, "paused=true") != 2 {
		t.Fatalf("after a restart of edge-0, not both edges paused:\n%s", out)
	}
	for i := uint64(0); i < 6; i++ {
		a, err := post("http://"+s.port("PUBLIC")+"/v1/shake", s.session(i), "")
		if err != nil || a.status != 200 || !strings.Contains(string(a.body), `"result":"closed"`) {
			t.Fatalf("shake while paused: %v %d %s", err, a.status, a.body)
		}
	}
	ctl("resume")
}

// allPosted waits until the query API reports every opened ticket settled, in count
// and in amount.
func (s *composeStack) allPosted(res *loadResult) {
	s.t.Helper()
	var c struct {
		SettledTickets int64 `json:"settled_tickets"`
		SettledAmount  int64 `json:"settled_amount"`
	}
	var err error
	for deadline := time.Now().Add(90 * time.Second); time.Now().Before(deadline); time.Sleep(time.Second) {
		err = getJSON("http://"+s.port("QUERY")+"/v1/campaigns/gala", &c)
		if err == nil && c.SettledTickets == int64(len(res.tickets)) && c.SettledAmount == res.amount {
			s.t.Logf("posted: %d tickets, %d minor units, as opened", c.SettledTickets, c.SettledAmount)
			return
		}
	}
	s.t.Fatalf("opened %d tickets (%d minor units); the query API says %+v (%v)", len(res.tickets), res.amount, c, err)
}

// volume is the host path of one of the project's named volumes.
func (s *composeStack) volume(name string) string {
	out := s.run("podman", "volume", "inspect", "--format", "{{.Mountpoint}}", s.project+"_"+name)
	return strings.TrimSpace(out)
}

// targetsUp waits until the stack's Prometheus has n targets, every one up.
func (s *composeStack) targetsUp(n int) {
	s.t.Helper()
	var last string
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(time.Second) {
		var r struct {
			Data struct {
				ActiveTargets []struct {
					ScrapeURL, Health, LastError string
				}
			}
		}
		if err := getJSON("http://"+s.port("PROMETHEUS")+"/api/v1/targets", &r); err != nil {
			last = err.Error()
			continue
		}
		up := 0
		b, _ := json.Marshal(r.Data.ActiveTargets)
		last = string(b)
		for _, tg := range r.Data.ActiveTargets {
			if tg.Health == "up" {
				up++
			}
		}
		if len(r.Data.ActiveTargets) == n && up == n {
			s.t.Logf("Prometheus: %d targets, every one up", n)
			return
		}
	}
	logs, _ := exec.Command("podman", "logs", "--tail", "20", s.container("prometheus")).CombinedOutput()
	s.t.Fatalf("Prometheus: want %d targets up, have %s\n%s", n, last, tail(logs, 2000))
}
