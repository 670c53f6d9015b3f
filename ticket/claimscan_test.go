package ticket

import (
	"math/rand/v2"
	"testing"
	"time"
)

func sameClaim(a, b *Claim) bool {
	return a.Campaign == b.Campaign && a.Ticket == b.Ticket && a.Shard == b.Shard && a.Round == b.Round &&
		a.Amount == b.Amount && a.Currency == b.Currency && a.UID == b.UID && a.IssuedAt.Equal(b.IssuedAt) &&
		a.OpenedAt.Equal(b.OpenedAt) && a.IssuedAt.Location() == b.IssuedAt.Location() &&
		a.OpenedAt.Location() == b.OpenedAt.Location() && a.MAC == b.MAC && a.Sig == b.Sig
}

// TestScanClaimReadsWhatAppendJSONWrites: every claim AppendJSON writes is taken by the
// fast path, with the result ParseClaim gives. If the wire format changes, this fails
// before the fast path silently stops being used.
func TestScanClaimReadsWhatAppendJSONWrites(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	for i := 0; i < 2000; i++ {
		c := Claim{Campaign: []string{"cny-2026", "a", "z0-9"}[i%3], Ticket: rng.Uint64N(1<<40) + 1,
			Shard: rng.IntN(MaxShards), Round: rng.IntN(1 << 16), Amount: rng.Int64N(MaxTicketAmount + 1),
			Currency: []string{"CNY", "USD"}[i%2], UID: rng.Uint64(),
			IssuedAt: time.UnixMilli(rng.Int64N(4e12)), OpenedAt: time.UnixMilli(rng.Int64N(4e12))}
		if i%5 == 0 {
			c.UID = 0
		}
		for j := range c.MAC {
			c.MAC[j] = byte(rng.Uint32())
		}
		if i%7 != 0 {
			for j := range c.Sig {
				c.Sig[j] = byte(rng.Uint32())
			}
		}
		b := c.AppendJSON(nil)
		var got Claim
		if !ScanClaim(b, &got) {
			t.Fatalf("ScanClaim refused %s", b)
		}
		want, err := ParseClaim(b)
		if err != nil || !sameClaim(&got, &want) {
			t.Fatalf("%s: ScanClaim %+v, ParseClaim %+v %v", b, got, want, err)
		}
	}
}

func TestScanClaimRefusesOtherSpellings(t *testing.T) {
	good := `{"v":1,"campaign":"c","ticket":"5","shard":0,"round":0,"amount":7,"currency":"CNY","uid":"9",` +
		`"issued_at":"2026-01-02T03:04:05.006Z","opened_at":"2026-01-02T03:04:05.006Z","mac":"AAAAAAAAAAAAAAAA"}`
	var c Claim
	if !ScanClaim([]byte(good), &c) {
		t.Fatalf("refused %s", good)
	}
	for _, bad := range []string{
		`{"v":1, "campaign":"c"`,
		good[:len(good)-1],
		good + " ",
		`{"v":2` + good[6:],
		`{"v":1,"campaign":"c","ticket":"05"` + good[len(`{"v":1,"campaign":"c","ticket":"5"`):],
		`{"v":1,"campaign":"c","ticket":"0"` + good[len(`{"v":1,"campaign":"c","ticket":"5"`):],
		`{"v":1,"campaign":"C"` + good[len(`{"v":1,"campaign":"c"`):],
		`{"v":1,"campaign":"\u0063"` + good[len(`{"v":1,"campaign":"c"`):],
	} {
		if ScanClaim([]byte(bad), &c) {
			t.Errorf("accepted %s", bad)
		}
	}
	for _, ts := range []string{"2026-02-30T03:04:05.006Z", "2026-01-02T24:04:05.006Z", "2026-01-02T03:04:60.006Z",
		"2026-01-02T03:04:05Z", "2026-01-02T03:04:05.006+00:00", "2026-13-02T03:04:05.006Z", "2026-01-00T03:04:05.006Z"} {
		if _, ok := scanWireTime([]byte(ts)); ok {
			t.Errorf("accepted time %s", ts)
		}
	}
}

// FuzzScanClaim: whatever the fast path accepts, ParseClaim accepts with the same claim.
func FuzzScanClaim(f *testing.F) {
	c := Claim{Campaign: "cny-2026", Ticket: 42, Shard: 1, Round: 2, Amount: 300, Currency: "CNY", UID: 7,
		IssuedAt: time.UnixMilli(1700000000123), OpenedAt: time.UnixMilli(1700000001456)}
	f.Add(c.AppendJSON(nil))
	c.Sig[3] = 9
	f.Add(c.AppendJSON(nil))
	f.Fuzz(func(t *testing.T, b []byte) {
		var got Claim
		if !ScanClaim(b, &got) {
			return
		}
		want, err := ParseClaim(b)
		if err != nil {
			t.Fatalf("ScanClaim accepted what ParseClaim refuses (%v): %q", err, b)
		}
		if !sameClaim(&got, &want) {
			t.Fatalf("%q: ScanClaim %+v, ParseClaim %+v", b, got, want)
		}
	})
}

func BenchmarkScanClaim(b *testing.B) {
	c := Claim{Campaign: "cny-2026", Ticket: 42, Shard: 1, Round: 2, Amount: 300, Currency: "CNY", UID: 7,
		IssuedAt: time.UnixMilli(1700000000123), OpenedAt: time.UnixMilli(1700000001456)}
	buf := c.AppendJSON(nil)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if !ScanClaim(buf, &c) {
			b.Fatal("refused")
		}
	}
}

func BenchmarkParseClaim(b *testing.B) {
	c := Claim{Campaign: "cny-2026", Ticket: 42, Shard: 1, Round: 2, Amount: 300, Currency: "CNY", UID: 7,
		IssuedAt: time.UnixMilli(1700000000123), OpenedAt: time.UnixMilli(1700000001456)}
	buf := c.AppendJSON(nil)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if _, err := ParseClaim(buf); err != nil {
			b.Fatal(err)
		}
	}
}
