package ticket

import (
	"errors"
	"testing"
)

func TestKeyCheck(t *testing.T) {
	ck := NewKey()
	k0, _ := ShardKey(ck, "c", 0)
	k1, _ := ShardKey(ck, "c", 1)
	want := KeyCheck(k0, "c", 0)
	if len(want) != 32 {
		t.Fatalf("key check %q is not 16 bytes of hex", want)
	}
	cases := []struct {
		name     string
		key      []byte
		campaign string
		shard    int
		want     string
		ok       bool
	}{
		{"right key", k0, "c", 0, want, true},
		{"other shard's key", k1, "c", 0, want, false},
		{"right key, claimed for another shard", k0, "c", 1, want, false},
		{"right key, other campaign", k0, "d", 0, want, false},
		{"random key", NewKey(), "c", 0, want, false},
		{"no check recorded", NewKey(), "c", 0, "", true},
	}
	for _, c := range cases {
		err := CheckShardKey(c.key, c.campaign, c.shard, c.want)
		if (err == nil) != c.ok || (err != nil && !errors.Is(err, ErrKeyMismatch)) {
			t.Errorf("%s: err = %v, want ok=%v", c.name, err, c.ok)
		}
	}
}
