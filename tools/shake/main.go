// Command shake is the one command-line program of the project: the offline generator,
// the three servers, the broker, the benchmark harness and the demo, one subcommand each.
// main stays thin: each subcommand lives in its own cmd_*.go file and registers itself.
package main

import (
	"fmt"
	"io"
	"os"
	"runtime/pprof"
	"sort"
	"text/tabwriter"
)

// command is one subcommand. run gets the arguments after the command name and
// returns the process exit code (0 ok, 1 a check failed, 2 bad usage or input).
type command struct {
	name    string
	summary string
	run     func(args []string, stdout, stderr io.Writer) int
}

var commands = map[string]command{}

// register adds a subcommand; it is called from init in the subcommand's file.
func register(c command) {
	if c.name == "" || c.run == nil {
		panic("BUG: register: command without a name or run function")
	}
	if _, dup := commands[c.name]; dup {
		panic("BUG: register: command " + c.name + " registered twice")
	}
	commands[c.name] = c
}

func main() {
	stop := startProfile(os.Getenv("SHAKE_CPUPROFILE"), os.Args[1:])
	code := run(os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// startProfile writes a CPU profile of this process to PREFIX.<command>.<pid>.pprof when
// SHAKE_CPUPROFILE=PREFIX is set. Child processes (the demo's servers) inherit the
// variable, so one run profiles every process of the chain, each into its own file.
func startProfile(prefix string, args []string) (stop func()) {
	if prefix == "" {
		return func() {}
	}
	name := "shake"
	if len(args) > 0 {
		name = args[0]
	}
	f, err := os.Create(fmt.Sprintf("%s.%s.%d.pprof", prefix, name, os.Getpid()))
	if err != nil {
		fmt.Fprintf(os.Stderr, "shake: SHAKE_CPUPROFILE: %v\n", err)
		return func() {}
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		fmt.Fprintf(os.Stderr, "shake: SHAKE_CPUPROFILE: %v\n", err)
		f.Close()
		return func() {}
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}
}

// run dispatches args to a subcommand and returns the exit code; tests call it directly.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		printUsage(stderr)
		return 2
	}
	switch args[0] {
	case "help", "-h", "-help", "--help":
		return runHelp(args[1:], stdout, stderr)
	case "-v", "-version", "--version":
		return runVersion(args[1:], stdout, stderr)
	}
	c, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "shake: unknown command %q (run 'shake help' for the list)\n", args[0])
		return 2
	}
	return c.run(args[1:], stdout, stderr)
}

// runHelp prints the command list, or one command's long help (on stdout, exit 0).
func runHelp(args []string, stdout, stderr io.Writer) int {
	switch len(args) {
	case 0:
		printUsage(stdout)
		return 0
	case 1:
		c, ok := commands[args[0]]
		if !ok {
			fmt.Fprintf(stderr, "shake help: unknown command %q (run 'shake help' for the list)\n", args[0])
			return 2
		}
		// The command prints its flag usage to its "stderr"; asked for, help goes to stdout.
		return c.run([]string{"-h"}, stdout, stdout)
	default:
		fmt.Fprintln(stderr, "shake help: at most one command name expected")
		return 2
	}
}

func printUsage(w io.Writer) {
	names := make([]string, 0, len(commands))
	for name := range commands {
		names = append(names, name)
	}
	sort.Strings(names)
	fmt.Fprint(w, "shake: precomputed red packets for one very busy minute.\n\n"+
		"Usage:\n  shake <command> [flags]\n\nCommands:\n")
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	for _, name := range names {
		fmt.Fprintf(tw, "  %s\t%s\n", name, commands[name].summary)
	}
	tw.Flush()
	fmt.Fprint(w, "\nRun 'shake help <command>' or 'shake <command> -h' for a command's flags.\n"+
		"Exit codes: 0 success, 1 a check failed, 2 bad usage or input.\n")
}
