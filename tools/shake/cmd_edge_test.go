package main

import (
	"os"
	"path/filepath"
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
