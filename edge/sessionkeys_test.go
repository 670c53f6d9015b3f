package edge

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"shake/ticket"
)

// Key rotation: an edge given two session keys wins tokens signed with either, with or
// without attributes, and still refuses a third key's.
func TestSessionKeyRotation(t *testing.T) {
	f := newFixture(t, shardSpec{count: 10})
	newKey := ticket.NewKey()
	newPath := filepath.Join(f.dir, "session-new.key")
	if err := ticket.WriteKeyFile(newPath, newKey); err != nil {
		t.Fatal(err)
	}
	s := startEdge(t, f, func(c *Config) { c.MoreSessionKeys = []string{newPath} })
	h := s.Handler()
	nk, _ := ticket.NewSessionKey(newKey)
	other, _ := ticket.NewSessionKey(ticket.NewKey())
	exp := time.Now().Add(time.Hour).Unix()
	for name, tc := range map[string]struct {
		tok  []byte
		want int
	}{
		"old key":                   {f.sess.Mint(nil, 1, exp), 200},
		"new key":                   {nk.Mint(nil, 2, exp), 200},
		"new key with attributes":   {nk.MintAttrs(nil, 3, exp, []byte("dev-3"), 1), 200},
		"old key with attributes":   {f.sess.MintAttrs(nil, 4, exp, []byte("dev-4"), 0), 200},
		"a key of neither":          {other.Mint(nil, 5, exp), 401},
		"attributes of neither key": {other.MintAttrs(nil, 6, exp, []byte("d"), 2), 401},
	} {
		code, body, _ := do(h, "POST", "/v1/shake", "Bearer "+string(tc.tok), nil)
		if code != tc.want || (code == 200 && decode(t, body).Result != "won") {
			t.Errorf("%s: %d %s, want %d", name, code, body, tc.want)
		}
	}
	// A rotation key that is not a key: refused at start, naming the file.
	bad := filepath.Join(f.dir, "short.key")
	ticket.WriteKeyFile(bad, []byte("short"))
	cfg := f.config(filepath.Join(f.dir, "other.state"))
	cfg.MoreSessionKeys = []string{bad}
	if _, err := New(cfg); !errors.Is(err, ErrSessionKey) || !strings.Contains(err.Error(), "short.key") {
		t.Fatalf("a malformed rotation key: %v", err)
	}
}
