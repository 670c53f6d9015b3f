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

// TestSystemdRoles checks what makes the units operable: every server role has a unit
// (the query server included) and is given its own role's admin key as a credential;
// the edge, verifier and settler a switches file in their state directory; every
// server's admin listener is on 0.0.0.0, where Prometheus can scrape it.
func TestSystemdRoles(t *testing.T) {
	read := func(name string) string {
		b, err := os.ReadFile(filepath.Join(deployDir(t), "systemd", name))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	for unit, role := range map[string]string{"shake-edge@.service": "edge", "shake-verifier@.service": "verifier", "shake-settler.service": "settler", "shake-query.service": "query"} {
		text := read(unit)
		cred := "LoadCredential=admin-" + role + ".key:/etc/shake/keys/admin-" + role + ".key"
		if !strings.Contains(text, cred) || !strings.Contains(text, "--admin-key ${CREDENTIALS_DIRECTORY}/admin-"+role+".key") {
			t.Errorf("%s: not given admin-%s.key as a credential", unit, role)
		}
		if strings.Contains(text, "/admin.key") {
			t.Errorf("%s: given admin.key, which servers refuse", unit)
		}
		if role != "query" && !strings.Contains(text, "--switches /var/lib/shake/") {
			t.Errorf("%s: no --switches file in its state directory", unit)
		}
	}
	for unit, listen := range map[string]string{"shake-edge@.service": "SHAKE_ADMIN_LISTEN=0.0.0.0:9080", "shake-verifier@.service": "SHAKE_ADMIN_LISTEN=0.0.0.0:9081",
		"shake-settler.service": "--listen 0.0.0.0:8082", "shake-reconcile.service": "--listen 0.0.0.0:8084", "shake-query.service": "SHAKE_ADMIN_LISTEN=0.0.0.0:9083"} {
		if !strings.Contains(read(unit), listen) {
			t.Errorf("%s: no admin listener Prometheus can reach (%s)", unit, listen)
		}
	}
	if q := read("shake-query.service"); !strings.Contains(q, "shake query") || !strings.Contains(q, "--ledger-password-file ${CREDENTIALS_DIRECTORY}/ledger-readonly-password") {
		t.Error("shake-query.service does not run the query server with its read-only credentials as a credential file")
	}
}
