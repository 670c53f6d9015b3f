package control

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"shake/ticket"
)

func newStore(file string) (*Store, error) {
	return New(Config{Role: "edge", Options: Options{File: file, AdminKey: ticket.NewKey()},
		Apply: func(context.Context, *ticket.Switches) error { return nil }})
}

// TestSwitchesFileTrust: a switches file group or others may write, or owned by
// another user, is refused at start and on SIGHUP, naming the file and its mode; the
// document in force stays.
func TestSwitchesFileTrust(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "edge.json")
	planted := []byte(`{"version":9,"edge":{"shed_ratio":0.99,"retry_after_ms":3600000}}`)
	if err := os.WriteFile(f, planted, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, mode := range []os.FileMode{0o664, 0o646, 0o666} {
		os.Chmod(f, mode)
		_, err := newStore(f)
		if !errors.Is(err, ErrUntrustedFile) || !strings.Contains(err.Error(), f) || !strings.Contains(err.Error(), "mode 0"+modeDigits(mode)) {
			t.Errorf("mode %04o at start: %v, want a refusal naming the file and its mode", mode, err)
		}
	}
	// A trusted file loads; made group-writable later, SIGHUP does not apply it.
	os.Chmod(f, 0o600)
	s, err := newStore(f)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Current().Version != 9 {
		t.Fatalf("trusted file not loaded: %s", s.Current().JSON())
	}
	os.WriteFile(f, []byte(`{"version":10,"edge":{"paused":true}}`), 0o600)
	os.Chmod(f, 0o620)
	if err := s.Reload(); !errors.Is(err, ErrUntrustedFile) || !strings.Contains(err.Error(), "mode 0620") {
		t.Errorf("SIGHUP on a group-writable file: %v", err)
	}
	if s.Current().Version != 9 || s.Current().Edge.Paused {
		t.Errorf("the untrusted file was applied: %s", s.Current().JSON())
	}

	// Owned by another user (needs root to chown): refused, the owner named.
	if os.Geteuid() != 0 {
		t.Log("not root: the foreign-owner case needs chown (CI runs as root)")
		return
	}
	os.Chmod(f, 0o600)
	if err := os.Chown(f, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	if _, err := newStore(f); !errors.Is(err, ErrUntrustedFile) || !strings.Contains(err.Error(), "owned by uid 65534") || !strings.Contains(err.Error(), f) {
		t.Errorf("foreign-owned file at start: %v", err)
	}
	if err := s.Reload(); !errors.Is(err, ErrUntrustedFile) {
		t.Errorf("SIGHUP on a foreign-owned file: %v", err)
	}
}

func modeDigits(m os.FileMode) string {
	const d = "01234567"
	p := m.Perm()
	return string([]byte{d[p>>6&7], d[p>>3&7], d[p&7]})
}
