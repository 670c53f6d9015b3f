package main

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestEdgeUsageErrors(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "k")
	os.WriteFile(key, make([]byte, 32), 0o600)
	base := []string{"edge", "--tickets", filepath.Join(dir, "missing.tickets"), "--key", key, "--session-key", key, "--state", filepath.Join(dir, "s")}
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"no flags", []string{"edge"}, "--tickets is required"},
		{"no state", []string{"edge", "--tickets", "a", "--key", "b", "--session-key", "c"}, "--state is required"},
		{"log format", append(append([]string{}, base...), "--log-format", "xml"), "--log-format"},
		{"per-user", append(append([]string{}, base...), "--per-user", "-1"), "--per-user"},
		{"per-user not a number", append(append([]string{}, base...), "--per-user", "one"), "-per-user: not a whole number"},
		{"in flight", append(append([]string{}, base...), "--max-in-flight", "0"), "--max-in-flight"},
		{"stray", append(append([]string{}, base...), "extra"), "unexpected argument"},
		{"missing shard", base, "missing.tickets"},
	}
	for _, c := range cases {
		code, out, errOut := runCLI(c.args...)
		if code != 2 || out != "" || strings.Count(errOut, "\n") != 1 || !strings.HasPrefix(errOut, "shake edge: ") || !strings.Contains(errOut, c.want) {
			t.Errorf("%s: code %d stdout %q stderr %q", c.name, code, out, errOut)
		}
	}
	code, _, errOut := runCLI("edge", "-h")
	if code != 0 || !strings.Contains(errOut, "Usage: shake edge") || !strings.Contains(errOut, "-per-user") {
		t.Fatalf("-h: %d %q", code, errOut)
	}
}

// TestEdgeInitOnly: --init-only creates the state file and exits 0 without serving; a
// second run refuses the existing file (exit 2) and leaves it as it was; the edge then
// starts on it without --init-state. Without --init-state it is a usage error.
func TestEdgeInitOnly(t *testing.T) {
	f := newCampaign(t, 100, 1)
	args := f.edgeArgs(t, 0, "--admin-listen", "127.0.0.1:0")
	state := args[slices.Index(args, "--state")+1]
	if !slices.Contains(args, "--init-state") {
		t.Fatal("edge has no --init-state")
	}
	code, out, errOut := runCLI(append(slices.Clone(args), "--init-only")...)
	if code != 0 || !strings.Contains(out, "state file created: "+state) {
		t.Fatalf("--init-only: %d %q %q", code, out, errOut)
	}
	before, err := os.ReadFile(state)
	if err != nil || len(before) == 0 {
		t.Fatalf("no state file after --init-only: %v", err)
	}
	code, out, errOut = runCLI(append(slices.Clone(args), "--init-only")...)
	if after, _ := os.ReadFile(state); code != 2 || out != "" || !strings.Contains(errOut, "already exists") || !bytes.Equal(before, after) {
		t.Fatalf("--init-only again: %d %q %q, file changed: %v", code, out, errOut, !bytes.Equal(before, after))
	}
	noInit := slices.DeleteFunc(slices.Clone(args), func(a string) bool { return a == "--init-state" })
	code, _, errOut = runCLI(append(slices.Clone(noInit), "--init-only")...)
	if code != 2 || !strings.Contains(errOut, "--init-only needs --init-state") {
		t.Fatalf("--init-only without --init-state: %d %q", code, errOut)
	}
	code, out, errOut = runCLI(append(noInit, "--dry-run")...)
	if code != 0 {
		t.Fatalf("the edge does not start on the state --init-only created: %d %s %s", code, out, errOut)
	}
}
