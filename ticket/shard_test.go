package ticket

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestShardRoundTrip(t *testing.T) {
	tm := testMAC(t, "c1")
	for _, tc := range []struct {
		n      uint64
		rounds int
	}{{0, 0}, {1, 0}, {100, 3}, {BlockRecords, 0}, {2*BlockRecords + 17, 2}} {
		data, amounts := buildShard(t, tc.n, tc.rounds, tc.n)
		sh, err := ReadShard(bytes.NewReader(data), "mem")
		if err != nil {
			t.Fatalf("n=%d: %v", tc.n, err)
		}
		if uint64(len(sh.Records)) != tc.n || sh.Header.Count != tc.n {
			t.Fatalf("n=%d: %d records", tc.n, len(sh.Records))
		}
		var sum int64
		for i, r := range sh.Records {
			id := sh.Header.FirstTicket + uint64(i)
			if r.Amount != amounts[i] || !tm.Verify(id, r.Amount, uint16(sh.Header.RoundOf(id)), r.MAC) {
				t.Fatalf("n=%d: record %d: amount %d want %d or bad MAC", tc.n, i, r.Amount, amounts[i])
			}
			sum += int64(r.Amount)
		}
		if sum != sh.Header.Amount {
			t.Fatalf("n=%d: sum %d header %d", tc.n, sum, sh.Header.Amount)
		}
	}
}

func TestLoadShardFromFile(t *testing.T) {
	data, _ := buildShard(t, 500, 1, 9)
	p := filepath.Join(t.TempDir(), "edge-001.tickets")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	sh, err := LoadShard(p)
	if err != nil || len(sh.Records) != 500 {
		t.Fatalf("LoadShard: %v", err)
	}
	if _, err := LoadShard(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Fatal("missing file loaded")
	}
}

// Flipping any single bit pattern in any byte of a shard must make the loader fail: the
// header, every block and the trailer are covered by CRC-32C, which detects every error
// burst of up to 32 bits.
func TestShardEveryByteFlipDetected(t *testing.T) {
	data, _ := buildShard(t, 40, 2, 3)
	for i := range data {
		for _, x := range []byte{0x01, 0x80, 0xff} {
			bad := bytes.Clone(data)
			bad[i] ^= x
			_, err := ReadShard(bytes.NewReader(bad), "mem")
			if err == nil {
				t.Fatalf("flip 0x%02x at byte %d of %d not detected", x, i, len(data))
			}
			if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "mem") {
				t.Fatalf("byte %d: error %v does not wrap ErrCorrupt and name the file", i, err)
			}
		}
	}
}

func TestShardTruncationAndExtraDetected(t *testing.T) {
	data, _ := buildShard(t, 70000, 0, 4) // two blocks
	for _, n := range []int{0, 5, 12, 40, len(data) / 2, len(data) - 32, len(data) - 1} {
		if _, err := ReadShard(bytes.NewReader(data[:n]), "mem"); err == nil {
			t.Fatalf("truncation to %d bytes not detected", n)
		}
	}
	if _, err := ReadShard(bytes.NewReader(append(bytes.Clone(data), 0)), "mem"); err == nil {
		t.Fatal("trailing byte not detected")
	}
}

func TestShardBlockSwapDetected(t *testing.T) {
	// Two one-block shards with the same header cannot be spliced: block CRCs include the
	// block index, and a duplicated block changes the count.
	data, _ := buildShard(t, 2*BlockRecords, 0, 5)
	hlen := 12 + int(uint32(data[8])|uint32(data[9])<<8|uint32(data[10])<<16) + 4
	b0len := 12 + int(uint32(data[hlen+4])|uint32(data[hlen+5])<<8|uint32(data[hlen+6])<<16|uint32(data[hlen+7])<<24)
	b0 := data[hlen : hlen+b0len]
	rest := data[hlen+b0len:]
	b1len := 12 + int(uint32(rest[4])|uint32(rest[5])<<8|uint32(rest[6])<<16|uint32(rest[7])<<24)
	b1 := rest[:b1len]
	swapped := append(append(append(bytes.Clone(data[:hlen]), b1...), b0...), rest[b1len:]...)
	if _, err := ReadShard(bytes.NewReader(swapped), "mem"); err == nil || !strings.Contains(err.Error(), "block 0") {
		t.Fatalf("swapped blocks: %v", err)
	}
}

func TestShardWriterRejectsBadTotals(t *testing.T) {
	h := ShardHeader{Generation: testGen, Version: ShardVersion, Campaign: "c1", Currency: "CNY", Shard: 0, Shards: 1, FirstTicket: 1, Count: 2,
		Amount: 10, TTLSeconds: 60, Rounds: []RoundWindow{{}}, RoundRanges: []RoundRange{{FirstTicket: 1, Count: 2, Amount: 10}}}
	var buf bytes.Buffer
	w, err := NewShardWriter(&buf, h)
	if err != nil {
		t.Fatal(err)
	}
	w.Append(5, [MACSize]byte{})
	w.Append(4, [MACSize]byte{})
	if err := w.Close(); err == nil {
		t.Fatal("Close accepted records summing to 9 for a header of 10")
	}
	h.Amount = 11
	if _, err := NewShardWriter(&buf, h); err == nil {
		t.Fatal("header whose round ranges disagree accepted")
	}
}

func TestShardHeaderValidate(t *testing.T) {
	good := func() ShardHeader {
		return ShardHeader{Generation: testGen, Version: ShardVersion, Campaign: "c1", Currency: "CNY", Shard: 0, Shards: 1, FirstTicket: 1, Count: 2,
			Amount: 10, TTLSeconds: 60, Rounds: []RoundWindow{{}}, RoundRanges: []RoundRange{{FirstTicket: 1, Count: 2, Amount: 10}}}
	}
	h := good()
	if err := h.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, mut := range map[string]func(*ShardHeader){
		"version":  func(h *ShardHeader) { h.Version = 2 },
		"campaign": func(h *ShardHeader) { h.Campaign = "Bad" },
		"currency": func(h *ShardHeader) { h.Currency = "cny" },
		"shard":    func(h *ShardHeader) { h.Shard = 1 },
		"first":    func(h *ShardHeader) { h.FirstTicket = 0 },
		"ttl":      func(h *ShardHeader) { h.TTLSeconds = 0 },
		"rounds":   func(h *ShardHeader) { h.Rounds = nil },
		"ranges":   func(h *ShardHeader) { h.RoundRanges[0].Count = 3 },
	} {
		h := good()
		mut(&h)
		if h.Validate() == nil {
			t.Errorf("%s: invalid header accepted", name)
		}
	}
}

// TestReadShardRefusesOversizedCount checks that a header promising more tickets than the
// file can hold is refused before the records are allocated.
func TestReadShardRefusesOversizedCount(t *testing.T) {
	h := ShardHeader{Generation: testGen, Version: 1, Campaign: "c", Currency: "CNY", Shard: 0, Shards: 1, FirstTicket: 1,
		Count: 1 << 27, Amount: 1 << 27, TTLSeconds: 60, Rounds: []RoundWindow{{}},
		RoundRanges: []RoundRange{{Round: 0, FirstTicket: 1, Count: 1 << 27, Amount: 1 << 27}}}
	var buf bytes.Buffer
	sw, err := NewShardWriter(&buf, h)
	if err != nil {
		t.Fatal(err)
	}
	sw.w.Flush() // the header only: no records follow

	_, err = ReadShard(bytes.NewReader(buf.Bytes()), "crafted")
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "cannot hold") {
		t.Fatalf("err = %v, want a corrupt-count error", err)
	}
}
