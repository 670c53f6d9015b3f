package deploytest

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// TestComposeFile parses compose.yaml (no compose binary needed) and checks that every
// shake service is read-only and unprivileged, that keys come from compose secrets
// (files under /run/secrets) and never from the environment, and that every edge keeps
// its state file on a named volume.
func TestComposeFile(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(deployDir(t), "compose.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		Services map[string]map[string]any `yaml:"services"`
		Volumes  map[string]any            `yaml:"volumes"`
	}
	if err := yaml.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	roles := map[string]int{}
	for name, s := range c.Services {
		if s["image"] != "shake:latest" {
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
	for _, r := range []string{"broker", "edge", "verifier", "settler", "reconcile"} {
		if roles[r] == 0 {
			t.Errorf("compose.yaml runs no %s", r)
		}
	}
}
