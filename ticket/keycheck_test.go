package ticket

import (
	"errors"
	"testing"
	"time"
)

func TestKeyCheck(t *testing.T) {
	ck := NewKey()
	k0, _ := ShardKey(ck, "c", testGen, 0)
	k1, _ := ShardKey(ck, "c", testGen, 1)
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

// TestValidateRefusesWrappingRoundCounts: round counts that wrap around uint64 to the
// shard's count must be refused, not accepted as summing correctly.
func TestValidateRefusesWrappingRoundCounts(t *testing.T) {
	h := ShardHeader{Generation: testGen, Version: 1, Campaign: "c", Currency: "CNY", Shard: 0, Shards: 1, FirstTicket: 1,
		Count: 10, Amount: 10, TTLSeconds: 60, Rounds: []RoundWindow{
			{Index: 0, Start: time.Unix(100, 0), End: time.Unix(200, 0)},
			{Index: 1, Start: time.Unix(200, 0), End: time.Unix(300, 0)}},
		RoundRanges: []RoundRange{
			{Round: 0, FirstTicket: 1, Count: 1<<64 - 5, Amount: 5},
			{Round: 1, FirstTicket: 1 + (1<<64 - 5), Count: 15, Amount: 5}}}
	if err := h.Validate(); err == nil {
		t.Fatal("wrapping round counts accepted")
	}
	h.RoundRanges = []RoundRange{{Round: 0, FirstTicket: 1, Count: 4, Amount: 5}, {Round: 1, FirstTicket: 5, Count: 6, Amount: 5}}
	if err := h.Validate(); err != nil {
		t.Fatalf("a valid header refused: %v", err)
	}
}
