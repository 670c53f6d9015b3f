package ticket

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// The seed corpora live in testdata/fuzz/<Target>/ (valid inputs made with the fixed test
// keys, plus edge cases); `go test` runs them as regression tests, `go test -fuzz` grows them.

func FuzzReadShard(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		sh, err := ReadShard(bytes.NewReader(data), "fuzz")
		if err != nil {
			return
		}
		// Anything accepted must be internally consistent.
		if err := sh.Header.Validate(); err != nil {
			t.Fatalf("accepted header fails Validate: %v", err)
		}
		var sum int64
		for _, r := range sh.Records {
			sum += int64(r.Amount)
		}
		if uint64(len(sh.Records)) != sh.Header.Count || sum != sh.Header.Amount {
			t.Fatalf("accepted shard holds %d / %d, header %d / %d", len(sh.Records), sum, sh.Header.Count, sh.Header.Amount)
		}
	})
}

func FuzzParseManifest(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := ParseManifest(data)
		if err != nil {
			return
		}
		if err := m.Validate(); err != nil {
			t.Fatalf("accepted manifest fails Validate: %v", err)
		}
		// Encoding what was accepted and parsing it again must be stable.
		b1, err := json.Marshal(m)
		if err != nil {
			return // e.g. a year outside 0..9999 parsed but cannot be re-encoded
		}
		m2, err := ParseManifest(b1)
		if err != nil {
			t.Fatalf("re-encoded manifest rejected: %v\n%s", err, b1)
		}
		b2, _ := json.Marshal(m2)
		if !bytes.Equal(b1, b2) {
			t.Fatalf("unstable encoding:\n%s\n%s", b1, b2)
		}
	})
}

func FuzzSessionVerify(f *testing.F) {
	sk, err := NewSessionKey(testKey(3))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(sk.MintAttrs(nil, 7, 2_000_000_000, []byte("dev1"), 2), int64(1_000_000_000))
	f.Add(sk.Mint(nil, 7, 2_000_000_000), int64(1_000_000_000))
	f.Add([]byte("7.2000000000.~.x"), int64(0))
	f.Fuzz(func(t *testing.T, tok []byte, now int64) {
		var s Session
		if err := sk.VerifySession(tok, now, &s); err != nil {
			return
		}
		// An accepted token must be exactly the one MintAttrs makes for its uid, expiry
		// and attributes.
		i := bytes.IndexByte(tok, '.')
		j := i + 1 + bytes.IndexByte(tok[i+1:], '.')
		exp, ok := ParseUint(tok[i+1 : j])
		if !ok || int64(exp) <= now || s.Risk > MaxRisk || (s.Device != nil && !ValidDevice(s.Device)) {
			t.Fatalf("accepted token %q (%+v) with expiry %q at %d", tok, s, tok[i+1:j], now)
		}
		uid := s.UID
		want := sk.MintAttrs(nil, uid, int64(exp), s.Device, s.Risk)
		if !bytes.Equal(want, tok) {
			t.Fatalf("accepted %q, Mint gives %q", tok, want)
		}
	})
}

func FuzzTokenOpen(f *testing.F) {
	sealers, o := testSealerOpener(f, 2)
	f.Fuzz(func(t *testing.T, tok []byte) {
		var got TicketToken
		if err := o.Open(&got, tok, make([]byte, TokenRawLen)); err != nil {
			return
		}
		if sh, err := TokenShard(tok); err != nil || sh != got.Shard {
			t.Fatalf("TokenShard = %d, %v; Open says shard %d", sh, err, got.Shard)
		}
		// What opened must survive a re-seal under the same shard.
		again := sealers[got.Shard].Seal(nil, &got)
		var back TicketToken
		if err := o.Open(&back, again, make([]byte, TokenRawLen)); err != nil || back != got {
			t.Fatalf("re-sealed token: %v %+v vs %+v", err, back, got)
		}
	})
}

