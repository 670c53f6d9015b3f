package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
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
		return false, flagError(fs, "%v (see 'shake %s -h')", err, fs.Name())
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
