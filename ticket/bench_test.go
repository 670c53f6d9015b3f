package ticket

import (
	"bufio"
	"encoding/binary"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
)

// writeBigShard writes an n-ticket shard with random amounts and random (incompressible,
// like real) MACs to path, as fast as possible: it measures the loader, not the MAC.
func writeBigShard(tb testing.TB, path string, n uint64) {
	tb.Helper()
	rng := rand.New(rand.NewPCG(1, 2))
	amounts := make([]uint32, n)
	var total int64
	for i := range amounts {
		amounts[i] = uint32(1 + rng.IntN(400))
		total += int64(amounts[i])
	}
	f, err := os.Create(path)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	bw := bufio.NewWriterSize(f, 1<<20)
	h := ShardHeader{Generation: testGen, Version: ShardVersion, Campaign: "bench", Currency: "CNY", Shard: 0, Shards: 1, FirstTicket: 1,
		Count: n, Amount: total, TTLSeconds: 86400, Rounds: []RoundWindow{{}},
		RoundRanges: []RoundRange{{FirstTicket: 1, Count: n, Amount: total}}}
	w, err := NewShardWriter(bw, h)
	if err != nil {
		tb.Fatal(err)
	}
	var mac [MACSize]byte
	for _, a := range amounts {
		binary.LittleEndian.PutUint64(mac[:], rng.Uint64())
		binary.LittleEndian.PutUint32(mac[8:], rng.Uint32())
		if err := w.Append(a, mac); err != nil {
			tb.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		tb.Fatal(err)
	}
	if err := bw.Flush(); err != nil {
		tb.Fatal(err)
	}
}

// BenchmarkLoadShard10M loads a 10-million-ticket shard (the target is at most 1 s/op).
func BenchmarkLoadShard10M(b *testing.B) {
	const n = 10_000_000
	path := filepath.Join(b.TempDir(), "edge-000.tickets")
	writeBigShard(b, path, n)
	if st, err := os.Stat(path); err == nil {
		b.ReportMetric(float64(st.Size())/n, "file-bytes/ticket")
	}
	b.ReportAllocs()
	for b.Loop() {
		sh, err := LoadShard(path)
		if err != nil || len(sh.Records) != n {
			b.Fatal(err)
		}
	}
}
