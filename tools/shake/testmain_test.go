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
	// The whole-process tests (t.Parallel) mostly wait on their children: run up to 3 at
	// once, not GOMAXPROCS (2 here); more starve each other of CPU on two cores.
	testbin.Parallel(3)
	code := m.Run()
	testbin.Remove()
	os.Exit(code)
}
