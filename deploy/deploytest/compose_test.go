package deploytest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// composeShakeImage is the image of compose.yaml's shake services.
const composeShakeImage = "${SHAKE_IMAGE:-localhost/shake:1}"

// composeFile is what the tests read of compose.yaml.
type composeFile struct {
	Services map[string]map[string]any `yaml:"services"`
	Volumes  map[string]any            `yaml:"volumes"`
}

// readCompose parses deploy/compose.yaml.
func readCompose(t *testing.T) composeFile {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(deployDir(t), "compose.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var c composeFile
	if err := yaml.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	return c
}

// TestComposeFile parses compose.yaml (no compose binary needed) and checks that every
// shake service is read-only and unprivileged, that keys come from compose secrets
// (files under /run/secrets) and never from the environment, and that every edge keeps
// its state file on a named volume.
func TestComposeFile(t *testing.T) {
	c := readCompose(t)
	roles := map[string]int{}
	for name, s := range c.Services {
		if s["image"] != composeShakeImage {
			continue
		}
		cmd := list(s["command"])
		if len(cmd) == 0 {
			t.Errorf("%s: no command", name)
			continue
		}
		roles[fmt.Sprint(cmd[0])]++
		if s["read_only"] != true || fmt.Sprint(s["cap_drop"]) != "[ALL]" {
			t.Errorf("%s: not read-only with every capability dropped", name)
		}
		env, _ := s["environment"].(map[string]any)
		for k, v := range env {
			vs := fmt.Sprint(v)
			if strings.HasSuffix(k, "_KEY") && !strings.HasPrefix(vs, "/run/secrets/") {
				t.Errorf("%s: $%s=%q is not a compose secret file", name, k, vs)
			}
			if strings.Contains(k, "PASSWORD") && !strings.HasSuffix(k, "_FILE") {
				t.Errorf("%s: a password in the environment ($%s)", name, k)
			}
		}
		if cmd[0] == "edge" {
			state := fmt.Sprint(env["SHAKE_STATE"])
			ok := false
			for _, v := range list(s["volumes"]) {
				parts := strings.SplitN(fmt.Sprint(v), ":", 3)
				if len(parts) >= 2 && c.Volumes[parts[0]] != nil && strings.HasPrefix(state, parts[1]+"/") {
					ok = true
				}
			}
			if !ok {
				t.Errorf("%s: its state file %s is not on a named volume", name, state)
			}
		}
	}
	for _, r := range []string{"broker", "topics", "edge", "verifier", "settler", "reconcile", "query"} {
		if roles[r] == 0 {
			t.Errorf("compose.yaml runs no %s", r)
		}
	}
}

// TestComposeRoles checks what makes compose.yaml's servers operable: each long-running
// one has a healthcheck that runs shake health (exec form: the image has no shell), its
// admin listener on 0.0.0.0 (reachable from Prometheus and published for shake ctl, not
// the loopback of its own container), a switches file on a volume where it has
// switches, and no admin key but its own role's.
func TestComposeRoles(t *testing.T) {
	c := readCompose(t)
	adminFlag := map[string]string{"edge": "--admin-listen", "verifier": "--admin-listen", "query": "--admin-listen", "settler": "--listen", "reconcile": "--listen"}
	for name, s := range c.Services {
		cmd := strings.Fields(fmt.Sprint(list(s["command"])...))
		if s["image"] != composeShakeImage || len(cmd) == 0 || adminFlag[cmd[0]] == "" {
			continue
		}
		role, joined := cmd[0], " "+strings.Join(cmd, " ")+" "
		if !strings.Contains(joined, " "+adminFlag[role]+" 0.0.0.0:") {
			t.Errorf("%s: %s is not on 0.0.0.0: %v", name, adminFlag[role], cmd)
		}
		hc, _ := s["healthcheck"].(map[string]any)
		if test := list(hc["test"]); len(test) < 3 || test[0] != "CMD" || test[2] != "health" {
			t.Errorf("%s: healthcheck %v is not [CMD, .../shake, health, URL]", name, hc["test"])
		}
		env, _ := s["environment"].(map[string]any)
		if role == "edge" || role == "verifier" || role == "settler" || role == "query" {
			if sw := fmt.Sprint(env["SHAKE_SWITCHES"]); role != "query" && !strings.HasPrefix(sw, "/var/lib/shake/") {
				t.Errorf("%s: no switches file on its volume (SHAKE_SWITCHES=%q)", name, sw)
			}
			if k := fmt.Sprint(env["SHAKE_ADMIN_KEY"]); k != "/run/secrets/admin_"+role+"_key" {
				t.Errorf("%s: admin key %q, want its role's, /run/secrets/admin_%s_key", name, k, role)
			}
		}
		for _, sec := range list(s["secrets"]) {
			if n := fmt.Sprint(sec); strings.HasPrefix(n, "admin_") && n != "admin_"+role+"_key" {
				t.Errorf("%s: given another role's admin key %s", name, n)
			}
		}
	}
}

// TestHAProxyComposeConfigIsRendered: haproxy/compose.cfg is exactly what render.sh
// writes for compose.yaml's services (V = 2), so the two cannot drift apart.
func TestHAProxyComposeConfigIsRendered(t *testing.T) {
	want, err := exec.Command("sh", filepath.Join(deployDir(t), "haproxy", "render.sh"), "-V", "2", "-v", "verifier-%d:8081",
		"-e", "edge-0:8080", "-e", "edge-1:8080").Output()
	if err != nil {
		t.Fatalf("render.sh: %v", err)
	}
	got, err := os.ReadFile(filepath.Join(deployDir(t), "haproxy", "compose.cfg"))
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(want) {
		t.Fatalf("deploy/haproxy/compose.cfg is not render.sh -V 2 -v verifier-%%d:8081 -e edge-0:8080 -e edge-1:8080: render it again")
	}
}
