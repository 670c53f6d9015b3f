package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"shake/ticket"
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

// Prizes from the command line: --dry-run previews the spread and the lucky amounts
// and writes nothing; the campaign then holds exactly the prizes, --max below a prize,
// and inspect prints the same spread from the files.
func TestGenPrizesDryRunAndInspect(t *testing.T) {
	t.Parallel()
	keys := keysDir(t)
	out := filepath.Join(t.TempDir(), "camp")
	args := genArgs(keys, out, "--budget", "200000", "--prize", "8880x3", "--prize", "888x40", "--max", "300",
		"--round", "2030-01-28T12:00:00Z/2030-01-28T12:05:00Z", "--round", "2030-01-28T13:00:00Z/2030-01-28T13:05:00Z")
	code, stdout, errOut := runCLI(append(args, "--dry-run")...)
	if code != 0 || errOut != "" {
		t.Fatalf("dry run: %d %s", code, errOut)
	}
	for _, want := range []string{"dry run: nothing written", "prizes: 8880 x 3, 888 x 40; lucky amounts in [1, 300] for the other 957 tickets",
		"prize 8880 x 3 planned: per shard 1 1 1 0; per round 2 1", "prize 888 x 40 planned: per shard 10 10 10 10; per round 20 20",
		"lucky amounts: 957 tickets, mean", "p99", "shard  round  tickets  prize tickets  largest"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("dry run lacks %q:\n%s", want, stdout)
		}
	}
	if _, err := os.Stat(out); err == nil {
		t.Fatal("the dry run wrote the output directory")
	}
	if code, _, errOut := runCLI(args...); code != 0 {
		t.Fatalf("gen: %d %s", code, errOut)
	}
	code, stdout, errOut = runCLI("inspect", "--key", filepath.Join(keys, "campaign.key"), filepath.Join(out, "manifest.json"))
	if code != 0 || errOut != "" {
		t.Fatalf("inspect: %d\n%s\n%s", code, stdout, errOut)
	}
	for _, want := range []string{"OK: every check passed", "prize 8880 x 3 found: per shard 1 1 1 0; per round 2 1",
		"prize 888 x 40 found: per shard 10 10 10 10; per round 20 20", "amounts in the files: 1000 tickets, mean 200.00", "largest 8880"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("inspect lacks %q:\n%s", want, stdout)
		}
	}
}

// The device and risk rules go into the manifest and every shard header.
func TestGenDeviceRules(t *testing.T) {
	t.Parallel()
	keys := keysDir(t)
	out := filepath.Join(t.TempDir(), "camp")
	if code, _, errOut := runCLI(genArgs(keys, out, "--per-device", "2", "--max-risk", "5")...); code != 0 {
		t.Fatalf("gen: %d %s", code, errOut)
	}
	m, err := ticket.LoadManifest(filepath.Join(out, "manifest.json"))
	if err != nil || m.PerDevice != 2 || ticket.RiskLimit(m.MaxRisk) != 5 {
		t.Fatalf("manifest: %v %+v", err, m)
	}
	sh, err := ticket.LoadShard(filepath.Join(out, "edge-001.tickets"))
	if err != nil || sh.Header.PerDevice != 2 || ticket.RiskLimit(sh.Header.MaxRisk) != 5 {
		t.Fatalf("shard header: %v %+v", err, sh.Header)
	}
	code, stdout, _ := runCLI("inspect", filepath.Join(out, "manifest.json"))
	if code != 0 || !strings.Contains(stdout, "rules     per_user 1, per_device 2, max_risk 5") {
		t.Fatalf("inspect: %d\n%s", code, stdout)
	}
}
