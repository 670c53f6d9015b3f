package deploytest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestSystemdVerify runs systemd-analyze verify on every unit (templates as instance
// 0, the binary path pointed at a freshly built shake) and fails on any complaint:
// systemd only warns, and exits 0, on a directive it ignores.
func TestSystemdVerify(t *testing.T) {
	t.Parallel()
	analyze := tool(t, "systemd-analyze", "systemd")
	bin := shakeBinary(t)
	units, err := filepath.Glob(filepath.Join(deployDir(t), "systemd", "*.service"))
	if err != nil || len(units) < 5 {
		t.Fatalf("units: %v %v", units, err)
	}
	dir := t.TempDir()
	var args []string
	for _, u := range units {
		b, err := os.ReadFile(u)
		if err != nil {
			t.Fatal(err)
		}
		text := string(b)
		for _, want := range []string{"NoNewPrivileges=yes", "ProtectSystem=strict", "PrivateTmp=yes", "User=shake"} {
			if !strings.Contains(text, want) {
				t.Errorf("%s is not hardened: no %s", filepath.Base(u), want)
			}
		}
		if strings.Contains(text, "--state") || strings.Contains(text, "--spool") {
			if !strings.Contains(text, "ReadWritePaths=") {
				t.Errorf("%s writes state or spool without ReadWritePaths", filepath.Base(u))
			}
		}
		name := strings.Replace(filepath.Base(u), "@.", "@0.", 1)
		out := filepath.Join(dir, name)
		if err := os.WriteFile(out, []byte(strings.ReplaceAll(text, "/usr/local/bin/shake", bin)), 0o644); err != nil {
			t.Fatal(err)
		}
		args = append(args, out)
	}
	run := func(files []string) string {
		cmd := exec.Command(analyze, append([]string{"verify", "--man=no"}, files...)...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			return err.Error() + ": " + string(out)
		}
		return strings.TrimSpace(string(out))
	}
	if out := run(args); out != "" {
		t.Fatalf("systemd-analyze verify:\n%s", out)
	}
	// The check must be able to fail.
	bad := filepath.Join(dir, "bad.service")
	b, _ := os.ReadFile(args[0])
	os.WriteFile(bad, []byte(strings.Replace(string(b), "ProtectSystem=strict", "ProtectSystem=bogus", 1)), 0o644)
	if out := run([]string{bad}); out == "" {
		t.Fatal("systemd-analyze accepted ProtectSystem=bogus: the check is not running")
	}
}
