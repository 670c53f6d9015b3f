// Package testbin builds the shake binary once per test process for the whole-process
// tests of every package (edge, chaos, tools/shake, deploy), which start real servers as
// separate processes because kill -9 has to hit a real process.
package testbin

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

var (
	once sync.Once
	dir  string
	path string
	err  error
)

// Shake returns the path of a shake binary built from shake/tools/shake the first time a
// test of this process asks. It is built without -race whatever the test binary was built
// with: the children are the subject, and a race-instrumented child is several times
// slower. A failed build fails the test (it never skips: a whole-process test that does
// not run is not a passing test).
func Shake(t testing.TB) string {
	t.Helper()
	once.Do(build)
	if err != nil {
		t.Fatalf("cannot build the shake binary: %v", err)
	}
	return path
}

func build() {
	if dir, err = os.MkdirTemp("", "shake-testbin-"); err != nil {
		return
	}
	path = filepath.Join(dir, "shake")
	if out, berr := exec.Command("go", "build", "-o", path, "shake/tools/shake").CombinedOutput(); berr != nil {
		err = fmt.Errorf("go build shake/tools/shake: %v\n%s", berr, out)
	}
}

// Remove deletes the binary built by Shake, if any; a TestMain calls it after m.Run.
func Remove() {
	if dir != "" {
		os.RemoveAll(dir)
	}
}
