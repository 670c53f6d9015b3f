package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"os"
	"strings"
)

// newFlagSet returns a FlagSet for the subcommand name ("gen") that reports errors
// instead of exiting. On -h it prints usage (a long, multi-line description starting
// with the synopsis) followed by the flag defaults to stderr.
func newFlagSet(name, usage string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		w := fs.Output()
		fmt.Fprintf(w, "%s\n", strings.TrimSpace(usage))
		hasFlags := false
		fs.VisitAll(func(*flag.Flag) { hasFlags = true })
		if hasFlags {
			fmt.Fprintf(w, "\nFlags:\n")
			fs.PrintDefaults()
			fmt.Fprintf(w, "\nEvery flag can also be set in the environment as SHAKE_<FLAG> (upper case, - as _:\n"+
				"--ledger is SHAKE_LEDGER); the command line wins.\n")
		}
	}
	return fs
}

// parseFlags parses args and rejects any positional argument. On failure it has
// already printed a one-line message (or the long usage for -h) and code is the exit
// code to return: 0 for -h, 2 otherwise.
func parseFlags(fs *flag.FlagSet, args []string) (ok bool, code int) {
	return parseFlagsArgs(fs, args, 0, 0)
}

// parseFlagsArgs parses args, accepting between minArgs and maxArgs positional
// arguments (maxArgs < 0: no limit), which may appear before, between or after the
// flags ("--" ends the flags). Read them with fs.Args() afterwards.
func parseFlagsArgs(fs *flag.FlagSet, args []string, minArgs, maxArgs int) (ok bool, code int) {
	out := fs.Output()
	// The flag package prints its own error and the whole usage on a bad flag; we want
	// one line naming the flag, so silence it while parsing.
	fs.SetOutput(io.Discard)
	var pos []string
	var err error
	rest := args
	for {
		if err = fs.Parse(rest); err != nil {
			break
		}
		left := fs.Args()
		if len(left) == 0 {
			break
		}
		consumed := len(rest) - len(left)
		if consumed > 0 && rest[consumed-1] == "--" {
			pos = append(pos, left...)
			break
		}
		pos = append(pos, left[0])
		rest = left[1:]
	}
	fs.SetOutput(out)
	if errors.Is(err, flag.ErrHelp) {
		fs.Usage()
		return false, 0
	}
	if err != nil {
		// Name the flag as it is documented and typed: --flag, not the package's -flag.
		msg := strings.Replace(err.Error(), "for flag -", "for flag --", 1)
		return false, flagError(fs, "%s (see 'shake %s -h')", msg, fs.Name())
	}
	if err := applyEnv(fs, os.LookupEnv); err != nil {
		return false, flagError(fs, "%v", err)
	}
	// Make fs.Args() report every positional argument, wherever it was.
	_ = fs.Parse(append([]string{"--"}, pos...))
	switch {
	case len(pos) < minArgs:
		return false, flagError(fs, "expected %d argument(s), got %d (see 'shake %s -h')", minArgs, len(pos), fs.Name())
	case maxArgs >= 0 && len(pos) > maxArgs:
		return false, flagError(fs, "unexpected argument %q (see 'shake %s -h')", pos[maxArgs], fs.Name())
	}
	return true, 0
}

// usageError prints "shake " + the message on one line and returns exit code 2. The
// message starts with the command name: usageError(stderr, "gen: --count must be > 0").
func usageError(stderr io.Writer, format string, args ...any) int {
	msg := strings.TrimRight(fmt.Sprintf(format, args...), "\n")
	msg = strings.ReplaceAll(msg, "\n", " ")
	fmt.Fprintf(stderr, "shake %s\n", msg)
	return 2
}

// flagError is usageError for a FlagSet: it prefixes the command name and writes to
// the FlagSet's output (the command's stderr).
func flagError(fs *flag.FlagSet, format string, args ...any) int {
	return usageError(fs.Output(), "%s: %s", fs.Name(), fmt.Sprintf(format, args...))
}

// requireFlag returns an error naming the first of names that was not set on the
// command line, or nil when all were set.
func requireFlag(fs *flag.FlagSet, names ...string) error {
	set := make(map[string]bool)
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	for _, name := range names {
		if fs.Lookup(name) == nil {
			panic("BUG: requireFlag: no flag --" + name + " defined on " + fs.Name())
		}
		if !set[name] {
			return fmt.Errorf("--%s is required", name)
		}
	}
	return nil
}

// EnvName is the environment variable that sets the flag name: SHAKE_ and the name in
// upper case with - as _ ("ledger-password-file" is SHAKE_LEDGER_PASSWORD_FILE).
func envName(name string) string {
	return "SHAKE_" + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
}

