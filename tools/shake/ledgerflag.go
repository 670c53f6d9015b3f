package main

import (
	"errors"
	"flag"
	"fmt"
	"net/url"
	"strings"
)

// The ledger URL flags, in one place for every command that opens a ledger (settler,
// reconcile, query, demo). A password never comes from the command line, which any
// local user can read (/proc/PID/cmdline, ps): it comes from --ledger-password-file, or
// the whole URL comes from the environment (SHAKE_LEDGER).

// ledgerURLValue is the --ledger flag's value; it remembers whether it was set from
// SHAKE_LEDGER (applyEnv) rather than from the command line.
type ledgerURLValue struct {
	raw     string
	fromEnv bool
}

func (v *ledgerURLValue) String() string {
	if v == nil {
		return ""
	}
	return redactLedgerURL(v.raw)
}

// Set takes the one ledger. A second --ledger is refused: ledger sets (shard k settling
// in ledger k mod S) are not built, and silently keeping only the last URL would settle,
// reconcile or read one ledger while the operator believes they named several.
func (v *ledgerURLValue) Set(s string) error {
	if v.raw != "" && !v.fromEnv {
		return errors.New("given twice: ledger sets (a repeated --ledger) are not built yet; give one ledger")
	}
	v.raw, v.fromEnv = s, false
	return nil
}

// markFromEnv is called by applyEnv after it set the flag from the environment.
func (v *ledgerURLValue) markFromEnv() { v.fromEnv = true }

// ledgerFlags are --ledger and --ledger-password-file.
type ledgerFlags struct {
	url          *ledgerURLValue
	passwordFile *string
}

// addLedgerFlags defines --ledger and --ledger-password-file on fs.
func addLedgerFlags(fs *flag.FlagSet, usage string) *ledgerFlags {
	l := &ledgerFlags{url: &ledgerURLValue{}}
	fs.Var(l.url, "ledger", usage)
	l.passwordFile = fs.String("ledger-password-file", "", "`FILE` holding the PostgreSQL password (never on the command line; or give the whole URL in $SHAKE_LEDGER)")
	return l
}

// resolve returns the URL to open: the password from --ledger-password-file put in, or
// the URL of SHAKE_LEDGER as it is. A password on the command line is refused.
func (l *ledgerFlags) resolve() (string, error) {
	return checkLedgerURL(l.url.raw, l.url.fromEnv, *l.passwordFile)
}

// childArgs are the flags that give a child process the same ledger without putting a
// password on its command line: a URL that came from SHAKE_LEDGER is left to the
// environment the child inherits.
func (l *ledgerFlags) childArgs() []string {
	var a []string
	if !l.url.fromEnv {
		a = append(a, "--ledger", l.url.raw)
	}
	if *l.passwordFile != "" {
		a = append(a, "--ledger-password-file", *l.passwordFile)
	}
	return a
}

// forChild is resolve and childArgs for a command that starts the process opening the
// ledger (the demo's settler); with no --ledger at all both are empty.
func (l *ledgerFlags) forChild() (string, []string, error) {
	if l.url.raw == "" {
		return "", nil, nil
	}
	u, err := l.resolve()
	return u, l.childArgs(), err
}

// errLedgerPasswordOnArgv is wrapped by the refusal of a password on the command line.
var errLedgerPasswordOnArgv = errors.New("a password on the command line is readable by every local user (ps, /proc/PID/cmdline)")

// checkLedgerURL checks one ledger URL as given (fromEnv: it came from SHAKE_LEDGER)
// and returns the URL to open, with the password of passwordFile put in.
func checkLedgerURL(raw string, fromEnv bool, passwordFile string) (string, error) {
	if !fromEnv && ledgerURLHasPassword(raw) {
		return "", fmt.Errorf("--ledger: %w: put the password in --ledger-password-file FILE, or the whole URL in $SHAKE_LEDGER", errLedgerPasswordOnArgv)
	}
	return ledgerWithPassword(raw, passwordFile)
}

// ledgerURLHasPassword reports whether a ledger URL carries a password: in its user
// information (postgres://u:p@host) or as a password parameter (?password=p), or, for a
// string that is no URL at all, anywhere as password=.
func ledgerURLHasPassword(raw string) bool {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme == "" {
		return strings.Contains(strings.ToLower(raw), "password")
	}
	if _, has := u.User.Password(); has {
		return true
	}
	for k := range u.Query() {
		if strings.EqualFold(k, "password") {
			return true
		}
	}
	return false
}

// redactLedgerURL is a ledger URL fit for messages and logs: its password, if any,
// replaced by xxxxx.
func redactLedgerURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme == "" {
		if ledgerURLHasPassword(raw) {
			return ledgerScheme(raw) + "://(redacted)"
		}
		return raw
	}
	q := u.Query()
	for k := range q {
		if strings.EqualFold(k, "password") {
			q.Set(k, "xxxxx")
			u.RawQuery = q.Encode()
		}
	}
	return u.Redacted()
}
