package deploytest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestPromtoolCheckRules(t *testing.T) {
	promtool := tool(t, "promtool", "prometheus")
	out, err := exec.Command(promtool, "check", "rules", filepath.Join(deployDir(t), "prometheus", "rules.yml")).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "SUCCESS") {
		t.Fatalf("promtool check rules: %v\n%s", err, out)
	}
	out, err = exec.Command(promtool, "check", "config", filepath.Join(deployDir(t), "prometheus", "prometheus.yml")).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool check config: %v\n%s", err, out)
	}
}

// TestPromtoolTestRules runs the alert unit tests and checks that every alert has one.
func TestPromtoolTestRules(t *testing.T) {
	t.Parallel()
	promtool := tool(t, "promtool", "prometheus")
	dir := filepath.Join(deployDir(t), "prometheus")
	cmd := exec.Command(promtool, "test", "rules", "rules_test.yml")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("promtool test rules: %v\n%s", err, out)
	}
	tests, err := os.ReadFile(filepath.Join(dir, "rules_test.yml"))
	if err != nil {
		t.Fatal(err)
	}
	alerts := alertNames(t, filepath.Join(dir, "rules.yml"))
	if len(alerts) < 10 {
		t.Fatalf("only %d alerts found in rules.yml", len(alerts))
	}
	for _, a := range alerts {
		// A case that expects the alert to fire names it with exp_labels under it.
		i := strings.Index(string(tests), "alertname: "+a+"\n")
		if i < 0 || !strings.Contains(string(tests[i:min(len(tests), i+300)]), "exp_labels") {
			t.Errorf("alert %s has no promtool test case in which it fires", a)
		}
	}
}
