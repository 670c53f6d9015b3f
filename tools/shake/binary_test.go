package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

// shakeBinary builds the shake binary once per test run for the whole-process tests, which
// start real servers as separate processes (kill -9 has to hit a real process).
func shakeBinary(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		dir, err := os.MkdirTemp("", "shake-testbin")
		if err != nil {
			binErr = err
			return
		}
		binPath = filepath.Join(dir, "shake")
		out, err := exec.Command("go", "build", "-o", binPath, "shake/tools/shake").CombinedOutput()
		if err != nil {
			binErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}
