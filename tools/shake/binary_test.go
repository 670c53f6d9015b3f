package main

import (
	"bytes"
	"os/exec"
	"testing"

	"shake/internal/testbin"
)

// shakeBinary returns the shake binary for the whole-process tests, which start real
// servers as separate processes (kill -9 has to hit a real process).
func shakeBinary(t *testing.T) string { return testbin.Shake(t) }

// runBinary runs the built shake binary with args and returns its exit code and output.
// Only a failure to start it fails the test; a non-zero exit is the caller's to judge.
func runBinary(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	cmd := exec.Command(shakeBinary(t), args...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), o.String(), e.String()
	} else if err != nil {
		t.Fatal(err)
	}
	return 0, o.String(), e.String()
}
