package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"shake/ticket"
)

// TestServersRefuseWrongKeys starts the real edge and verifier with keys that are well
// formed but not the campaign's: each must exit 2 with one line naming the key, instead
// of serving tokens that nobody can open.
func TestServersRefuseWrongKeys(t *testing.T) {
	t.Parallel()
	bin := shakeBinary(t)
	dir := t.TempDir()
	out := filepath.Join(dir, "camp")
	if code, _, errOut := runCLI("keys", "init", "--out", dir); code != 0 {
		t.Fatalf("keys init: %s", errOut)
	}
	if code, _, errOut := runCLI("gen", "--campaign", "kc", "--key", filepath.Join(dir, "campaign.key"),
		"--budget", "1000", "--count", "100", "--edges", "2", "--out", out); code != 0 {
		t.Fatalf("gen: %s", errOut)
	}
	m, err := ticket.LoadManifest(filepath.Join(out, "manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	if m.Shards[0].KeyCheck == "" || m.Shards[0].KeyCheck == m.Shards[1].KeyCheck {
		t.Fatalf("manifest key checks missing or equal: %q %q", m.Shards[0].KeyCheck, m.Shards[1].KeyCheck)
	}
	// A random key under the right name, and shard 1's key renamed to shard 0's.
	randomKey := filepath.Join(dir, "random", "edge-000.key")
	renamed := filepath.Join(dir, "renamed", "edge-000.key")
	os.MkdirAll(filepath.Dir(randomKey), 0o700)
	os.MkdirAll(filepath.Dir(renamed), 0o700)
	if err := ticket.WriteKeyFile(randomKey, ticket.NewKey()); err != nil {
		t.Fatal(err)
	}
	k1, _ := os.ReadFile(filepath.Join(out, "edge-001.key"))
	if err := ticket.WriteKeyFile(renamed, k1); err != nil {
		t.Fatal(err)
	}
	wrongCampaignKey := filepath.Join(dir, "other.key")
	if err := ticket.WriteKeyFile(wrongCampaignKey, ticket.NewKey()); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		args []string
	}{
		{"edge random key", []string{"edge", "--tickets", filepath.Join(out, "edge-000.tickets"), "--key", randomKey,
			"--session-key", filepath.Join(dir, "session.key"), "--state", filepath.Join(dir, "s1"), "--listen", "127.0.0.1:0"}},
		{"edge other shard's key", []string{"edge", "--tickets", filepath.Join(out, "edge-000.tickets"), "--key", renamed,
			"--session-key", filepath.Join(dir, "session.key"), "--state", filepath.Join(dir, "s2"), "--listen", "127.0.0.1:0"}},
		{"verifier other campaign key", []string{"verifier", "--manifest", filepath.Join(out, "manifest.json"),
			"--key", wrongCampaignKey, "--session-key", filepath.Join(dir, "session.key"), "--brokers", "127.0.0.1:1",
			"--spool", filepath.Join(dir, "spool"), "--listen", "127.0.0.1:0"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cmd := exec.Command(bin, c.args...)
			b, err := cmd.CombinedOutput()
			ee, ok := err.(*exec.ExitError)
			if !ok || ee.ExitCode() != 2 {
				t.Fatalf("exit %v, want 2; output:\n%s", err, b)
			}
			lines := strings.Split(strings.TrimSpace(string(b)), "\n")
			last := lines[len(lines)-1]
			if !strings.Contains(last, "not the key") || !strings.Contains(last, "does not match") {
				t.Fatalf("last line does not say the key is wrong: %q", last)
			}
		})
	}
}