func FuzzParseClaim(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := ParseClaim(data)
		if err != nil {
			return
		}
		for _, tm := range []time.Time{c.IssuedAt, c.OpenedAt} {
			if y := tm.UTC().Year(); y < 1 || y > 9999 {
				return // parsed with an offset that leaves the four-digit years in UTC
			}
		}
		b := c.AppendJSON(nil)
		c2, err := ParseClaim(b)
		if err != nil {
			t.Fatalf("re-encoded claim rejected: %v\n%s", err, b)
		}
		if c2.Campaign != c.Campaign || c2.Ticket != c.Ticket || c2.Shard != c.Shard || c2.Round != c.Round ||
			c2.Amount != c.Amount || c2.Currency != c.Currency || c2.UID != c.UID || c2.MAC != c.MAC ||
			!c2.IssuedAt.Equal(c.IssuedAt.Truncate(time.Millisecond)) || !c2.OpenedAt.Equal(c.OpenedAt.Truncate(time.Millisecond)) {
			t.Fatalf("round trip changed the claim:\n%+v\n%+v", c, c2)
		}
	})
}

// TestWriteFuzzCorpus rewrites the valid seeds of the fuzz corpora from the fixed test
// keys when SHAKE_WRITE_CORPUS=1 (after a format change); otherwise it is skipped.
func TestWriteFuzzCorpus(t *testing.T) {
	if os.Getenv("SHAKE_WRITE_CORPUS") != "1" {
		t.Skip("set SHAKE_WRITE_CORPUS=1 to rewrite testdata/fuzz seeds")
	}
	write := func(target, name string, b []byte) {
		p := filepath.Join("testdata", "fuzz", target, name)
		if err := os.WriteFile(p, []byte("go test fuzz v1\n[]byte("+strconv.Quote(string(b))+")\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range []uint64{0, 1, 5, 40} {
		b, _ := buildShard(t, n, int(n%3), n)
		write("FuzzReadShard", "valid-"+strconv.FormatUint(n, 10), b)
	}
	m := testManifest()
	if err := m.Sign(testKey(1)); err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(m)
	write("FuzzParseManifest", "valid", b)
	at := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	m.Rounds = []RoundWindow{{Index: 0, Start: at, End: at.Add(time.Minute)}, {Index: 1, Start: at.Add(time.Hour), End: at.Add(2 * time.Hour)}}
	for i := range m.Shards {
		s := &m.Shards[i]
		s.Rounds = []RoundRange{{Round: 0, FirstTicket: s.FirstTicket, Count: 2, Amount: 20}, {Round: 1, FirstTicket: s.FirstTicket + 2, Count: s.Count - 2, Amount: s.Amount - 20}}
	}
	m.IssueUntil, m.ExpiresAt = at.Add(2*time.Hour), at.Add(3*time.Hour)
	b, _ = json.Marshal(m)
	write("FuzzParseManifest", "rounds", b)
	// A crafted manifest whose counts wrapped the old Validate (see
	// TestManifestValidateOverflow).
	m = testManifest()
	m.Min, m.Max, m.Count, m.Budget = 2, 4, 1<<63+1, 3
	m.Shards[0].Count, m.Shards[0].Amount = 1<<63, 0
	m.Shards[0].Rounds = []RoundRange{{Round: 0, FirstTicket: 1, Count: 1 << 63, Amount: 0}}
	m.Shards[1].FirstTicket, m.Shards[1].Count, m.Shards[1].Amount = 1<<63+1, 1, 3
	m.Shards[1].Rounds = []RoundRange{{Round: 0, FirstTicket: 1<<63 + 1, Count: 1, Amount: 3}}
	b, _ = json.Marshal(m)
	write("FuzzParseManifest", "overflow-count", b)
	b = bytes.Replace(b, []byte(`"budget":3`), []byte(`"budget":9223372036854775807`), 1)
	write("FuzzParseManifest", "overflow-budget", b)
	c := testClaim()
	testClaimSigner(t).Sign(&c)
	write("FuzzParseClaim", "valid", c.AppendJSON(nil))
}
