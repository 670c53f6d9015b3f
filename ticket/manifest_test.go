package ticket

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func testManifest() *Manifest {
	at := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	return &Manifest{Version: ManifestVersion, Campaign: "c1", Currency: "CNY", Budget: 100, Count: 10, Min: 1, Max: 50,
		TTL: "1h0m0s", TTLSeconds: 3600, Rounds: []RoundWindow{{}}, IssueUntil: at.Add(time.Hour), ExpiresAt: at.Add(2 * time.Hour),
		CreatedAt: at, Generation: testGen, PerUser: 1, Shards: []ManifestShard{
			{Index: 0, File: "edge-000.tickets", FirstTicket: 1, Count: 6, Amount: 60, Rounds: []RoundRange{{Round: 0, FirstTicket: 1, Count: 6, Amount: 60}}},
			{Index: 1, File: "edge-001.tickets", FirstTicket: 7, Count: 4, Amount: 40, Rounds: []RoundRange{{Round: 0, FirstTicket: 7, Count: 4, Amount: 40}}},
		}}
}

func TestManifestValidate(t *testing.T) {
	if err := testManifest().Validate(); err != nil {
		t.Fatal(err)
	}
	for name, mut := range map[string]func(*Manifest){
		"budget":      func(m *Manifest) { m.Budget = 101 },
		"count":       func(m *Manifest) { m.Count = 11 },
		"gap":         func(m *Manifest) { m.Shards[1].FirstTicket = 8; m.Shards[1].Rounds[0].FirstTicket = 8 },
		"path":        func(m *Manifest) { m.Shards[0].File = "../x" },
		"min>amount":  func(m *Manifest) { m.Min = 11 },
		"max<amount":  func(m *Manifest) { m.Max = 9 },
		"max":         func(m *Manifest) { m.Max = MaxTicketAmount + 1 },
		"ttl":         func(m *Manifest) { m.TTLSeconds = 0 },
		"round range": func(m *Manifest) { m.Shards[0].Rounds[0].Amount = 59 },
		"no shards":   func(m *Manifest) { m.Shards = nil },
		"overlap": func(m *Manifest) {
			at := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
			m.Rounds = []RoundWindow{{Index: 0, Start: at, End: at.Add(time.Minute)}, {Index: 1, Start: at, End: at.Add(2 * time.Minute)}}
		},
	} {
		m := testManifest()
		mut(m)
		if m.Validate() == nil {
			t.Errorf("%s: invalid manifest accepted", name)
		}
	}
}

func TestManifestLookups(t *testing.T) {
	m := testManifest()
	for id, want := range map[uint64]int{1: 0, 6: 0, 7: 1, 10: 1, 0: -1, 11: -1} {
		got, ok := m.ShardOf(id)
		if (want < 0) == ok || (ok && got != want) {
			t.Errorf("ShardOf(%d) = %d %v", id, got, ok)
		}
	}
	if !m.InShard(1, 7) || m.InShard(0, 7) || m.InShard(2, 1) || m.InShard(-1, 1) {
		t.Error("InShard")
	}
}

func TestManifestFileRoundTrip(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "manifest.json")
	b, _ := json.Marshal(testManifest())
	if err := WriteFileAtomic(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	m, err := LoadManifest(p)
	if err != nil || m.Budget != 100 || m.TTLDuration() != time.Hour {
		t.Fatalf("%+v %v", m, err)
	}
	os.WriteFile(p, []byte(`{"version":1}`), 0o644)
	if _, err := LoadManifest(p); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("invalid manifest: %v", err)
	}
	if _, err := ParseManifest([]byte("{")); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("bad JSON: %v", err)
	}
}

