package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// badSwitchesFile writes a switches document with an unknown field, mode 0600.
func badSwitchesFile(t *testing.T) string {
	t.Helper()
	sw := filepath.Join(t.TempDir(), "switches.json")
	if err := os.WriteFile(sw, []byte(`{"version":3,"bogus":1}`), 0o600); err != nil {
		t.Fatal(err)
	}
	return sw
}

// wantOneLineRefusal checks a start refused as bad input: exit 2 and exactly one line
// on stderr naming --switches and the file.
func wantOneLineRefusal(t *testing.T, what string, cmd *exec.Cmd, sw string) {
	t.Helper()
	var stderr strings.Builder
	cmd.Stderr = &stderr
	cmd.Run()
	lines := strings.Split(strings.TrimRight(stderr.String(), "\n"), "\n")
	if code := cmd.ProcessState.ExitCode(); code != 2 || len(lines) != 1 ||
		!strings.Contains(lines[0], "--switches") || !strings.Contains(lines[0], sw) {
		t.Errorf("%s with a bad switches file: exit %d, want 2 and one line naming --switches and %s:\n%s",
			what, code, sw, stderr.String())
	}
}

// TestBadSwitchesFileEdgeWritesNothing: an edge started with --init-state and a bad
// switches file is refused before it creates its state file, so the corrected start
// with the same --init-state command line is not refused for a file the failed one left.
func TestBadSwitchesFileEdgeWritesNothing(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("whole-process test")
	}
	f := newCampaign(t, 20, 1)
	sw := badSwitchesFile(t)
	state := filepath.Join(t.TempDir(), "edge.state")
	args := f.edgeArgs(t, 0, "--state", state, "--admin-key", f.key("admin-edge.key"), "--switches", sw)
	wantOneLineRefusal(t, "edge", exec.Command(shakeBinary(t), args...), sw)
	if _, err := os.Stat(state); !os.IsNotExist(err) {
		t.Errorf("the refused edge left its state file %s behind (stat: %v)", state, err)
	}
}

// TestBadSwitchesFileSettlerWritesNothing: a settler given a bad switches file is
// refused before it creates, migrates or funds its ledger.
func TestBadSwitchesFileSettlerWritesNothing(t *testing.T) {
	t.Parallel()
	e := newSettlerEnv(t, 20)
	sw := badSwitchesFile(t)
	db := filepath.Join(t.TempDir(), "ledger.db")
	cmd := exec.Command(e.bin, "settler", "--brokers", e.broker, "--min-replication", "1", "--ledger", "sqlite://"+db,
		"--manifest", e.manifest, "--key", filepath.Join(e.dir, "campaign.key"), "--listen", "127.0.0.1:0", "--switches", sw)
	wantOneLineRefusal(t, "settler", cmd, sw)
	if _, err := os.Stat(db); !os.IsNotExist(err) {
		t.Errorf("the refused settler created its ledger %s (stat: %v)", db, err)
	}
}

// TestBadSwitchesFileVerifierWritesNothing: a verifier given a bad switches file is
// refused before it creates its spool.
func TestBadSwitchesFileVerifierWritesNothing(t *testing.T) {
	t.Parallel()
	e := newSettlerEnv(t, 20)
	sw := badSwitchesFile(t)
	spool := filepath.Join(t.TempDir(), "spool")
	cmd := exec.Command(e.bin, "verifier", "--manifest", e.manifest, "--key", filepath.Join(e.dir, "campaign.key"),
		"--session-key", filepath.Join(e.dir, "session.key"), "--brokers", e.broker, "--min-replication", "1",
		"--spool", spool, "--listen", "127.0.0.1:0", "--switches", sw)
	wantOneLineRefusal(t, "verifier", cmd, sw)
	if _, err := os.Stat(spool); !os.IsNotExist(err) {
		t.Errorf("the refused verifier created its spool %s (stat: %v)", spool, err)
	}
}

// TestVerifierWrongKeyOneLine: a verifier given a campaign.key that is not the
// manifest's is refused on one line naming the manifest, before it asks Kafka anything
// (no topic-check log lines ahead of the message) and before it creates its spool.
func TestVerifierWrongKeyOneLine(t *testing.T) {
	t.Parallel()
	e := newSettlerEnv(t, 20)
	spool := filepath.Join(t.TempDir(), "spool")
	cmd := exec.Command(e.bin, "verifier", "--manifest", e.manifest, "--key", filepath.Join(e.dir, "session.key"),
		"--session-key", filepath.Join(e.dir, "session.key"), "--brokers", e.broker, "--min-replication", "1",
		"--spool", spool, "--listen", "127.0.0.1:0")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	cmd.Run()
	lines := strings.Split(strings.TrimRight(stderr.String(), "\n"), "\n")
	if code := cmd.ProcessState.ExitCode(); code != 2 || len(lines) != 1 || !strings.Contains(lines[0], e.manifest) ||
		!strings.Contains(lines[0], "key") {
		t.Errorf("verifier with the wrong campaign key: exit %d, want 2 and one line naming %s and the key:\n%s",
			code, e.manifest, stderr.String())
	}
	if _, err := os.Stat(spool); !os.IsNotExist(err) {
		t.Errorf("the refused verifier created its spool %s (stat: %v)", spool, err)
	}
}
