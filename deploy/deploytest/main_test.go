package deploytest

import (
	"os"
	"testing"

	"shake/internal/testbin"
)

// TestMain removes the shake binary the whole-process tests built.
func TestMain(m *testing.M) {
	code := m.Run()
	testbin.Remove()
	os.Exit(code)
}
