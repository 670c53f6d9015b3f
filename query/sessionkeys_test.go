package query

import (
	"testing"
	"time"

	"shake/ticket"
)

// Key rotation: a query server given two session keys answers sessions signed with
// either and refuses a third key's with 401.
func TestSessionKeyRotation(t *testing.T) {
	f := fixtures(t)[0]
	f.insert(t, row{campaign: "c", ticket: 1, amount: 1, uid: 5, postedAt: t0})
	newKey := ticket.NewKey()
	ts := startServer(t, f.url, func(c *Config) { c.MoreSessionKeys = [][]byte{newKey} })
	nk, _ := ticket.NewSessionKey(newKey)
	other, _ := ticket.NewSessionKey(ticket.NewKey())
	exp := time.Now().Add(time.Hour).Unix()
	for name, tc := range map[string]struct {
		tok  string
		want int
	}{
		"old key":                 {session(5), 200},
		"new key":                 {string(nk.Mint(nil, 5, exp)), 200},
		"new key with attributes": {string(nk.MintAttrs(nil, 5, exp, []byte("dev"), 3)), 200},
		"a key of neither":        {string(other.Mint(nil, 5, exp)), 401},
	} {
		if st, got := ts.get(t, "/v1/packets", tc.tok); st != tc.want {
			t.Errorf("%s: %d %s, want %d", name, st, got, tc.want)
		}
	}
}
