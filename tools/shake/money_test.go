package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"shake/settler"
	"shake/settler/ledger"
	"shake/ticket"
)

// The money-safety refusals through the commands themselves.

func TestGenPerUserAndModes(t *testing.T) {
	keys := keysDir(t)
	for _, tc := range []struct {
		args []string
		want int
	}{{nil, 1}, {[]string{"--per-user", "3"}, 3}, {[]string{"--per-user", "0"}, 0}} {
		out := filepath.Join(t.TempDir(), "camp")
		if code, _, errOut := runCLI(genArgs(keys, out, tc.args...)...); code != 0 {
			t.Fatalf("gen %v: %s", tc.args, errOut)
		}
		key, _ := ticket.ReadKeyFile(filepath.Join(keys, "campaign.key"))
		m, err := ticket.LoadManifestKey(filepath.Join(out, "manifest.json"), key)
		if err != nil {
			t.Fatal(err)
		}
		if m.PerUser != tc.want {
			t.Fatalf("gen %v: per_user %d, want %d", tc.args, m.PerUser, tc.want)
		}
		for _, s := range m.Shards {
			sh, err := ticket.LoadShard(filepath.Join(out, s.File))
			if err != nil || sh.Header.PerUser != tc.want || sh.Header.Generation != m.Generation {
				t.Fatalf("shard %d header per_user %d generation %q: %v", s.Index, sh.Header.PerUser, sh.Header.Generation, err)
			}
			for _, f := range []string{s.File, s.KeyFile} {
				if st, _ := os.Stat(filepath.Join(out, f)); st.Mode().Perm() != 0o600 {
					t.Errorf("%s has mode %04o, want 0600", f, st.Mode().Perm())
				}
			}
		}
	}
	wantUsage(t, genArgs(keys, filepath.Join(t.TempDir(), "x"), "--per-user", "-1"), "shake gen:", "--per-user")
}

