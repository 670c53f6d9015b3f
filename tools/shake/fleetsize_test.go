package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"shake/ticket"
)

// TestVerifierFleetSizeIsSigned: gen --verifiers V records verifiers in the signed
// manifest; a verifier whose --uid-shard names another V, or none while V > 1, does not
// start (exit 2, naming --uid-shard); an edited verifiers fails the signature.
func TestVerifierFleetSizeIsSigned(t *testing.T) {
	f := newCampaign(t, 20, 1, "--verifiers", "2")
	man := filepath.Join(f.out, "manifest.json")
	key, _ := ticket.ReadKeyFile(f.key("campaign.key"))
	m, err := ticket.LoadManifestKey(man, key)
	if err != nil || m.Verifiers != 2 || m.VerifierCount() != 2 {
		t.Fatalf("manifest verifiers %d, %v", m.Verifiers, err)
	}
	base := []string{"verifier", "--manifest", man, "--key", f.key("campaign.key"), "--session-key", f.key("session.key"),
		"--brokers", "127.0.0.1:1", "--spool", t.TempDir(), "--listen", "127.0.0.1:0"}
	for _, c := range []struct{ shard, want string }{
		{"", "give this one --uid-shard I/2"},
		{"0/1", "0/1 names a fleet of 1 verifiers, but manifest " + man + " signs 2"},
		{"1/3", "signs 2 (verifiers)"},
	} {
		args := base
		if c.shard != "" {
			args = append(append([]string{}, base...), "--uid-shard", c.shard)
		}
		code, _, e := runCLI(args...)
		if code != 2 || !strings.HasPrefix(e, "shake verifier: --uid-shard: ") || !strings.Contains(e, c.want) {
			t.Errorf("--uid-shard %q against verifiers 2: exit %d %q", c.shard, code, e)
		}
	}
	// The right V passes this check (and fails later, at the unreachable Kafka).
	code, out, e := runCLI(append(append([]string{}, base...), "--uid-shard", "1/2", "--dry-run")...)
	if strings.Contains(e+out, "uid-shard: ") || code == 0 {
		t.Errorf("--uid-shard 1/2 against verifiers 2: exit %d %s%s", code, out, e)
	}

	// Widening the fleet by editing the manifest breaks its signature.
	b, _ := os.ReadFile(man)
	var raw map[string]any
	json.Unmarshal(b, &raw)
	raw["verifiers"] = 1
	b, _ = json.Marshal(raw)
	os.WriteFile(man, b, 0o644)
	if _, err := ticket.LoadManifestKey(man, key); err == nil {
		t.Error("a manifest whose verifiers was edited still verifies")
	}
	wantUsage(t, []string{"gen", "--campaign", "c", "--key", f.key("campaign.key"), "--budget", "100", "--count", "10",
		"--edges", "1", "--out", t.TempDir(), "--verifiers", "0"}, "shake gen: ", "--verifiers")
}
