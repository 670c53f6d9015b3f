package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Commit and reveal from the command line: gen writes DIR/seed (0600) and only its
// SHA-256 in the manifest; inspect --reveal exits 0 on the honest files and 1, naming the
// problem, when a shard file or the seed is not what was committed.
func TestInspectReveal(t *testing.T) {
	t.Parallel()
	keys := keysDir(t)
	out := filepath.Join(t.TempDir(), "camp")
	if code, _, errOut := runCLI(genArgs(keys, out, "--prize", "5000x4")...); code != 0 {
		t.Fatalf("gen: %d %s", code, errOut)
	}
	seed, manifest := filepath.Join(out, "seed"), filepath.Join(out, "manifest.json")
	st, err := os.Stat(seed)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("seed file: %v %v", err, st)
	}
	raw, _ := os.ReadFile(manifest)
	if bytes.Contains(raw, []byte(`"seed":`)) || !bytes.Contains(raw, []byte(`"seed_sha256"`)) {
		t.Fatalf("manifest must hold seed_sha256 and no plain seed:\n%s", raw)
	}
	code, stdout, errOut := runCLI("inspect", "--reveal", seed, manifest)
	if code != 0 || errOut != "" || !strings.Contains(stdout, "OK: every amount") || !strings.Contains(stdout, "4 shard files, 1000 tickets") {
		t.Fatalf("honest reveal: %d\n%s\n%s", code, stdout, errOut)
	}

	// Another seed: the commitment fails.
	other := filepath.Join(t.TempDir(), "seed")
	os.WriteFile(other, []byte(strings.Repeat("ab", 32)+"\n"), 0o600)
	code, stdout, errOut = runCLI("inspect", "--reveal", other, manifest)
	if code != 1 || !strings.Contains(errOut, "not the committed seed") || strings.Count(errOut, "\n") != 1 || !strings.Contains(stdout, "FAILED") {
		t.Fatalf("other seed: %d\n%s\n%s", code, stdout, errOut)
	}
	// A tampered shard: exit 1 naming the shard.
	shard := filepath.Join(out, "edge-002.tickets")
	b, _ := os.ReadFile(shard)
	b[len(b)/2] ^= 1
	os.WriteFile(shard, b, 0o600)
	code, _, errOut = runCLI("inspect", "--reveal", seed, manifest)
	if code != 1 || !strings.Contains(errOut, "shard 2") {
		t.Fatalf("tampered shard: %d %s", code, errOut)
	}
	wantUsage(t, []string{"inspect", "--reveal", filepath.Join(out, "nope"), manifest}, "shake inspect: ", "nope")
	wantUsage(t, []string{"inspect", "--reveal", seed, "--key", filepath.Join(keys, "campaign.key"), manifest}, "shake inspect: --reveal", "--key")
}
