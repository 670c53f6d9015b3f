package ticketgen

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"shake/ticket"
)

var testNow = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)

func testKey() []byte { return bytes.Repeat([]byte{7}, ticket.KeySize) }

func baseConfig(t testing.TB) Config {
	return Config{Campaign: "c1", CampaignKey: testKey(), Budget: 100000, Count: 1000, Edges: 3,
		Seed: 42, OutDir: t.TempDir(), Now: testNow}
}

// checkOutput loads every shard Generate wrote and checks it against the manifest and
// the config: ids contiguous and each accounted for once, amounts in bounds, per-shard
// and per-round totals, SHA-256, every MAC, shard keys.
func checkOutput(t *testing.T, cfg Config, m *ticket.Manifest) [][]ticket.Record {
	t.Helper()
	if err := m.Validate(); err != nil {
		t.Fatal(err)
	}
	onDisk, err := ticket.LoadManifestKey(filepath.Join(cfg.OutDir, ManifestFile), cfg.CampaignKey)
	if err != nil {
		t.Fatal(err)
	}
	if onDisk.Budget != cfg.Budget || onDisk.Count != cfg.Count || len(onDisk.Shards) != cfg.Edges {
		t.Fatalf("manifest %d / %d / %d shards", onDisk.Budget, onDisk.Count, len(onDisk.Shards))
	}
	if !ticket.ValidGeneration(onDisk.Generation) || onDisk.PerUser != cfg.PerUser {
		t.Fatalf("manifest generation %q per_user %d (want %d)", onDisk.Generation, onDisk.PerUser, cfg.PerUser)
	}
	tm, _ := onDisk.TicketMAC(cfg.CampaignKey)
	var all [][]ticket.Record
	nextID, total := uint64(1), int64(0)
	for i, ms := range onDisk.Shards {
		path := filepath.Join(cfg.OutDir, ms.File)
		raw, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if sum := sha256.Sum256(raw); hex.EncodeToString(sum[:]) != ms.SHA256 {
			t.Fatalf("shard %d: sha256 differs from the manifest", i)
		}
		sh, err := ticket.LoadShard(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := onDisk.CheckHeader(&sh.Header); err != nil {
			t.Fatal(err)
		}
		if sh.Header.FirstTicket != nextID || ms.Count == 0 {
			t.Fatalf("shard %d starts at %d, want %d (count %d)", i, sh.Header.FirstTicket, nextID, ms.Count)
		}
		var shardSum int64
		for _, rr := range ms.Rounds {
			var rs int64
			for j := uint64(0); j < rr.Count; j++ {
				id := rr.FirstTicket + j
				rec := sh.Records[id-ms.FirstTicket]
				if int64(rec.Amount) < onDisk.Min || int64(rec.Amount) > onDisk.Max {
					t.Fatalf("ticket %d: amount %d outside [%d, %d]", id, rec.Amount, onDisk.Min, onDisk.Max)
				}
				if !tm.Verify(id, rec.Amount, uint16(rr.Round), rec.MAC) {
					t.Fatalf("ticket %d: MAC does not verify", id)
				}
				rs += int64(rec.Amount)
			}
			if rs != rr.Amount {
				t.Fatalf("shard %d round %d: sum %d, manifest %d", i, rr.Round, rs, rr.Amount)
			}
			shardSum += rs
		}
		if shardSum != ms.Amount || uint64(len(sh.Records)) != ms.Count {
			t.Fatalf("shard %d: %d tickets sum %d, manifest %d / %d", i, len(sh.Records), shardSum, ms.Count, ms.Amount)
		}
		key, err := os.ReadFile(filepath.Join(cfg.OutDir, ms.KeyFile))
		want, _ := onDisk.ShardKey(cfg.CampaignKey, i)
		if err != nil || !bytes.Equal(key, want) {
			t.Fatalf("shard %d key: %v", i, err)
		}
		if st, _ := os.Stat(filepath.Join(cfg.OutDir, ms.KeyFile)); st.Mode().Perm() != 0o600 {
			t.Fatalf("shard key mode %v", st.Mode())
		}
		if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
			t.Fatalf("shard file mode %v, want 0600", st.Mode())
		}
		if sh.Header.PerUser != cfg.PerUser || sh.Header.Generation != onDisk.Generation {
			t.Fatalf("shard %d header per_user %d generation %q", i, sh.Header.PerUser, sh.Header.Generation)
		}
		nextID += ms.Count
		total += shardSum
		all = append(all, sh.Records)
	}
	if nextID-1 != cfg.Count || total != cfg.Budget {
		t.Fatalf("shards hold %d tickets / %d, want %d / %d", nextID-1, total, cfg.Count, cfg.Budget)
	}
	// The seed: 0600, and only its SHA-256 in the manifest.
	seed, sum, err := ReadSeedFile(filepath.Join(cfg.OutDir, SeedFile))
	if err != nil || sum != onDisk.SeedSHA256 || onDisk.Seed != nil {
		t.Fatalf("seed file: %v, sha256 %s, manifest seed_sha256 %s, plain seed %v", err, sum, onDisk.SeedSHA256, onDisk.Seed)
	}
	if seed == nil || SeedCommitment(seed) != onDisk.SeedSHA256 {
		t.Fatal("seed commitment does not match the seed")
	}
	if st, _ := os.Stat(filepath.Join(cfg.OutDir, SeedFile)); st.Mode().Perm() != 0o600 {
		t.Fatalf("seed file mode %v, want 0600", st.Mode())
	}
	// Nothing but the output: no temporary files left behind.
	ents, _ := os.ReadDir(cfg.OutDir)
	if len(ents) != 2*cfg.Edges+2 {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Fatalf("output dir holds %v", names)
	}
	return all
}