func TestManifestSignature(t *testing.T) {
	key := testKey(1)
	m := testManifest()
	if err := m.VerifySignature(key); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("unsigned manifest: %v", err)
	}
	if err := m.Sign(key); err != nil {
		t.Fatal(err)
	}
	if err := m.VerifySignature(key); err != nil {
		t.Fatal(err)
	}
	if err := m.VerifySignature(testKey(2)); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("other key: %v", err)
	}
	// The signature is over the decoded value: reformatting the file keeps it valid.
	compact, _ := json.Marshal(m)
	indented, _ := json.MarshalIndent(m, "\t", "    ")
	for _, b := range [][]byte{compact, indented} {
		p, err := ParseManifest(b)
		if err != nil {
			t.Fatal(err)
		}
		if err := p.VerifySignature(key); err != nil {
			t.Fatalf("reformatted manifest: %v", err)
		}
	}
	// Any change of content does not verify.
	for name, mut := range map[string]func(*Manifest){
		"expires_at": func(m *Manifest) { m.ExpiresAt = m.ExpiresAt.Add(-time.Hour) },
		"per_user":   func(m *Manifest) { m.PerUser = 0 },
		"generation": func(m *Manifest) { m.Generation = "ffffffffffffffffffffffffffffffff" },
		"amount":     func(m *Manifest) { m.Shards[0].Rounds[0].Amount-- },
		"signature":  func(m *Manifest) { m.Signature = m.Signature[:len(m.Signature)-2] + "AA" },
		"garbage":    func(m *Manifest) { m.Signature = "!!" },
	} {
		c := *m
		c.Shards = append([]ManifestShard(nil), m.Shards...)
		c.Shards[0].Rounds = append([]RoundRange(nil), m.Shards[0].Rounds...)
		mut(&c)
		if err := c.VerifySignature(key); !errors.Is(err, ErrBadSignature) {
			t.Errorf("%s changed: %v", name, err)
		}
	}
	d1, _ := m.Digest()
	c := *m
	c.ExpiresAt = c.ExpiresAt.Add(time.Second)
	if d2, _ := c.Digest(); d1 == d2 || len(d1) != 64 {
		t.Fatalf("digest %s / %s", d1, d2)
	}
}

func TestLoadManifestKey(t *testing.T) {
	key := testKey(1)
	p := filepath.Join(t.TempDir(), "manifest.json")
	m := testManifest()
	k0, _ := m.ShardKey(key, 0)
	m.Shards[0].KeyCheck = KeyCheck(k0, m.Campaign, 0)
	if err := m.Sign(key); err != nil {
		t.Fatal(err)
	}
	b, _ := json.MarshalIndent(m, "", "  ")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadManifestKey(p, key); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadManifestKey(p, testKey(5)); !errors.Is(err, ErrKeyMismatch) {
		t.Fatalf("wrong key: %v", err)
	}
	// The attack: move expires_at into the past to refund early.
	m.ExpiresAt = m.IssueUntil
	b, _ = json.Marshal(m)
	os.WriteFile(p, b, 0o600)
	if _, err := LoadManifestKey(p, key); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("tampered manifest: %v", err)
	}
	if _, err := LoadManifest(p); err != nil {
		t.Fatalf("LoadManifest checks no signature, but: %v", err)
	}
}

// TestManifestValidateOverflow feeds Validate crafted counts and amounts near the integer
// limits: each must be an error, never a panic or a wrapped sum that passes. The first
// case passed the old Validate (2^63 * 2 wraps to 0) and made the verifier allocate a
// table of 2^63 entries, which panics.
func TestManifestValidateOverflow(t *testing.T) {
	rr := func(first, count uint64, amount int64) []RoundRange {
		return []RoundRange{{Round: 0, FirstTicket: first, Count: count, Amount: amount}}
	}
	base := func() *Manifest {
		m := testManifest()
		m.Min, m.Max = 2, 4
		return m
	}
	for name, mut := range map[string]func(*Manifest){
		"count 2^63 wraps count*min": func(m *Manifest) {
			m.Count, m.Budget = 1<<63+1, 3
			m.Shards[0].Count, m.Shards[0].Amount, m.Shards[0].Rounds = 1<<63, 0, rr(1, 1<<63, 0)
			m.Shards[1].FirstTicket, m.Shards[1].Count, m.Shards[1].Amount, m.Shards[1].Rounds = 1<<63+1, 1, 3, rr(1<<63+1, 1, 3)
		},
		"count 2^64-1": func(m *Manifest) {
			m.Count = 1<<64 - 1
			m.Shards[1].Count, m.Shards[1].Rounds[0].Count = 1<<64-7, 1<<64-7
		},
		"count just above MaxTickets": func(m *Manifest) {
			m.Min = 0
			m.Count = MaxTickets + 6
			m.Shards[1].Count, m.Shards[1].Rounds[0].Count = MaxTickets, MaxTickets
		},
		"budget 2^63-1": func(m *Manifest) {
			m.Budget = 1<<63 - 1
			m.Shards[1].Amount, m.Shards[1].Rounds[0].Amount = 1<<63-61, 1<<63-61
		},
		"amount -2^63": func(m *Manifest) { m.Shards[1].Amount = -1 << 63 },
		"round count wraps": func(m *Manifest) {
			m.Shards[0].Rounds = []RoundRange{{Round: 0, FirstTicket: 1, Count: 1<<64 - 1, Amount: 30}, {Round: 1, FirstTicket: 0, Count: 7, Amount: 30}}
		},
		"ttl overflows Duration": func(m *Manifest) { m.TTLSeconds = 1 << 62 },
		"per_user huge":          func(m *Manifest) { m.PerUser = 1 << 40 },
		"per_user negative":      func(m *Manifest) { m.PerUser = -1 },
		"no generation":          func(m *Manifest) { m.Generation = "" },
		"expires before issue":   func(m *Manifest) { m.ExpiresAt = m.IssueUntil.Add(-time.Second) },
	} {
		m := base()
		mut(m)
		func() {
			defer func() {
				if r := recover(); r != nil {
					t.Errorf("%s: Validate panicked: %v", name, r)
				}
			}()
			if m.Validate() == nil {
				t.Errorf("%s: crafted manifest accepted", name)
			}
		}()
	}
	// A genuine manifest whose count*max exceeds int64 is still valid.
	m := testManifest()
	m.Max = MaxTicketAmount
	m.Count, m.Budget = 1<<33+4, 1<<33*2+40
	m.Shards[0].Count, m.Shards[0].Amount, m.Shards[0].Rounds = 1<<33, 1<<34, rr(1, 1<<33, 1<<34)
	m.Shards[1].FirstTicket, m.Shards[1].Rounds = 1<<33+1, rr(1<<33+1, 4, 40)
	if err := m.Validate(); err != nil {
		t.Fatalf("large genuine manifest: %v", err)
	}
}

