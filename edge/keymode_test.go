package edge

import (
	"bytes"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
)

// lockedBuffer is a bytes.Buffer the edge's goroutines may log into concurrently.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestKeyFileReadableByOthersWarns: a session key other users can read lets them forge
// sessions, so the edge says so at start; a 0600 key draws no warning.
func TestKeyFileReadableByOthersWarns(t *testing.T) {
	f := newFixture(t, shardSpec{count: 10})
	if err := os.Chmod(f.sessPath, 0o644); err != nil {
		t.Fatal(err)
	}
	var logs lockedBuffer
	startEdge(t, f, func(c *Config) { c.Logger = slog.New(slog.NewTextHandler(&logs, nil)) })
	out := logs.String()
	if !strings.Contains(out, "key file is readable by other users") || !strings.Contains(out, f.sessPath) {
		t.Fatalf("no warning for %s: %s", f.sessPath, out)
	}
	if strings.Contains(out, "file="+f.key) {
		t.Fatalf("a warning for the 0600 %s: %s", f.key, out)
	}
}
