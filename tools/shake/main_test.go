package main

import (
	"bytes"
	"flag"
	"io"
	"reflect"
	"strings"
	"testing"
)

func runCLI(args ...string) (code int, stdout, stderr string) {
	var out, errb bytes.Buffer
	code = run(args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestHelpListsCommandsSorted(t *testing.T) {
	for _, args := range [][]string{{"help"}, {"-h"}, {"--help"}} {
		code, out, errOut := runCLI(args...)
		if code != 0 || errOut != "" {
			t.Fatalf("%v: code %d stderr %q", args, code, errOut)
		}
		if !strings.Contains(out, "print the program version") {
			t.Fatalf("%v: help does not list version:\n%s", args, out)
		}
		// Commands appear in sorted order.
		var names []string
		inList := false
		for _, line := range strings.Split(out, "\n") {
			switch {
			case line == "Commands:":
				inList = true
			case inList && strings.HasPrefix(line, "  "):
				names = append(names, strings.Fields(line)[0])
			case inList:
				inList = false
			}
		}
		if len(names) != len(commands) {
			t.Fatalf("help lists %v, registry has %d commands", names, len(commands))
		}
		for i := 1; i < len(names); i++ {
			if names[i-1] > names[i] {
				t.Fatalf("commands not sorted: %v", names)
			}
		}
	}
}

func TestNoArgsIsUsageError(t *testing.T) {
	code, out, errOut := runCLI()
	if code != 2 || out != "" || !strings.Contains(errOut, "Commands:") {
		t.Fatalf("code %d stdout %q stderr %q", code, out, errOut)
	}
}

func TestHelpForOneCommand(t *testing.T) {
	code, out, errOut := runCLI("help", "version")
	if code != 0 || errOut != "" || !strings.Contains(out, "Usage: shake version") {
		t.Fatalf("code %d stdout %q stderr %q", code, out, errOut)
	}
	code, _, errOut = runCLI("help", "nope")
	if code != 2 || !strings.Contains(errOut, `unknown command "nope"`) {
		t.Fatalf("help nope: code %d stderr %q", code, errOut)
	}
}

func TestUnknownCommand(t *testing.T) {
	code, out, errOut := runCLI("frobnicate", "--x")
	if code != 2 || out != "" {
		t.Fatalf("code %d stdout %q", code, out)
	}
	if strings.Count(errOut, "\n") != 1 || !strings.HasPrefix(errOut, `shake: unknown command "frobnicate"`) {
		t.Fatalf("stderr %q", errOut)
	}
}

func TestVersion(t *testing.T) {
	code, out, errOut := runCLI("version")
	if code != 0 || errOut != "" || !strings.HasPrefix(out, "shake ") {
		t.Fatalf("code %d stdout %q stderr %q", code, out, errOut)
	}
}

func TestStrayArgsAndBadFlags(t *testing.T) {
	for _, args := range [][]string{{"version", "extra"}, {"version", "--nope"}, {"version", "--", "x"}} {
		code, out, errOut := runCLI(args...)
		if code != 2 || out != "" {
			t.Fatalf("%v: code %d stdout %q", args, code, out)
		}
		if strings.Count(errOut, "\n") != 1 || !strings.HasPrefix(errOut, "shake version: ") {
			t.Fatalf("%v: want one line naming the command, got %q", args, errOut)
		}
	}
}

func TestDashHExitsZero(t *testing.T) {
	for _, h := range []string{"-h", "--help", "-help"} {
		code, out, errOut := runCLI("version", h)
		if code != 0 || out != "" || !strings.Contains(errOut, "Usage: shake version") {
			t.Fatalf("%s: code %d stdout %q stderr %q", h, code, out, errOut)
		}
	}
}

func TestParseFlagsArgsInterspersed(t *testing.T) {
	newFS := func(errb io.Writer) (*flag.FlagSet, *string, *bool) {
		fs := newFlagSet("inspect", "Usage: shake inspect [flags] FILE", errb)
		out := fs.String("out", "", "output `dir`")
		v := fs.Bool("v", false, "verbose")
		return fs, out, v
	}
	var errb bytes.Buffer
	fs, out, v := newFS(&errb)
	ok, code := parseFlagsArgs(fs, []string{"a.tickets", "--out", "d", "b", "-v", "--", "-c"}, 1, -1)
	if !ok || code != 0 || errb.Len() != 0 {
		t.Fatalf("ok %v code %d stderr %q", ok, code, errb.String())
	}
	if *out != "d" || !*v || !reflect.DeepEqual(fs.Args(), []string{"a.tickets", "b", "-c"}) {
		t.Fatalf("out %q v %v args %q", *out, *v, fs.Args())
	}

	errb.Reset()
	fs, _, _ = newFS(&errb)
	if ok, code := parseFlagsArgs(fs, []string{"--out", "d"}, 1, 1); ok || code != 2 ||
		errb.String() != "shake inspect: expected 1 argument(s), got 0 (see 'shake inspect -h')\n" {
		t.Fatalf("missing arg: ok %v code %d stderr %q", ok, code, errb.String())
	}

	errb.Reset()
	fs, _, _ = newFS(&errb)
	if ok, code := parseFlags(fs, []string{"-h"}); ok || code != 0 ||
		!strings.Contains(errb.String(), "Usage: shake inspect") || !strings.Contains(errb.String(), "-out dir") {
		t.Fatalf("-h: ok %v code %d stderr %q", ok, code, errb.String())
	}
}

func TestRequireFlagAndUsageError(t *testing.T) {
	var errb bytes.Buffer
	fs := newFlagSet("gen", "Usage: shake gen", &errb)
	fs.String("campaign", "", "")
	fs.Int("count", 0, "")
	if ok, _ := parseFlags(fs, []string{"--campaign", "c1"}); !ok {
		t.Fatal(errb.String())
	}
	err := requireFlag(fs, "campaign", "count")
	if err == nil || err.Error() != "--count is required" {
		t.Fatalf("requireFlag = %v", err)
	}
	if code := usageError(&errb, "gen: %v", err); code != 2 || errb.String() != "shake gen: --count is required\n" {
		t.Fatalf("usageError: code %d %q", code, errb.String())
	}
	if requireFlag(fs, "campaign") != nil {
		t.Fatal("campaign was set")
	}
}

func TestRegisterDuplicatePanics(t *testing.T) {
	defer func() {
		if v, _ := recover().(string); !strings.HasPrefix(v, "BUG: ") {
			t.Fatalf("want BUG panic, got %v", v)
		}
	}()
	register(command{name: "version", run: runVersion})
}
