package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestSwitchesFileOfAnotherUserRefused: an edge whose --switches file is group-writable
// (or, as root, owned by another user) does not start: exit 2, one line naming the file
// and its mode. A trusted file made group-writable while it runs is not applied on
// SIGHUP.
func TestSwitchesFileOfAnotherUserRefused(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("whole-process test")
	}
	f := newCampaign(t, 100, 1)
	sw := filepath.Join(t.TempDir(), "edge.json")
	// What the attacker planted: 99% of shakes told to come back in an hour.
	os.WriteFile(sw, []byte(`{"version":5,"edge":{"shed_ratio":0.99,"retry_after_ms":3600000}}`), 0o600)
	os.Chmod(sw, 0o664)
	run := func() (int, string) {
		cmd := exec.Command(shakeBinary(t), f.edgeArgs(t, 0, "--switches", sw, "--admin-key", f.key("admin-edge.key"))...)
		out, _ := cmd.CombinedOutput()
		return cmd.ProcessState.ExitCode(), string(out)
	}
	code, out := run()
	if code != 2 || !strings.Contains(out, sw) || !strings.Contains(out, "mode 0664") {
		t.Errorf("group-writable switches file: exit %d\n%s", code, out)
	}
	if os.Geteuid() == 0 {
		os.Chmod(sw, 0o600)
		if err := os.Chown(sw, 65534, 65534); err != nil {
			t.Fatal(err)
		}
		code, out = run()
		if code != 2 || !strings.Contains(out, sw) || !strings.Contains(out, "owned by uid 65534") || !strings.Contains(out, "mode 0600") {
			t.Errorf("foreign-owned switches file: exit %d\n%s", code, out)
		}
		os.Chown(sw, 0, 0)
	} else {
		t.Log("not root: the foreign-owner case needs chown (CI runs as root)")
	}

	// SIGHUP: a trusted file loads; the same file made group-writable is not applied.
	os.WriteFile(sw, []byte(`{"version":5}`), 0o600)
	os.Chmod(sw, 0o600)
	p := startServer(t, 0, f.edgeArgs(t, 0, "--switches", sw, "--admin-key", f.key("admin-edge.key"), "--drain", "0s")...)
	p.waitLine(t, edgeReadyRE, 20*time.Second)
	admin := p.adminAddr(t)
	os.WriteFile(sw, []byte(`{"version":6,"edge":{"paused":true}}`), 0o600)
	os.Chmod(sw, 0o666)
	p.cmd.Process.Signal(syscall.SIGHUP)
	p.waitLine(t, regexp.MustCompile(`SIGHUP: switches file not applied.*mode 0666`), 10*time.Second)
	if d := switchesOf(t, admin); d.Version != 5 || d.Edge.Paused {
		t.Errorf("an untrusted file was applied on SIGHUP: %s", d.JSON())
	}
}