func TestGenerateRoundTrip(t *testing.T) {
	cfg := baseConfig(t)
	cfg.Count = 140001 // two shards of more than one block each
	cfg.Edges = 2
	cfg.Budget = 14_000_000
	cfg.Rounds = []ticket.RoundWindow{
		{Start: testNow.Add(time.Hour), End: testNow.Add(2 * time.Hour)},
		{Start: testNow.Add(3 * time.Hour), End: testNow.Add(4 * time.Hour)},
		{Start: testNow.Add(4 * time.Hour), End: testNow.Add(5 * time.Hour)},
	}
	m, err := Generate(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	checkOutput(t, cfg, m)
	if m.Currency != "CNY" || m.TTLSeconds != 86400 || m.TTL != "24h0m0s" || m.Min != 1 || m.Max != 14_000_000-140000 {
		t.Fatalf("defaults: %+v", m)
	}
	if !m.IssueUntil.Equal(testNow.Add(5*time.Hour)) || !m.ExpiresAt.Equal(testNow.Add(29*time.Hour)) {
		t.Fatalf("times: %v %v", m.IssueUntil, m.ExpiresAt)
	}
	for i, r := range m.Rounds {
		if r.Index != i {
			t.Fatalf("round %d has index %d", i, r.Index)
		}
	}
	// Rounds get equal counts per shard.
	for _, s := range m.Shards {
		if s.Rounds[0].Count+s.Rounds[1].Count+s.Rounds[2].Count != s.Count || s.Rounds[0].Count-s.Rounds[2].Count > 1 {
			t.Fatalf("round counts %+v", s.Rounds)
		}
	}
}

func TestGenerateNoRounds(t *testing.T) {
	cfg := baseConfig(t)
	cfg.TTL = 90 * time.Minute
	m, err := Generate(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	checkOutput(t, cfg, m)
	if len(m.Rounds) != 1 || !m.Rounds[0].AlwaysOpen() || !m.IssueUntil.Equal(testNow.Add(90*time.Minute)) ||
		!m.ExpiresAt.Equal(testNow.Add(180*time.Minute)) || m.TTLSeconds != 5400 {
		t.Fatalf("%+v", m)
	}
}

// Property: many random feasible configurations all produce exact, in-bounds output.
func TestGenerateProperties(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	iters := 60
	if testing.Short() {
		iters = 15
	}
	for iter := 0; iter < iters; iter++ {
		cfg := baseConfig(t)
		cfg.OutDir = filepath.Join(t.TempDir(), "out")
		cfg.Count = uint64(1 + rng.IntN(3000))
		cfg.Edges = 1 + rng.IntN(min(int(cfg.Count), 12))
		cfg.Min = int64(1 + rng.IntN(20))
		if rng.IntN(3) > 0 {
			cfg.Max = cfg.Min + int64(rng.IntN(300))
		}
		lo := int64(cfg.Count) * cfg.Min
		hi := lo * 50
		if cfg.Max != 0 {
			hi = int64(cfg.Count) * cfg.Max
		}
		cfg.Budget = lo + rng.Int64N(hi-lo+1)
		m := generateRandomShape(t, rng, &cfg, 10, 4)
		if cfg.Weights != nil {
			// Heavier shards never get fewer tickets than lighter ones.
			for i := range m.Shards {
				for j := range m.Shards {
					if cfg.Weights[i] > cfg.Weights[j] && m.Shards[i].Count+1 < m.Shards[j].Count {
						t.Fatalf("weights %v gave counts %d < %d", cfg.Weights, m.Shards[i].Count, m.Shards[j].Count)
					}
				}
			}
		}
	}
}

func TestGenerateReproducible(t *testing.T) {
	gen := func(seed uint64) [][]ticket.Record {
		cfg := baseConfig(t)
		cfg.Seed = seed
		m, err := Generate(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		return checkOutput(t, cfg, m)
	}
	a, b, c := gen(5), gen(5), gen(6)
	same := func(x, y [][]ticket.Record) bool {
		for i := range x {
			if len(x[i]) != len(y[i]) {
				return false
			}
			// The seed fixes the amounts; the MACs differ, since every run is a new
			// generation with its own keys.
			for j := range x[i] {
				if x[i][j].Amount != y[i][j].Amount {
					return false
				}
			}
		}
		return true
	}
	if !same(a, b) {
		t.Fatal("same seed gave different tickets")
	}
	if same(a, c) {
		t.Fatal("different seeds gave the same tickets")
	}
}

func TestGenerateRejects(t *testing.T) {
	at := testNow
	for _, tc := range []struct {
		field string
		mut   func(*Config)
	}{
		{"campaign", func(c *Config) { c.Campaign = "Bad!" }},
		{"key", func(c *Config) { c.CampaignKey = c.CampaignKey[:16] }},
		{"currency", func(c *Config) { c.Currency = "yuan" }},
		{"out", func(c *Config) { c.OutDir = "" }},
		{"count", func(c *Config) { c.Count = 0 }},
		{"budget", func(c *Config) { c.Budget = 0 }},
		{"budget", func(c *Config) { c.Budget = 999 }},               // < 1000 * min 1
		{"budget", func(c *Config) { c.Max = 10; c.Budget = 10001 }}, // > 1000 * 10
		{"budget", func(c *Config) { c.Min = 1 << 30; c.Budget = 1 << 39 }},
		{"edges", func(c *Config) { c.Edges = 0 }},
		{"edges", func(c *Config) { c.Edges = 1001 }},
		{"min", func(c *Config) { c.Min = -1 }},
		{"max", func(c *Config) { c.Min = 5; c.Max = 4 }},
		{"max", func(c *Config) { c.Max = ticket.MaxTicketAmount + 1 }},
		{"ttl", func(c *Config) { c.TTL = time.Millisecond }},
		{"weights", func(c *Config) { c.Weights = []uint64{1, 2} }},
		{"weights", func(c *Config) { c.Weights = []uint64{1, 0, 1} }},
		{"round", func(c *Config) { c.Rounds = []ticket.RoundWindow{{Start: at, End: at}} }},
		{"round", func(c *Config) {
			c.Rounds = []ticket.RoundWindow{{Start: at, End: at.Add(time.Hour)}, {Start: at.Add(time.Minute), End: at.Add(2 * time.Hour)}}
		}},
		{"round", func(c *Config) { c.Rounds = []ticket.RoundWindow{{Start: at, End: at.AddDate(100, 0, 0)}} }},
		{"ttl", func(c *Config) { c.TTL = 100 * 365 * 24 * time.Hour }},
		{"prize", func(c *Config) { c.Prizes = []Prize{{Amount: 10, Count: 1001}} }},                     // more than --count
		{"prize", func(c *Config) { c.Prizes = []Prize{{Amount: 100001, Count: 1}} }},                    // more than --budget
		{"prize", func(c *Config) { c.Prizes = []Prize{{Amount: 50000, Count: 2}} }},                     // nothing left for 998 tickets
		{"prize", func(c *Config) { c.Prizes = []Prize{{Amount: 100, Count: 1000}}; c.Budget = 100001 }}, // every ticket, money left
		{"prize", func(c *Config) { c.Max = 100; c.Prizes = []Prize{{Amount: 1, Count: 500}} }},          // the rest exceed --max
		{"prize", func(c *Config) { c.Prizes = []Prize{{Amount: 0, Count: 1}} }},
		{"prize", func(c *Config) { c.Prizes = make([]Prize, ticket.MaxPrizes+1) }},
		{"seed", func(c *Config) { c.SeedSecret = []byte{1, 2, 3} }},
	} {
		cfg := baseConfig(t)
		tc.mut(&cfg)
		_, err := Generate(context.Background(), cfg)
		var ce *ConfigError
		if !errors.As(err, &ce) || ce.Field != tc.field || !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("want a --%s error, got %v", tc.field, err)
			continue
		}
		if cfg.OutDir != "" {
			if ents, _ := os.ReadDir(cfg.OutDir); len(ents) != 0 {
				t.Errorf("--%s: output left behind: %v", tc.field, ents)
			}
		}
	}
}

func TestGenerateRefusesToOverwrite(t *testing.T) {
	cfg := baseConfig(t)
	if _, err := Generate(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(filepath.Join(cfg.OutDir, ManifestFile))
	_, err := Generate(context.Background(), cfg)
	var ce *ConfigError
	if !errors.As(err, &ce) || ce.Field != "out" {
		t.Fatalf("second run: %v", err)
	}
	after, _ := os.ReadFile(filepath.Join(cfg.OutDir, ManifestFile))
	if !bytes.Equal(before, after) {
		t.Fatal("manifest changed")
	}
}

// A cancelled run leaves nothing behind: no shard, no key, no manifest, no temp dir.
func TestGenerateCancelledLeavesNothing(t *testing.T) {
	cfg := baseConfig(t)
	cfg.Count = 2_000_000
	cfg.Budget = 200_000_000
	cfg.Edges = 4
	ctx, cancel := context.WithCancel(context.Background())
	var progress bytes.Buffer
	cfg.Progress = &lockedWriter{w: &progress}
	time.AfterFunc(50*time.Millisecond, cancel)
	_, err := Generate(ctx, cfg)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v", err)
	}
	if ents, _ := os.ReadDir(cfg.OutDir); len(ents) != 0 {
		t.Fatalf("left behind: %v", ents)
	}
}

func TestGenerateProgress(t *testing.T) {
	cfg := baseConfig(t)
	var buf bytes.Buffer
	cfg.Progress = &lockedWriter{w: &buf}
	if _, err := Generate(context.Background(), cfg); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	if !strings.Contains(out, "1000 / 1000 tickets (100.0%)") || !strings.HasSuffix(out, "\n") {
		t.Fatalf("progress %q", out)
	}
}

func TestPlanWritesNothing(t *testing.T) {
	cfg := baseConfig(t)
	m, err := Plan(cfg)
	if err != nil || len(m.Shards) != 3 || m.Shards[0].Count != 334 || m.Shards[0].Amount != 33400 {
		t.Fatalf("%+v %v", m, err)
	}
	if ents, _ := os.ReadDir(cfg.OutDir); len(ents) != 0 {
		t.Fatal("Plan wrote files")
	}
}

func BenchmarkGenerate(b *testing.B) {
	const n = 1_000_000
	b.ReportAllocs()
	for b.Loop() {
		cfg := Config{Campaign: "bench", CampaignKey: testKey(), Budget: 100 * n, Count: n, Edges: 8,
			Seed: 1, OutDir: b.TempDir(), Now: testNow}
		if _, err := Generate(context.Background(), cfg); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "tickets/s")
}

// generateRandomShape gives cfg random weights (half the time, each 1..maxWeight) and
// 0..maxRounds-1 rounds, generates it and checks the output.
func generateRandomShape(t *testing.T, rng *rand.Rand, cfg *Config, maxWeight uint64, maxRounds int) *ticket.Manifest {
	t.Helper()
	if rng.IntN(2) == 0 {
		cfg.Weights = make([]uint64, cfg.Edges)
		for i := range cfg.Weights {
			cfg.Weights[i] = 1 + rng.Uint64N(maxWeight)
		}
	}
	for r := 0; r < rng.IntN(maxRounds); r++ {
		cfg.Rounds = append(cfg.Rounds, ticket.RoundWindow{Start: testNow.Add(time.Duration(2*r) * time.Hour), End: testNow.Add(time.Duration(2*r+1) * time.Hour)})
	}
	m, err := Generate(context.Background(), *cfg)
	if err != nil {
		t.Fatalf("%+v: %v", cfg, err)
	}
	checkOutput(t, *cfg, m)
	return m
}
