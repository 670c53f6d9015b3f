package main

import (
	"flag"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestVersionFlags(t *testing.T) {
	_, want, _ := runCLI("version")
	for _, args := range [][]string{{"--version"}, {"-v"}, {"-version"}} {
		code, out, errOut := runCLI(args...)
		if code != 0 || errOut != "" || out != want || !strings.HasPrefix(out, "shake ") {
			t.Errorf("%v: code %d stdout %q stderr %q, want %q", args, code, out, errOut, want)
		}
	}
}

// TestStampedVersion builds the binary the way deploy/Dockerfile does and checks that
// the linker flags reach --version (a renamed variable would silently stop stamping).
func TestStampedVersion(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := filepath.Join(t.TempDir(), "shake")
	// Built as the image and internal/testbin build it (CGO_ENABLED=0, -trimpath), so
	// that only the link is new: with other flags a cold build cache compiles the
	// whole module and its dependencies again for this one test.
	build := exec.Command("go", "build", "-trimpath", "-o", bin, "-ldflags",
		"-X shake/internal/buildinfo.version=v9.8.7-test -X shake/internal/buildinfo.revision=abc123", "shake/tools/shake")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	out, err := build.CombinedOutput()
	if err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	got, err := exec.Command(bin, "--version").Output()
	if err != nil {
		t.Fatal(err)
	}
	if s := string(got); !strings.HasPrefix(s, "shake v9.8.7-test go") || !strings.Contains(s, " rev abc123") {
		t.Fatalf("--version of a stamped build: %q", s)
	}
}

func TestApplyEnv(t *testing.T) {
	newFS := func() (*flag.FlagSet, *string, *int, *bool) {
		fs := flag.NewFlagSet("x", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		return fs, fs.String("ledger-url", "default", ""), fs.Int("per-user", 1, ""), fs.Bool("pace", false, "")
	}
	env := map[string]string{"SHAKE_LEDGER_URL": "from-env", "SHAKE_PER_USER": "7", "SHAKE_PACE": "true"}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }

	fs, l, n, p := newFS()
	if err := fs.Parse([]string{"--per-user", "3"}); err != nil {
		t.Fatal(err)
	}
	if err := applyEnv(fs, lookup); err != nil {
		t.Fatal(err)
	}
	if *l != "from-env" || *n != 3 || !*p {
		t.Fatalf("got ledger %q per-user %d pace %v: want the environment except where the command line spoke", *l, *n, *p)
	}
	if err := requireFlag(fs, "ledger-url"); err != nil {
		t.Fatalf("a flag set from the environment must count as given: %v", err)
	}

	env["SHAKE_PER_USER"] = "lots"
	fs, _, _, _ = newFS()
	_ = fs.Parse(nil)
	err := applyEnv(fs, lookup)
	if err == nil || !strings.Contains(err.Error(), "$SHAKE_PER_USER") || !strings.Contains(err.Error(), "--per-user") {
		t.Fatalf("bad environment value: %v", err)
	}
}

// TestEnvThroughTheCLI sets a server's flags in the environment only.
func TestEnvThroughTheCLI(t *testing.T) {
	t.Setenv("SHAKE_LOG_LEVEL", "loud")
	code, out, errOut := runCLI("broker", "--listen", "127.0.0.1:0")
	if code != 2 || out != "" || strings.Count(errOut, "\n") != 1 || !strings.Contains(errOut, "$SHAKE_LOG_LEVEL") {
		t.Fatalf("code %d stdout %q stderr %q", code, out, errOut)
	}
	t.Setenv("SHAKE_LOG_LEVEL", "")
	// Required flags can come from the environment: the manifest is then what fails.
	t.Setenv("SHAKE_MANIFEST", filepath.Join(t.TempDir(), "absent.json"))
	t.Setenv("SHAKE_LEDGER", "sqlite:///nowhere.db")
	code, _, errOut = runCLI("reconcile")
	if code != 2 || !strings.Contains(errOut, "--manifest") || strings.Contains(errOut, "required") {
		t.Fatalf("code %d stderr %q: want the manifest from $SHAKE_MANIFEST to be read", code, errOut)
	}
}

func TestLogLevelFlag(t *testing.T) {
	for _, srv := range []string{"edge", "verifier", "settler", "broker"} {
		code, _, errOut := runCLI(srv, "--log-level", "chatty")
		if code != 2 || !strings.Contains(errOut, "log-level") || !strings.Contains(errOut, "debug, info, warn or error") {
			t.Errorf("%s --log-level chatty: code %d stderr %q", srv, code, errOut)
		}
	}
	var l logLevel
	for in, want := range map[string]string{"debug": "debug", "WARN": "warn", "error": "error", "info": "info"} {
		if err := l.Set(in); err != nil || l.String() != want {
			t.Errorf("Set(%q): %v, %q", in, err, l.String())
		}
	}
}

func TestLedgerWithPassword(t *testing.T) {
	dir := t.TempDir()
	pw := filepath.Join(dir, "pw")
	if err := os.WriteFile(pw, []byte("s3cr:t@/x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty")
	os.WriteFile(empty, []byte("\n"), 0o600)
	got, err := ledgerWithPassword("postgres://shake@db:5432/ledger?sslmode=require", pw)
	if err != nil || got != "postgres://shake:s3cr%3At%40%2Fx@db:5432/ledger?sslmode=require" {
		t.Fatalf("got %q, %v", got, err)
	}
	if got, err := ledgerWithPassword("sqlite:///x.db", ""); err != nil || got != "sqlite:///x.db" {
		t.Fatalf("no file: %q %v", got, err)
	}
	for _, c := range []struct{ url, file, want string }{
		{"sqlite:///x.db", pw, "postgres://"},
		{"postgres://u:inline@db/l", pw, "not both"},
		{"postgres://db/l", pw, "user name"},
		{"postgres://u@db/l", empty, "empty"},
		{"postgres://u@db/l", filepath.Join(dir, "absent"), "no such file"},
	} {
		if _, err := ledgerWithPassword(c.url, c.file); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s with %s: %v, want an error about %q", c.url, c.file, err, c.want)
		}
	}
	code, _, errOut := runCLI("reconcile", "--manifest", "m.json", "--ledger", "sqlite:///x.db", "--ledger-password-file", pw)
	if code != 2 || !strings.Contains(errOut, "--ledger-password-file") {
		t.Fatalf("code %d stderr %q", code, errOut)
	}
}

func TestGenDryRunWritesNothing(t *testing.T) {
	dir := t.TempDir()
	if code, _, errOut := runCLI("keys", "init", "--out", dir); code != 0 {
		t.Fatal(errOut)
	}
	out := filepath.Join(dir, "camp")
	code, stdout, errOut := runCLI("gen", "--dry-run", "--campaign", "dry", "--key", filepath.Join(dir, "campaign.key"),
		"--budget", "100000", "--count", "1000", "--edges", "2", "--out", out)
	if code != 0 || errOut != "" {
		t.Fatalf("code %d stderr %q", code, errOut)
	}
	for _, want := range []string{"dry run: nothing written", "campaign dry: 1000 tickets, budget 100000", "edge-000.tickets", "edge-001.tickets", "1..500", "501..1000", "would write into"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("plan lacks %q:\n%s", want, stdout)
		}
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Fatalf("--dry-run created %s (%v)", out, err)
	}
	code, _, errOut = runCLI("gen", "--dry-run", "--campaign", "dry", "--key", filepath.Join(dir, "campaign.key"),
		"--budget", "10", "--count", "1000", "--edges", "2", "--out", out)
	if code != 2 || !strings.Contains(errOut, "--budget") {
		t.Fatalf("an impossible budget in a dry run: code %d stderr %q", code, errOut)
	}
}
