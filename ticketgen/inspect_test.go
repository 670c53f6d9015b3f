package ticketgen

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"shake/ticket"
)

// lockedWriter serialises writes from the progress goroutine and the test.
type lockedWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func smallCampaign(t *testing.T) Config {
	cfg := baseConfig(t)
	cfg.Count, cfg.Budget, cfg.Edges = 30, 3000, 2
	if _, err := Generate(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestInspectGood(t *testing.T) {
	cfg := smallCampaign(t)
	r, err := InspectManifest(filepath.Join(cfg.OutDir, ManifestFile), cfg.CampaignKey)
	if err != nil || !r.OK() || len(r.Shards) != 2 || r.KeyFiles != 2 {
		t.Fatalf("%+v %v", r, err)
	}
	for _, s := range r.Shards {
		if s.MACsChecked != 15 || s.Sum != 1500 || !s.Loaded {
			t.Fatalf("%+v", s)
		}
	}
	sr, err := InspectShard(filepath.Join(cfg.OutDir, "edge-001.tickets"), cfg.CampaignKey)
	if err != nil || len(sr.Problems) != 0 || sr.Header.FirstTicket != 16 {
		t.Fatalf("%+v %v", sr, err)
	}
}

func TestInspectWrongKey(t *testing.T) {
	cfg := smallCampaign(t)
	other := bytes.Repeat([]byte{9}, ticket.KeySize)
	sr, err := InspectShard(filepath.Join(cfg.OutDir, "edge-000.tickets"), other)
	if err != nil || sr.BadMACs != 15 || len(sr.Problems) != 1 {
		t.Fatalf("%+v %v", sr, err)
	}
	r, _ := InspectManifest(filepath.Join(cfg.OutDir, ManifestFile), other)
	if r.OK() {
		t.Fatal("manifest inspected OK under the wrong key")
	}
}

// Flipping any byte of a shard makes both the loader and inspect fail; inspecting the
// manifest also notices the SHA-256.
func TestInspectEveryByteFlip(t *testing.T) {
	cfg := smallCampaign(t)
	path := filepath.Join(cfg.OutDir, "edge-000.tickets")
	orig, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for i := range orig {
		bad := bytes.Clone(orig)
		bad[i] ^= 0x20
		if err := os.WriteFile(path, bad, 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := ticket.LoadShard(path); err == nil {
			t.Fatalf("byte %d: LoadShard accepted", i)
		}
		sr, err := InspectShard(path, nil)
		if err != nil || len(sr.Problems) == 0 {
			t.Fatalf("byte %d: InspectShard: %v %+v", i, err, sr)
		}
		if i%16 == 0 { // the manifest check reads every shard: sample it
			r, err := InspectManifest(filepath.Join(cfg.OutDir, ManifestFile), nil)
			if err != nil || r.OK() {
				t.Fatalf("byte %d: manifest OK", i)
			}
		}
	}
}

func TestInspectManifestProblems(t *testing.T) {
	cfg := smallCampaign(t)
	mp := filepath.Join(cfg.OutDir, ManifestFile)
	orig, _ := os.ReadFile(mp)

	// A shard file swapped for another campaign's shard of the same shape.
	os.Rename(filepath.Join(cfg.OutDir, "edge-001.tickets"), filepath.Join(cfg.OutDir, "moved"))
	r, err := InspectManifest(mp, nil)
	if err != nil || r.OK() || !strings.Contains(strings.Join(r.Problems, " "), "edge-001") {
		t.Fatalf("missing shard: %+v %v", r, err)
	}
	os.Rename(filepath.Join(cfg.OutDir, "moved"), filepath.Join(cfg.OutDir, "edge-001.tickets"))

	// A manifest whose sums no longer agree is corrupt.
	os.WriteFile(mp, bytes.Replace(orig, []byte(`"budget": 3000`), []byte(`"budget": 3001`), 1), 0o644)
	if r, err := InspectManifest(mp, nil); err != nil || r.OK() || r.Manifest != nil {
		t.Fatalf("edited budget: %+v %v", r, err)
	}
	// A wrong shard key file.
	os.WriteFile(mp, orig, 0o644)
	os.Remove(filepath.Join(cfg.OutDir, "edge-000.key"))
	os.WriteFile(filepath.Join(cfg.OutDir, "edge-000.key"), bytes.Repeat([]byte{1}, 32), 0o600)
	if r, _ := InspectManifest(mp, cfg.CampaignKey); r.OK() {
		t.Fatal("wrong shard key accepted")
	}
	if _, err := InspectManifest(filepath.Join(cfg.OutDir, "nope.json"), nil); !errors.Is(err, ErrUnreadable) {
		t.Fatalf("missing manifest: %v", err)
	}
	if _, err := InspectShard(cfg.OutDir, nil); !errors.Is(err, ErrUnreadable) {
		t.Fatalf("directory: %v", err)
	}
}
