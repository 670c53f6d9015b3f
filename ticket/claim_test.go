package ticket

import (
	"strings"
	"testing"
	"time"
)

func testClaim() Claim {
	return Claim{Campaign: "c1", Ticket: 77, Shard: 3, Round: 1, Amount: 888, Currency: "CNY", UID: 42,
		IssuedAt: time.Date(2030, 1, 1, 0, 0, 1, 123e6, time.UTC), OpenedAt: time.Date(2030, 1, 1, 0, 0, 2, 0, time.UTC),
		MAC: [MACSize]byte{9, 8, 7}}
}

func TestClaimRoundTrip(t *testing.T) {
	c := testClaim()
	b := c.AppendJSON(nil)
	const want = `{"v":1,"campaign":"c1","ticket":"77","shard":3,"round":1,"amount":888,"currency":"CNY","uid":"42","issued_at":"2030-01-01T00:00:01.123Z","opened_at":"2030-01-01T00:00:02.000Z","mac":"CQgHAAAAAAAAAAAA"}`
	if string(b) != want {
		t.Fatalf("got  %s\nwant %s", b, want)
	}
	got, err := ParseClaim(b)
	if err != nil {
		t.Fatal(err)
	}
	if got.Campaign != c.Campaign || got.Ticket != c.Ticket || got.Amount != c.Amount || got.UID != c.UID ||
		!got.IssuedAt.Equal(c.IssuedAt) || got.MAC != c.MAC || !got.HasMAC() {
		t.Fatalf("%+v", got)
	}
	if string(c.AppendKey(nil)) != "77" {
		t.Fatal("key")
	}
	buf := make([]byte, 0, MaxClaimLen)
	if n := testing.AllocsPerRun(100, func() { buf = c.AppendJSON(buf[:0]) }); n != 0 {
		t.Errorf("AppendJSON: %v allocs/op", n)
	}
}

func TestParseClaimRejects(t *testing.T) {
	good := string(func() []byte { c := testClaim(); return c.AppendJSON(nil) }())
	for name, s := range map[string]string{
		"version":  strings.Replace(good, `"v":1`, `"v":2`, 1),
		"campaign": strings.Replace(good, `"c1"`, `"C1"`, 1),
		"ticket":   strings.Replace(good, `"77"`, `"0"`, 1),
		"uid":      strings.Replace(good, `"42"`, `"-4"`, 1),
		"amount":   strings.Replace(good, `888`, `-1`, 1),
		"shard":    strings.Replace(good, `"shard":3`, `"shard":70000`, 1),
		"currency": strings.Replace(good, `CNY`, `cny`, 1),
		"time":     strings.Replace(good, `2030-01-01T00:00:02.000Z`, `yesterday`, 1),
		"mac":      strings.Replace(good, `CQgHAAAAAAAAAAAA`, `CQgH`, 1),
		"json":     good[:20],
		"large":    good[:len(good)-1] + `,"x":"` + strings.Repeat("a", MaxClaimLen) + `"}`,
	} {
		if _, err := ParseClaim([]byte(s)); err == nil {
			t.Errorf("%s: accepted %s", name, s)
		}
	}
}