// applyEnv sets every flag not given on the command line from its environment
// variable, when that is set and not empty (an empty variable is how compose files and
// unit templates leave a setting out), so that containers and unit files can
// configure a server without a long command line; the command line wins. The flags
// set this way count as set for requireFlag. A value the flag refuses is an error
// naming the variable.
func applyEnv(fs *flag.FlagSet, lookup func(string) (string, bool)) error {
	set := make(map[string]bool)
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if err != nil || set[f.Name] {
			return
		}
		v, ok := lookup(envName(f.Name))
		if !ok || v == "" {
			return
		}
		if e := fs.Set(f.Name, v); e != nil {
			err = fmt.Errorf("$%s (for --%s): invalid value %q: %v", envName(f.Name), f.Name, v, e)
		} else if m, ok := f.Value.(interface{ markFromEnv() }); ok {
			m.markFromEnv() // --ledger: a password is fine in the environment, not on argv
		}
	})
	return err
}

// logLevel is a --log-level flag: debug, info, warn or error.
type logLevel struct{ l slog.Level }

func (l *logLevel) String() string { return strings.ToLower(l.l.String()) }

func (l *logLevel) Set(s string) error {
	switch strings.ToLower(s) {
	case "debug", "info", "warn", "error":
		return l.l.UnmarshalText([]byte(s))
	}
	return errors.New("must be debug, info, warn or error")
}

// Level returns the parsed level.
func (l *logLevel) Level() slog.Level { return l.l }

// logLevelFlag defines --log-level (default info) on fs, for every server.
func logLevelFlag(fs *flag.FlagSet) *logLevel {
	l := &logLevel{l: slog.LevelInfo}
	fs.Var(l, "log-level", "log `level`: debug, info, warn or error")
	return l
}

// logFormat is a --log-format flag: text or json, checked here, when the flag is set
// (from the command line or SHAKE_LOG_FORMAT), for every command that logs.
type logFormat struct{ s *string }

func (f logFormat) String() string {
	if f.s == nil {
		return ""
	}
	return *f.s
}

func (f logFormat) Set(s string) error {
	if s != "text" && s != "json" {
		return errors.New("must be text or json")
	}
	*f.s = s
	return nil
}

// logFormatFlag defines --log-format (default text) on fs with usage, and returns where
// the checked value is kept.
func logFormatFlag(fs *flag.FlagSet, usage string) *string {
	s := "text"
	fs.Var(logFormat{&s}, "log-format", usage)
	return &s
}

// maxSecretFile bounds a password file: a password, not a document.
const maxSecretFile = 4096

// readSecretFile reads a password from path: the first line, without its line ending
// (files written by editors and secret stores end in a newline). Empty is an error.
func readSecretFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxSecretFile+1))
	if err != nil {
		return "", fmt.Errorf("cannot read %s: %w", path, err)
	}
	if len(b) > maxSecretFile {
		return "", fmt.Errorf("%s is longer than %d bytes: not a password file", path, maxSecretFile)
	}
	line, _, _ := strings.Cut(string(b), "\n")
	line = strings.TrimSuffix(line, "\r")
	if line == "" {
		return "", fmt.Errorf("%s is empty", path)
	}
	return line, nil
}

// ledgerWithPassword returns the ledger URL with the password from passwordFile put
// into a postgres:// URL's user information, so that the password never appears on a
// command line (ps, /proc/PID/cmdline) or in the environment. With no file the URL is
// returned unchanged; a file for a URL that already has a password, or for a ledger
// that takes none (sqlite), is refused so that nobody wonders which one is used.
func ledgerWithPassword(ledgerURL, passwordFile string) (string, error) {
	if passwordFile == "" {
		return ledgerURL, nil
	}
	u, err := url.Parse(ledgerURL)
	if err != nil {
		return "", fmt.Errorf("--ledger: %v", err)
	}
	if u.Scheme != "postgres" && u.Scheme != "postgresql" {
		return "", fmt.Errorf("--ledger-password-file applies to a postgres:// ledger, not %s://", u.Scheme)
	}
	if _, has := u.User.Password(); has {
		return "", errors.New("--ledger already has a password: use the URL or --ledger-password-file, not both")
	}
	pw, err := readSecretFile(passwordFile)
	if err != nil {
		return "", fmt.Errorf("--ledger-password-file: %v", err)
	}
	if u.User == nil || u.User.Username() == "" {
		return "", errors.New("--ledger needs a user name (postgres://USER@HOST/DB) with --ledger-password-file")
	}
	u.User = url.UserPassword(u.User.Username(), pw)
	return u.String(), nil
}
