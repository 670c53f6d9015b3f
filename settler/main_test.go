package settler

import (
	"os"
	"testing"

	"shake/internal/testbin"
)

// TestMain runs up to 6 of the tests that call t.Parallel at once (not GOMAXPROCS, 2
// here): they spend most of their time waiting on the embedded broker (group joins,
// session timeouts, the stall watchdog), not computing.
func TestMain(m *testing.M) {
	testbin.Parallel(6)
	os.Exit(m.Run())
}
