package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"shake/internal/control"
	"shake/settler"
	"shake/settler/ledger"
	"shake/ticket"
)

// dryRunLedgerTimeout bounds a dry run's one look at the ledger: it reports an
// unreachable ledger rather than waiting for it (--ledger-wait is for real starts).
const dryRunLedgerTimeout = 5 * time.Second

// dryRunUsage is the help text the servers share about --dry-run.
const dryRunUsage = `
--dry-run loads and checks everything a start would (the same code, step by step),
prints one "ok" line per check on stdout and exits 0, or prints the problem on one line
on stderr, naming the flag, and exits 2. It binds no listener for serving (an address
is bound and closed at once to prove it is free), writes no file, produces nothing to
Kafka and never migrates the ledger.
`

// startCheck runs a server's start-up checks, for a real start or for --dry-run: the
// same steps in the same order, so that the dry run cannot drift from the start. In a
// real start ok and warn print nothing (the server logs what it loaded); in a dry run
// each check prints a line on out.
type startCheck struct {
	fs  *flag.FlagSet
	dry bool
	out io.Writer
}

func newStartCheck(fs *flag.FlagSet, dry bool, out io.Writer) *startCheck {
	return &startCheck{fs: fs, dry: dry, out: out}
}

// ok records a passed check (what: a short name, the rest what was found).
func (c *startCheck) ok(what, format string, args ...any) {
	if c.dry {
		fmt.Fprintf(c.out, "ok    %-14s %s\n", what, fmt.Sprintf(format, args...))
	}
}

// warn records a check that passed with a warning.
func (c *startCheck) warn(what, format string, args ...any) {
	if c.dry {
		fmt.Fprintf(c.out, "warn  %-14s %s\n", what, fmt.Sprintf(format, args...))
	}
}

// fail prints the problem on one line (the same line a real start prints) and returns
// exit code 2.
func (c *startCheck) fail(format string, args ...any) int {
	return flagError(c.fs, format, args...)
}

// done ends a dry run that found nothing wrong.
func (c *startCheck) done() int {
	fmt.Fprintf(c.out, "dry run of shake %s: every check passed; nothing was served, written or produced\n", c.fs.Name())
	return 0
}

// switches checks a --switches file (checkSwitchesFile); false after printing the
// problem, with the exit code in *code.
func (c *startCheck) switches(path string, code *int) bool {
	d, err := checkSwitchesFile(path)
	if err != nil {
		*code = c.fail("--switches: %v", err)
		return false
	}
	c.ok("switches", "%s", d)
	return true
}

// binds proves that each address can be bound (bindCheck); pairs is flag, address,
// flag, address... False after printing the first problem, with the exit code in *code.
func (c *startCheck) binds(code *int, pairs ...string) bool {
	for i := 0; i+1 < len(pairs); i += 2 {
		flag, addr := pairs[i], pairs[i+1]
		a, err := bindCheck(addr)
		if err != nil {
			*code = c.fail("%s: %v", flag, err)
			return false
		}
		c.ok(strings.TrimPrefix(flag, "--"), "%s can be bound", a)
	}
	return true
}

// bindCheck proves addr can be bound by binding it and closing it at once.
func bindCheck(addr string) (string, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", err
	}
	got := ln.Addr().String()
	ln.Close()
	return got, nil
}

// checkSwitchesFile reads and validates a --switches file the way a start loads it,
// without applying or writing anything; it describes what a start would begin with.
func checkSwitchesFile(path string) (string, error) {
	if path == "" {
		return "none (--switches not set): switches changed at run time will not survive a restart", nil
	}
	d, err := control.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if err := dirWritable(filepath.Dir(path)); err != nil {
			return "", fmt.Errorf("switches file %s does not exist and cannot be created: %w", path, err)
		}
		return fmt.Sprintf("%s does not exist yet: a start begins from the defaults", path), nil
	case err != nil:
		return "", fmt.Errorf("switches file %s: %w", path, err)
	}
	return fmt.Sprintf("%s: version %d", path, d.Version), nil
}

// refuseBadSwitches checks a server's --switches file before the server writes anything
// (an edge's state file, a verifier's spool, a settler's ledger): a file that is not
// trusted or does not parse is one line naming it and exit 2, with nothing written, so
// the corrected start is the same command line. 0 when the file (or its absence) is fine.
// The server loads it again, with the campaign's bounds, when it starts.
func refuseBadSwitches(fs *flag.FlagSet, path string) int {
	if _, err := checkSwitchesFile(path); err != nil {
		return flagError(fs, "--switches: %v", err)
	}
	return 0
}

// dirWritable reports whether the process may create files in dir, without creating
// any.
func dirWritable(dir string) error {
	st, err := os.Stat(dir)
	if err != nil {
		return err
	}
	if !st.IsDir() {
		return fmt.Errorf("%s is not a directory", dir)
	}
	if err := syscall.Access(dir, 2|1); err != nil { // W_OK|X_OK
		return fmt.Errorf("%s is not writable: %w", dir, err)
	}
	return nil
}

// ledgerDryRun looks at the ledger for a dry run (settler, reconcile): read-only, within
// dryRunLedgerTimeout, never awaited or migrated: reachable, its schema version against
// this shake's, and the campaign's registration against m. absent describes what a start
// does with a SQLite file that is not there (%d: the schema version). ok false: code is
// the exit code of the problem already printed.
func ledgerDryRun(chk *startCheck, ledgerURL string, m *ticket.Manifest, absent string) (code int, ok bool) {
	ctx, cancel := context.WithTimeout(context.Background(), dryRunLedgerTimeout)
	p, err := ledger.ProbeLedger(ctx, ledgerURL, m.Campaign)
	cancel()
	if err != nil {
		if ledger.Transient(err) {
			return chk.fail("--ledger: unreachable within %v (a settler's start waits --ledger-wait for it): %v", dryRunLedgerTimeout, err), false
		}
		return chk.fail("--ledger: %v", err), false
	}
	switch {
	case !p.Exists:
		chk.ok("ledger", "%s file does not exist yet: "+absent, p.Backend, p.Latest)
	case p.Version < p.Latest:
		chk.ok("ledger", "%s reachable, schema version %d: a start migrates it to %d", p.Backend, p.Version, p.Latest)
	default:
		chk.ok("ledger", "%s reachable, schema version %d (current)", p.Backend, p.Version)
	}
	want, err := settler.Info(m)
	if err != nil {
		return chk.fail("--manifest: %v", err), false
	}
	switch {
	case p.Registered:
		if err := ledger.CompareInfo(p.Info, want); err != nil {
			return chk.fail("--manifest: %v", err), false
		}
		chk.ok("registration", "the ledger settles campaign %s generation %s with this manifest", m.Campaign, m.Generation)
	case p.Version == p.Latest || !p.Exists:
		chk.ok("registration", "campaign %s not registered yet: a start registers and funds it", m.Campaign)
	default:
		chk.ok("registration", "checked by the start after migrating")
	}
	return 0, true
}
