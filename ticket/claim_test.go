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
	testClaimSigner(t).Sign(&c)
	b := c.AppendJSON(nil)
	// The test vector of the claim format: testClaimSigner's key is ClaimKey(testKey(1),
	// "c1", testGen); "sig" is always the last field.
	const want = `{"v":1,"campaign":"c1","ticket":"77","shard":3,"round":1,"amount":888,"currency":"CNY","uid":"42","issued_at":"2030-01-01T00:00:01.123Z","opened_at":"2030-01-01T00:00:02.000Z","mac":"CQgHAAAAAAAAAAAA","sig":"Xh7c2Cblt7xe86j7jW1k8A"}`
	if string(b) != want {
		t.Fatalf("got  %s\nwant %s", b, want)
	}
	got, err := ParseClaim(b)
	if err != nil {
		t.Fatal(err)
	}
	if got.Campaign != c.Campaign || got.Ticket != c.Ticket || got.Amount != c.Amount || got.UID != c.UID ||
		!got.IssuedAt.Equal(c.IssuedAt) || got.MAC != c.MAC || !got.HasMAC() || got.Sig != c.Sig || !got.HasSig() {
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
		"version":   strings.Replace(good, `"v":1`, `"v":2`, 1),
		"campaign":  strings.Replace(good, `"c1"`, `"C1"`, 1),
		"ticket":    strings.Replace(good, `"77"`, `"0"`, 1),
		"uid":       strings.Replace(good, `"42"`, `"-4"`, 1),
		"amount":    strings.Replace(good, `888`, `-1`, 1),
		"shard":     strings.Replace(good, `"shard":3`, `"shard":70000`, 1),
		"currency":  strings.Replace(good, `CNY`, `cny`, 1),
		"time":      strings.Replace(good, `2030-01-01T00:00:02.000Z`, `yesterday`, 1),
		"mac":       strings.Replace(good, `CQgHAAAAAAAAAAAA`, `CQgH`, 1),
		"sig short": strings.Replace(good, `"sig":"AAAAAAAAAAAAAAAAAAAAAA"`, `"sig":"AAAA"`, 1),
		"sig bits":  strings.Replace(good, `"sig":"AAAAAAAAAAAAAAAAAAAAAA"`, `"sig":"AAAAAAAAAAAAAAAAAAAAAB"`, 1),
		"sig type":  strings.Replace(good, `"sig":"AAAAAAAAAAAAAAAAAAAAAA"`, `"sig":12`, 1),
		"json":      good[:20],
		"large":     good[:len(good)-1] + `,"x":"` + strings.Repeat("a", MaxClaimLen) + `"}`,
	} {
		if _, err := ParseClaim([]byte(s)); err == nil {
			t.Errorf("%s: accepted %s", name, s)
		}
	}
}

func testClaimSigner(t testing.TB) *ClaimSigner {
	t.Helper()
	k, err := ClaimKey(testKey(1), "c1", testGen)
	if err != nil {
		t.Fatal(err)
	}
	cs, err := NewClaimSigner(k)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

func TestClaimSignatureCoversEveryField(t *testing.T) {
	cs := testClaimSigner(t)
	c := testClaim()
	cs.Sign(&c)
	if !cs.Verify(&c) {
		t.Fatal("a signed claim does not verify")
	}
	// Through the wire and back it still verifies.
	parsed, err := ParseClaim(c.AppendJSON(nil))
	if err != nil || !cs.Verify(&parsed) {
		t.Fatalf("parsed claim does not verify: %v", err)
	}
	for name, mut := range map[string]func(*Claim){
		"campaign":  func(c *Claim) { c.Campaign = "c2" },
		"ticket":    func(c *Claim) { c.Ticket++ },
		"shard":     func(c *Claim) { c.Shard++ },
		"round":     func(c *Claim) { c.Round++ },
		"amount":    func(c *Claim) { c.Amount++ },
		"currency":  func(c *Claim) { c.Currency = "USD" },
		"uid":       func(c *Claim) { c.UID++ },
		"issued_at": func(c *Claim) { c.IssuedAt = c.IssuedAt.Add(time.Millisecond) },
		"opened_at": func(c *Claim) { c.OpenedAt = c.OpenedAt.Add(time.Millisecond) },
		"mac":       func(c *Claim) { c.MAC[11] ^= 1 },
		"sig":       func(c *Claim) { c.Sig[0] ^= 1 },
		"no sig":    func(c *Claim) { c.Sig = [ClaimSigSize]byte{} },
		"bad form":  func(c *Claim) { c.Currency = "CNYX" },
	} {
		m := c
		mut(&m)
		if cs.Verify(&m) {
			t.Errorf("%s: a tampered claim verifies", name)
		}
	}
	// Another generation's key (a campaign id generated twice) does not verify it.
	k2, _ := ClaimKey(testKey(1), "c1", "ffffffffffffffffffffffffffffffff")
	other, _ := NewClaimSigner(k2)
	if other.Verify(&c) {
		t.Fatal("another generation's signer accepts the claim")
	}
	if n := testing.AllocsPerRun(100, func() { cs.Sign(&c); cs.Verify(&c) }); n != 0 && !raceEnabled {
		t.Errorf("Sign+Verify: %v allocs/op", n)
	}
}

func TestParseClaimTruncatesToMilliseconds(t *testing.T) {
	cs := testClaimSigner(t)
	c := testClaim()
	cs.Sign(&c)
	b := strings.Replace(string(c.AppendJSON(nil)), "01.123Z", "01.123456Z", 1)
	got, err := ParseClaim([]byte(b))
	if err != nil || !cs.Verify(&got) || !got.IssuedAt.Equal(c.IssuedAt) {
		t.Fatalf("sub-millisecond digits: %v %v", err, got.IssuedAt)
	}
}

func BenchmarkClaimSign(b *testing.B) {
	cs := testClaimSigner(b)
	c := testClaim()
	b.ReportAllocs()
	for b.Loop() {
		cs.Sign(&c)
	}
}

func BenchmarkClaimVerify(b *testing.B) {
	cs := testClaimSigner(b)
	c := testClaim()
	cs.Sign(&c)
	b.ReportAllocs()
	for b.Loop() {
		if !cs.Verify(&c) {
			b.Fatal("does not verify")
		}
	}
}