// moveExpiry rewrites manifest.json as an operator moving the expiry to refund early would: issue_until
// and expires_at moved into the past, everything else as it was (so the manifest stays
// internally consistent; only its signature tells).
func moveExpiry(t *testing.T, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var raw map[string]any
	if err := json.Unmarshal(b, &raw); err != nil {
		t.Fatal(err)
	}
	past := time.Now().Add(-time.Hour).UTC()
	raw["issue_until"], raw["expires_at"] = past.Add(-time.Minute).Format(time.RFC3339), past.Format(time.RFC3339)
	b, _ = json.MarshalIndent(raw, "", "  ")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestAttackTamperedManifestCommands: the old inspect --key said OK and the old
// reconcile --refund refunded a live campaign after expires_at was moved into the past.
func TestAttackTamperedManifestCommands(t *testing.T) {
	keys := keysDir(t)
	ck := filepath.Join(keys, "campaign.key")
	out := filepath.Join(t.TempDir(), "camp")
	if code, _, errOut := runCLI(genArgs(keys, out, "--ttl", "1h")...); code != 0 {
		t.Fatal(errOut)
	}
	manPath := filepath.Join(out, "manifest.json")
	if code, _, errOut := runCLI("inspect", "--key", ck, manPath); code != 0 {
		t.Fatalf("inspect --key of the genuine manifest: %d %s", code, errOut)
	}
	// The settler registers and funds the campaign at its start.
	m, err := ticket.LoadManifest(manPath)
	if err != nil {
		t.Fatal(err)
	}
	ledgerURL := "sqlite://" + filepath.Join(t.TempDir(), "ledger.db")
	l, err := ledger.Open(context.Background(), ledgerURL)
	if err != nil {
		t.Fatal(err)
	}
	if err := settler.Register(context.Background(), m, l); err != nil {
		t.Fatal(err)
	}
	if err := l.Fund(context.Background(), m.Campaign, m.Currency, m.Budget); err != nil {
		t.Fatal(err)
	}
	l.Close()

	moveExpiry(t, manPath)
	if code, _, _ := runCLI("inspect", manPath); code != 0 {
		t.Fatalf("inspect without a key checks no signature, but exit %d", code)
	}
	code, stdout, _ := runCLI("inspect", "--key", ck, manPath)
	if code != 1 || !strings.Contains(stdout, "signature") {
		t.Fatalf("inspect --key of the tampered manifest: exit %d\n%s", code, stdout)
	}
	code, _, errOut := runCLI("reconcile", "--manifest", manPath, "--ledger", ledgerURL, "--refund")
	if code != 2 || !strings.Contains(errOut, "--key") || strings.Count(errOut, "\n") != 1 {
		t.Fatalf("reconcile --refund without --key: exit %d %q", code, errOut)
	}
	code, errOut, _ = runCLI("reconcile", "--manifest", manPath, "--ledger", ledgerURL)
	if code != 1 || !strings.Contains(errOut, "differs from the one this ledger was funded with") || !strings.Contains(errOut, `"reason":"manifest_changed"`) {
		t.Fatalf("reconcile of the tampered manifest without a key: exit %d %q", code, errOut)
	}
	code, _, errOut = runCLI("reconcile", "--manifest", manPath, "--ledger", ledgerURL, "--key", ck, "--refund")
	if code != 2 || !strings.Contains(errOut, "signature") {
		t.Fatalf("reconcile --refund --key of the tampered manifest: exit %d %q", code, errOut)
	}
	code, _, errOut = runCLI("reconcile", "--manifest", manPath, "--ledger", ledgerURL, "--key", ck)
	if code != 2 || !strings.Contains(errOut, "signature") {
		t.Fatalf("reconcile --key of the tampered manifest: exit %d %q", code, errOut)
	}
	l, _ = ledger.Open(context.Background(), ledgerURL)
	defer l.Close()
	if st, _ := l.Stats(context.Background(), m.Campaign); st.Refunded {
		t.Fatal("the tampered manifest refunded the campaign")
	}
}

// TestSettlerRefusesWithoutKeyOrOtherGeneration: the settler does not start without what
// it needs to check a claim fully, nor on a ledger of another generation of its campaign.
func TestSettlerRefusesWithoutKeyOrOtherGeneration(t *testing.T) {
	keys := keysDir(t)
	ck := filepath.Join(keys, "campaign.key")
	first, second := filepath.Join(t.TempDir(), "first"), filepath.Join(t.TempDir(), "second")
	for _, out := range []string{first, second} { // the same campaign id generated twice
		if code, _, errOut := runCLI(genArgs(keys, out)...); code != 0 {
			t.Fatal(errOut)
		}
	}
	ledgerURL := "sqlite://" + filepath.Join(t.TempDir(), "ledger.db")
	args := func(man string, extra ...string) []string {
		return append([]string{"settler", "--brokers", "127.0.0.1:1", "--ledger", ledgerURL,
			"--manifest", filepath.Join(man, "manifest.json"), "--listen", "127.0.0.1:0"}, extra...)
	}
	wantUsage(t, args(first), "shake settler:", "--key")

	m1, err := ticket.LoadManifest(filepath.Join(first, "manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	l, err := ledger.Open(context.Background(), ledgerURL)
	if err != nil {
		t.Fatal(err)
	}
	if err := settler.Register(context.Background(), m1, l); err != nil {
		t.Fatal(err)
	}
	l.Close()
	code, _, errOut := runCLI(args(second, "--key", ck)...)
	lines := strings.Split(strings.TrimSpace(errOut), "\n")
	if code != 2 || !strings.Contains(lines[len(lines)-1], "another generation") {
		t.Fatalf("settler on a ledger of another generation: exit %d %q", code, errOut)
	}
	// The two generations share no key: the first's shard keys are not the second's.
	k1, _ := os.ReadFile(filepath.Join(first, "edge-000.key"))
	k2, _ := os.ReadFile(filepath.Join(second, "edge-000.key"))
	if string(k1) == string(k2) {
		t.Fatal("the same campaign id generated twice has the same edge key")
	}
}
