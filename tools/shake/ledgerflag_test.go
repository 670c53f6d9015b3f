package main

import (
	"io"
	"strings"
	"testing"
)

// TestLedgerPasswordNeverOnArgv: every command that takes --ledger refuses a password
// in it (exit 2, pointing at --ledger-password-file and SHAKE_LEDGER, without echoing
// the password); the same URL from SHAKE_LEDGER is accepted.
func TestLedgerPasswordNeverOnArgv(t *testing.T) {
	const secret = "S3cretPW"
	urls := []string{
		"postgres://shake:" + secret + "@127.0.0.1:1/ledger?sslmode=disable",
		"postgresql://shake@127.0.0.1:1/ledger?password=" + secret,
	}
	for _, u := range urls {
		for _, cmd := range [][]string{
			{"settler", "--brokers", "127.0.0.1:1", "--manifest", "m.json", "--key", "k", "--ledger", u},
			{"reconcile", "--manifest", "m.json", "--ledger", u},
			{"query", "--session-key", "s.key", "--ledger", u},
			{"demo", "--ledger", u},
		} {
			code, out, e := runCLI(cmd...)
			if code != 2 || out != "" || strings.Count(e, "\n") != 1 || !strings.Contains(e, "--ledger-password-file") ||
				!strings.Contains(e, "SHAKE_LEDGER") || strings.Contains(e, secret) {
				t.Errorf("%s --ledger %s: exit %d stdout %q stderr %q", cmd[0], u, code, out, e)
			}
		}
	}
	for _, u := range []string{"sqlite:///tmp/x.db", "postgres://shake@db:5432/ledger?sslmode=require"} {
		if got, err := checkLedgerURL(u, false, ""); err != nil || got != u {
			t.Errorf("%s: %q %v", u, got, err)
		}
	}
	// From the environment the password is fine: SHAKE_LEDGER is not world-readable.
	t.Setenv("SHAKE_LEDGER", urls[0])
	fs := newFlagSet("x", "", io.Discard)
	lf := addLedgerFlags(fs, "ledger")
	if ok, _ := parseFlags(fs, nil); !ok {
		t.Fatal("parse")
	}
	if got, err := lf.resolve(); err != nil || got != urls[0] {
		t.Errorf("from SHAKE_LEDGER: %q %v", got, err)
	}
	if a := lf.childArgs(); len(a) != 0 {
		t.Errorf("a child would be given %q on its command line", a)
	}
	if r := redactLedgerURL(urls[0]) + redactLedgerURL(urls[1]); strings.Contains(r, secret) {
		t.Errorf("redacted: %s", r)
	}
}

// TestLedgerGivenTwiceRefused: ledger sets (a repeated --ledger) are not built, so a
// second --ledger is refused (exit 2 naming the flag) rather than silently replacing the
// first: an operator who lists two ledgers must not settle into one of them unawares.
func TestLedgerGivenTwiceRefused(t *testing.T) {
	for _, cmd := range [][]string{
		{"settler", "--brokers", "127.0.0.1:1", "--manifest", "m.json", "--key", "k"},
		{"reconcile", "--manifest", "m.json"},
		{"query", "--session-key", "s.key"},
	} {
		args := append(cmd, "--ledger", "sqlite:///tmp/a.db", "--ledger", "sqlite:///tmp/b.db")
		code, out, e := runCLI(args...)
		if code != 2 || out != "" || strings.Count(e, "\n") != 1 || !strings.Contains(e, "--ledger") || !strings.Contains(e, "not built") {
			t.Errorf("%s with two --ledger: exit %d stdout %q stderr %q", cmd[0], code, out, e)
		}
	}
}
