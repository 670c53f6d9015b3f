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
		CreatedAt: at, Shards: []ManifestShard{
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
