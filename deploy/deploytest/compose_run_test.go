//go:build linux

package deploytest

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"shake/ticket"
)

// composeStack is deploy/compose.yaml brought up by podman-compose in a scratch copy of
// deploy/ (its secrets and campaign generated there), as one uniquely named project.
type composeStack struct {
	t               *testing.T
	dir, project    string
	env             []string
	ports           map[string]string // SHAKE_PORT_* name (without the prefix) -> host port
	bin             string            // the host's shake, for keys, gen, ctl, reconcile
	sess            *ticket.SessionKey
	services        map[string]map[string]any
	containerPrefix string
}

// hostImage builds an image FROM scratch holding the host's binary bin and the shared
// libraries it loads, running as 65532 with entrypoint (if any) and the directories
// owned (its writable volumes) owned by that user. No registry is reachable here: this
// is how the proxy and Prometheus of the compose file run in the test, from Debian's
// haproxy and prometheus packages.
func hostImage(t *testing.T, tag, bin string, entrypoint []string, owned ...string) {
	t.Helper()
	ctx := t.TempDir()
	out, err := exec.Command("ldd", bin).Output()
	if err != nil {
		t.Fatalf("ldd %s: %v", bin, err)
	}
	files := []string{bin}
	for _, f := range strings.Fields(string(out)) {
		if strings.HasPrefix(f, "/") {
			files = append(files, f)
		}
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		dst := filepath.Join(ctx, "rootfs", f)
		os.MkdirAll(filepath.Dir(dst), 0o755)
		if err := os.WriteFile(dst, b, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	cf := "FROM scratch\nCOPY rootfs/ /\n"
	for _, d := range owned {
		os.MkdirAll(filepath.Join(ctx, "owned", d), 0o755)
	}
	if len(owned) > 0 {
		cf += "COPY --chown=65532:65532 owned/ /\n"
	}
	cf += "USER 65532:65532\n"
	if entrypoint != nil {
		ep, _ := json.Marshal(entrypoint)
		cf += "ENTRYPOINT " + string(ep) + "\n"
	}
	os.WriteFile(filepath.Join(ctx, "Containerfile"), []byte(cf), 0o644)
	if out, err := buildImage("podman", filepath.Join(ctx, "Containerfile"), tag, ctx); err != nil {
		t.Fatalf("podman build of %s: %v\n%s", bin, err, tail(out, 2000))
	}
	t.Cleanup(func() { exec.Command("podman", "rmi", "-f", tag).Run() })
}

// newComposeStack lays out the scratch deploy/ copy: compose.yaml, the proxy's and
// Prometheus's configuration (scraping every second), keys and a campaign of count
// tickets over two edges, then the documented ownership command.
func newComposeStack(t *testing.T, count int) *composeStack {
	t.Helper()
	var rnd [4]byte
	rand.Read(rnd[:])
	s := &composeStack{t: t, dir: t.TempDir(), project: "shaketest" + hex.EncodeToString(rnd[:]), bin: shakeBinary(t),
		ports: map[string]string{}}
	s.containerPrefix = s.project + "_"
	deploy := deployDir(t)
	for _, f := range []string{"compose.yaml", "haproxy/compose.cfg", "prometheus/rules.yml", "prometheus/prometheus.yml"} {
		b, err := os.ReadFile(filepath.Join(deploy, f))
		if err != nil {
			t.Fatal(err)
		}
		if f == "prometheus/prometheus.yml" {
			b = []byte(strings.ReplaceAll(string(b), "15s", "1s"))
		}
		os.MkdirAll(filepath.Join(s.dir, filepath.Dir(f)), 0o755)
		if err := os.WriteFile(filepath.Join(s.dir, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	s.services = readCompose(t).Services
	s.shake("keys", "init", "--out", filepath.Join(s.dir, "secrets"))
	gen := []string{"gen", "--campaign", "gala", "--key", filepath.Join(s.dir, "secrets", "campaign.key"), "--budget",
		fmt.Sprint(count * 100), "--count", fmt.Sprint(count), "--edges", "2", "--out", filepath.Join(s.dir, "campaign")}
	if hasFlag(s.bin, "gen", "verifiers") {
		gen = append(gen, "--verifiers", "2")
	}
	s.shake(gen...)
	for _, k := range []string{"edge-000.key", "edge-001.key"} {
		os.Rename(filepath.Join(s.dir, "campaign", k), filepath.Join(s.dir, "secrets", k))
	}
	os.Rename(filepath.Join(s.dir, "campaign", "seed"), filepath.Join(s.dir, "seed"))
	os.Rename(filepath.Join(s.dir, "secrets", "admin.key"), filepath.Join(s.dir, "admin.key"))
	// deploy/README.md's command: the keys and the campaign readable by 65532 only.
	s.run("sh", "-c", "chown -R 65532:65532 secrets campaign && chmod -R u=rX,go= secrets campaign")
	sk, err := ticket.ReadKeyFile(filepath.Join(s.dir, "secrets", "session.key"))
	if err != nil {
		t.Fatal(err)
	}
	if s.sess, err = ticket.NewSessionKey(sk); err != nil {
		t.Fatal(err)
	}
	return s
}

// shake runs the host's shake binary in the stack's directory; it fails the test on error.
func (s *composeStack) shake(args ...string) string { return s.run(s.bin, args...) }

func (s *composeStack) run(name string, args ...string) string {
	s.t.Helper()
	out, err := s.try(name, args...)
	if err != nil {
		s.t.Fatalf("%s %v: %v\n%s", name, args, err, tail(out, 3000))
	}
	return string(out)
}

func (s *composeStack) try(name string, args ...string) ([]byte, error) {
	cmd := exec.Command(name, args...)
	cmd.Dir = s.dir
	cmd.Env = append(os.Environ(), s.env...)
	return cmd.CombinedOutput()
}

// compose runs podman-compose on the stack's project.
func (s *composeStack) compose(args ...string) string {
	return s.run("podman-compose", append([]string{"-p", s.project, "-f", "compose.yaml"}, args...)...)
}

// container is the podman name of a service's container.
func (s *composeStack) container(service string) string { return s.containerPrefix + service + "_1" }

// port is the published host address of a SHAKE_PORT_* port.
func (s *composeStack) port(name string) string { return "127.0.0.1:" + s.ports[name] }

// session mints a session token valid for an hour.
func (s *composeStack) session(uid uint64) string {
	return string(s.sess.Mint(nil, uid, time.Now().Add(time.Hour).Unix()))
}

// up publishes every port on a free one, runs the documented first start of each edge
// and brings the stack up; down (with its volumes) is registered for the end, and checks
// that nothing of the project is left.
func (s *composeStack) up(images []string) {
	s.t.Helper()
	s.env = append(s.env, images...)
	for _, p := range []string{"EDGE0_ADMIN", "EDGE1_ADMIN", "VERIFIER0_ADMIN", "VERIFIER1_ADMIN", "PUBLIC", "PROXY_ADMIN",
		"SETTLER", "RECONCILE", "QUERY", "QUERY_ADMIN", "PROMETHEUS"} {
		addr := freePort(s.t)
		s.ports[p] = addr[strings.LastIndex(addr, ":")+1:]
		s.env = append(s.env, "SHAKE_PORT_"+p+"="+s.ports[p])
	}
	s.t.Cleanup(s.down)
	for _, e := range []string{"edge-0", "edge-1"} {
		out := s.compose("run", "--rm", "--no-deps", e, "edge", "--init-state", "--init-only")
		if !strings.Contains(out, "state file created") {
			s.t.Fatalf("first start of %s: %s", e, tail([]byte(out), 2000))
		}
	}
	s.compose("up", "-d")
}

// down stops and removes the project with its volumes and checks that no container of
// it is left, running or not.
func (s *composeStack) down() {
	start := time.Now()
	if out, err := s.try("podman-compose", "-p", s.project, "-f", "compose.yaml", "down", "-v", "-t", "10"); err != nil {
		s.t.Errorf("podman-compose down: %v\n%s", err, tail(out, 2000))
	}
	left, _ := exec.Command("podman", "ps", "-a", "--format", "{{.Names}}", "--filter", "name="+s.project).Output()
	if strings.TrimSpace(string(left)) != "" {
		s.t.Errorf("after down, containers of the project are left: %s", left)
		exec.Command("podman", append([]string{"rm", "-f", "-t", "0"}, strings.Fields(string(left))...)...).Run()
	}
	exec.Command("podman", "network", "rm", "-f", s.project+"_default").Run()
	s.t.Logf("down: %v", time.Since(start).Round(100*time.Millisecond))
}

// waitHealthy runs each service's own healthcheck command (compose.yaml's test, exec
// form) inside its container until it passes: podman-compose 1.0.3 hands podman the
// test wrapped in /bin/sh -c, which an image with no shell cannot run, and podman runs
// healthchecks from systemd timers, which a host without systemd does not have.
func (s *composeStack) waitHealthy(within time.Duration) {
	s.t.Helper()
	deadline := time.Now().Add(within)
	for name, svc := range s.services {
		hc, _ := svc["healthcheck"].(map[string]any)
		test := list(hc["test"])
		if len(test) < 2 || test[0] != "CMD" {
			continue
		}
		args := []string{"exec", s.container(name)}
		for _, a := range test[1:] {
			args = append(args, fmt.Sprint(a))
		}
		for {
			out, err := exec.Command("podman", args...).CombinedOutput()
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				logs, _ := exec.Command("podman", "logs", "--tail", "30", s.container(name)).CombinedOutput()
				s.t.Fatalf("%s not healthy within %v: %v %s\nlogs:\n%s", name, within, err, tail(out, 500), tail(logs, 3000))
			}
			time.Sleep(500 * time.Millisecond)
		}
	}
	waitHTTP(s.t, "http://"+s.port("PROXY_ADMIN")+"/healthz", time.Until(deadline))
}

// loadResult is what the users saw.
type loadResult struct {
	mu      sync.Mutex
	counts  map[string]int
	tickets map[string]uint64 // opened ticket id -> uid
	amount  int64             // the sum of the opened amounts, minor units
	dup     []string
}

// shakeAndOpen has users shake through the proxy and open what they win, counting every
// answer; an opened ticket id seen for two users is recorded as issued twice.
func (s *composeStack) shakeAndOpen(uids []uint64, res *loadResult) {
	base := "http://" + s.port("PUBLIC")
	count := func(k string) { res.mu.Lock(); res.counts[k]++; res.mu.Unlock() }
	parallel(len(uids), func(i int) error {
		uid, sess := uids[i], s.session(uids[i])
		a, err := post(base+"/v1/shake", sess, "")
		if err != nil {
			count("shake error")
			return nil
		}
		var won struct{ Result, Token string }
		if a.status != 200 || json.Unmarshal(a.body, &won) != nil || won.Result != "won" {
			count(fmt.Sprintf("shake %d %s", a.status, won.Result))
			return nil
		}
		for attempt := 0; attempt < 20; attempt++ {
			a, err = post(base+"/v1/open", sess, `{"token":"`+won.Token+`"}`)
			if err == nil && a.status != 503 {
				break
			}
			time.Sleep(250 * time.Millisecond) // the client retries the same token
		}
		if err != nil {
			count("open error")
			return nil
		}
		count(fmt.Sprintf("open %d", a.status))
		var opened struct {
			Ticket string
			Amount int64
		}
		if a.status == 200 && json.Unmarshal(a.body, &opened) == nil {
			res.mu.Lock()
			if prev, ok := res.tickets[opened.Ticket]; ok && prev != uid {
				res.dup = append(res.dup, opened.Ticket)
			}
			if _, ok := res.tickets[opened.Ticket]; !ok {
				res.amount += opened.Amount
			}
			res.tickets[opened.Ticket] = uid
			res.mu.Unlock()
		}
		return nil
	})
}

// randomUIDs returns n distinct uids over the whole uint64 range.
func randomUIDs(n int, seed uint64) []uint64 {
	rng := mrand.New(mrand.NewPCG(seed, seed+1))
	seen := map[uint64]bool{}
	var uids []uint64
	for len(uids) < n {
		u := rng.Uint64N(math.MaxUint64)
		if !seen[u] {
			seen[u] = true
			uids = append(uids, u)
		}
	}
	return uids
}
