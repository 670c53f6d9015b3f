package ticketgen

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"shake/ticket"
)

func revealCampaign(t *testing.T) (Config, *ticket.Manifest) {
	t.Helper()
	cfg := baseConfig(t)
	cfg.Count, cfg.Budget, cfg.Max = 3000, 300_000, 150
	cfg.SeedSecret = NewSeed()
	cfg.Prizes = []Prize{{Amount: 8888, Count: 3}, {Amount: 888, Count: 30}}
	cfg.Budget += 3*8888 + 30*888 - 33*100
	cfg.Rounds = []ticket.RoundWindow{
		{Start: testNow.Add(time.Hour), End: testNow.Add(2 * time.Hour)},
		{Start: testNow.Add(2 * time.Hour), End: testNow.Add(3 * time.Hour)},
	}
	m, err := Generate(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return cfg, m
}

func TestRevealGood(t *testing.T) {
	cfg, _ := revealCampaign(t)
	r, err := Reveal(filepath.Join(cfg.OutDir, ManifestFile), filepath.Join(cfg.OutDir, SeedFile))
	if err != nil {
		t.Fatal(err)
	}
	if !r.OK() || r.Shards != cfg.Edges || r.Tickets != cfg.Count {
		t.Fatalf("reveal of an honest campaign: ok %v, %d shards, %d tickets, problems %v", r.OK(), r.Shards, r.Tickets, r.Problems)
	}
}

func TestRevealWrongSeed(t *testing.T) {
	cfg, _ := revealCampaign(t)
	other := filepath.Join(t.TempDir(), "seed")
	var s [SeedSize]byte
	copy(s[:], NewSeed())
	os.WriteFile(other, seedFileBytes(&s), 0o600)
	r, err := Reveal(filepath.Join(cfg.OutDir, ManifestFile), other)
	if err != nil {
		t.Fatal(err)
	}
	if r.OK() || r.Committed || len(r.Problems) != 1 || !strings.Contains(r.Problems[0], "not the committed seed") {
		t.Fatalf("another seed: ok %v, problems %v", r.OK(), r.Problems)
	}
}

// An operator who moves a prize to another ticket (a friend's place in the queue) after
// committing keeps every total and checksum consistent, but not the seed's amounts: the
// reveal names the first ticket that differs.
func TestRevealTamperedShard(t *testing.T) {
	cfg, m := revealCampaign(t)
	ms := &m.Shards[1]
	path := filepath.Join(cfg.OutDir, ms.File)
	sh, err := ticket.LoadShard(path)
	if err != nil {
		t.Fatal(err)
	}
	// Swap the round's first ticket with its largest (a prize, or the luckiest amount).
	rr := ms.Rounds[0]
	recs := sh.Records[:rr.Count]
	prize := 0
	for i, rec := range recs {
		if rec.Amount > recs[prize].Amount {
			prize = i
		}
	}
	if prize == 0 {
		t.Fatal("BUG in the fixture: the first ticket is already the largest")
	}
	moved := recs[prize].Amount
	recs[0], recs[prize] = recs[prize], recs[0]
	var out bytes.Buffer
	sw, err := ticket.NewShardWriter(&out, sh.Header)
	if err != nil {
		t.Fatal(err)
	}
	for _, rec := range sh.Records {
		if err := sw.Append(rec.Amount, rec.MAC); err != nil {
			t.Fatal(err)
		}
	}
	if err := sw.Close(); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(path, out.Bytes(), 0o600)
	sum := sha256.Sum256(out.Bytes())
	m.Shards[1].SHA256 = hex.EncodeToString(sum[:])
	mj, _ := json.Marshal(m)
	os.WriteFile(filepath.Join(cfg.OutDir, ManifestFile), mj, 0o644)

	r, err := Reveal(filepath.Join(cfg.OutDir, ManifestFile), filepath.Join(cfg.OutDir, SeedFile))
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("ticket %d (shard 1, round 0): the shard file holds %d", rr.FirstTicket, moved)
	if r.OK() || !r.Committed || r.Shards != 1 || len(r.Problems) != 1 || !strings.Contains(r.Problems[0], want) {
		t.Fatalf("tampered shard: ok %v, %d shards good, problems %v (want %q)", r.OK(), r.Shards, r.Problems, want)
	}
	// A flipped byte: the shard's checksum against the manifest.
	raw := out.Bytes()
	raw[len(raw)/2] ^= 1
	os.WriteFile(path, raw, 0o600)
	r, err = Reveal(filepath.Join(cfg.OutDir, ManifestFile), filepath.Join(cfg.OutDir, SeedFile))
	if err != nil || r.OK() || len(r.Problems) != 1 || !strings.Contains(r.Problems[0], "shard 1") {
		t.Fatalf("flipped byte: %v, problems %v", err, r.Problems)
	}
}

func TestRevealOldManifestHasNoCommitment(t *testing.T) {
	cfg, m := revealCampaign(t)
	seed := uint64(0)
	m.Seed, m.SeedSHA256 = &seed, ""
	mj, _ := json.Marshal(m)
	os.WriteFile(filepath.Join(cfg.OutDir, ManifestFile), mj, 0o644)
	r, err := Reveal(filepath.Join(cfg.OutDir, ManifestFile), filepath.Join(cfg.OutDir, SeedFile))
	if err != nil || r.OK() || !strings.Contains(strings.Join(r.Problems, ";"), "no seed_sha256") {
		t.Fatalf("old manifest: %v, problems %v", err, r.Problems)
	}
	if _, err := Reveal(filepath.Join(cfg.OutDir, ManifestFile), filepath.Join(cfg.OutDir, "nope")); err == nil {
		t.Fatal("a missing seed file is not an error")
	}
}
