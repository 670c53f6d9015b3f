package main

import (
	"os"
	"strings"
	"testing"

	"shake/internal/testbin"
)

// TestMain lets the test binary stand in for the shake program. Commands that start
// children of their own program (shake bench starts `shake baseline`, shake demo its
// servers) use os.Executable(), which in a test is this binary: started with a
// subcommand instead of -test.* flags, it must run that subcommand, not the whole test
// suite again (which would start more children, without end).
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && !strings.HasPrefix(os.Args[1], "-") {
		os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
	}
	// The whole-process tests (t.Parallel) mostly wait on their children: run up to 4 at
	// once, not GOMAXPROCS (2 here).
	testbin.Parallel(4)
	code := m.Run()
	testbin.Remove()
	os.Exit(code)
}