func TestManifestCheckTimes(t *testing.T) {
	m := testManifest() // always open: created 2030-01-01, issue until +1h, ttl 1h, expires +2h
	at := m.CreatedAt
	for _, c := range []struct {
		name           string
		issued, opened time.Time
		want           error
	}{
		{"in window", at.Add(time.Minute), at.Add(2 * time.Minute), nil},
		{"skew before created", at.Add(-ClockSkew), at, nil},
		{"before created", at.Add(-ClockSkew - time.Second), at, ErrIssuedOutsideRound},
		{"after issue_until", m.IssueUntil.Add(ClockSkew + time.Second), m.IssueUntil.Add(time.Minute), ErrIssuedOutsideRound},
		{"issued in 2099", at.AddDate(69, 0, 0), at.AddDate(69, 0, 0), ErrIssuedOutsideRound},
		{"opened after ttl", at.Add(time.Minute), at.Add(time.Minute + time.Hour + ClockSkew + time.Second), ErrOpenedAfterExpiry},
		{"opened at ttl", at.Add(time.Minute), at.Add(time.Minute + time.Hour), nil},
		{"opened before issued", at.Add(time.Hour), at.Add(time.Hour - ClockSkew - time.Second), ErrOpenedAfterExpiry},
	} {
		if err := m.CheckTimes(0, c.issued, c.opened); err != c.want {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
	// Timed rounds: the round's own window, and expires_at caps the expiry.
	m.Rounds = []RoundWindow{{Index: 0, Start: at, End: at.Add(time.Minute)}, {Index: 1, Start: at.Add(time.Hour), End: at.Add(2 * time.Hour)}}
	m.IssueUntil, m.ExpiresAt = at.Add(2*time.Hour), at.Add(150*time.Minute)
	if err := m.CheckTimes(0, at.Add(time.Hour), at.Add(time.Hour)); err != ErrIssuedOutsideRound {
		t.Errorf("issued in round 1's window, claimed round 0: %v", err)
	}
	if err := m.CheckTimes(1, at.Add(time.Hour+time.Minute), at.Add(time.Hour+2*time.Minute)); err != nil {
		t.Error(err)
	}
	if err := m.CheckTimes(1, at.Add(2*time.Hour), at.Add(150*time.Minute+ClockSkew+time.Second)); err != ErrOpenedAfterExpiry {
		t.Errorf("opened after expires_at: %v", err)
	}
	if err := m.CheckTimes(2, at, at); err != ErrIssuedOutsideRound {
		t.Errorf("round out of range: %v", err)
	}
	if n := testing.AllocsPerRun(100, func() { _ = m.CheckTimes(1, at.Add(time.Hour+time.Minute), at.Add(time.Hour+2*time.Minute)) }); n != 0 {
		t.Errorf("CheckTimes: %v allocs", n)
	}
}
