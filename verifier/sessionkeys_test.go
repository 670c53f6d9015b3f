package verifier

import (
	"path/filepath"
	"testing"
	"time"

	"shake/ticket"
)

// Key rotation: a verifier given two session keys opens for sessions signed with either
// (with or without attributes) and refuses a third key's with 401.
func TestSessionKeyRotation(t *testing.T) {
	f := newFixture(t, 1, 100)
	newKey := ticket.NewKey()
	newPath := filepath.Join(f.dir, "session-new.key")
	if err := ticket.WriteKeyFile(newPath, newKey); err != nil {
		t.Fatal(err)
	}
	cfg := f.config([]string{"127.0.0.1:1"})
	cfg.KafkaTimeout = 200 * time.Millisecond
	cfg.MoreSessionKeys = []string{newPath}
	s := newServerNoKafka(t, f, cfg)
	nk, _ := ticket.NewSessionKey(newKey)
	other, _ := ticket.NewSessionKey(ticket.NewKey())
	exp := time.Now().Add(time.Hour).Unix()
	for i, tc := range []struct {
		bearer []byte
		want   int
	}{
		{f.bearer(1), 200},
		{nk.Mint([]byte("Bearer "), 2, exp), 200},
		{nk.MintAttrs([]byte("Bearer "), 3, exp, []byte("dev-3"), 4), 200},
		{other.Mint([]byte("Bearer "), 4, exp), 401},
	} {
		uid := uint64(i + 1)
		if st, got := do(s, "POST", "/v1/open", tc.bearer, body(f.tok(uid, uid))); st != tc.want {
			t.Errorf("case %d: %d %s, want %d", i, st, got, tc.want)
		}
	}
}
