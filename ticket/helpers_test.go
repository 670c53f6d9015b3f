package ticket

import (
	"bytes"
	"math/rand/v2"
	"testing"
	"time"
)

// testKey returns a fixed key whose bytes are b, b+1, ...: tests and fuzz corpora must be
// reproducible.
func testKey(b byte) []byte {
	k := make([]byte, KeySize)
	for i := range k {
		k[i] = b + byte(i)
	}
	return k
}

func testMAC(t testing.TB, campaign string) *TicketMAC {
	t.Helper()
	mk, err := MACKey(testKey(1), campaign, testGen)
	if err != nil {
		t.Fatal(err)
	}
	tm, err := NewTicketMAC(mk, campaign)
	if err != nil {
		t.Fatal(err)
	}
	return tm
}

// buildShard writes a shard of n tickets with random amounts in [1, 1000], split over
// rounds equal rounds (rounds 0 means one always-open round), and returns its bytes and
// amounts.
func buildShard(t testing.TB, n uint64, rounds int, seed uint64) ([]byte, []uint32) {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 1))
	tm := testMAC(t, "c1")
	amounts := make([]uint32, n)
	var total int64
	for i := range amounts {
		amounts[i] = uint32(1 + rng.IntN(1000))
		total += int64(amounts[i])
	}
	h := ShardHeader{Generation: testGen, Version: ShardVersion, Campaign: "c1", Currency: "CNY", Shard: 1, Shards: 2,
		FirstTicket: 101, Count: n, Amount: total, TTLSeconds: 3600,
		CreatedAt: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)}
	if rounds == 0 {
		h.Rounds = []RoundWindow{{}}
		h.RoundRanges = []RoundRange{{Round: 0, FirstTicket: h.FirstTicket, Count: n, Amount: total}}
	} else {
		start := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
		next := h.FirstTicket
		for r := 0; r < rounds; r++ {
			h.Rounds = append(h.Rounds, RoundWindow{Index: r, Start: start.Add(time.Duration(2*r) * time.Minute), End: start.Add(time.Duration(2*r+1) * time.Minute)})
			c := n / uint64(rounds)
			if r == rounds-1 {
				c = n - (next - h.FirstTicket)
			}
			var a int64
			for _, x := range amounts[next-h.FirstTicket:][:c] {
				a += int64(x)
			}
			h.RoundRanges = append(h.RoundRanges, RoundRange{Round: r, FirstTicket: next, Count: c, Amount: a})
			next += c
		}
	}
	var buf bytes.Buffer
	w, err := NewShardWriter(&buf, h)
	if err != nil {
		t.Fatal(err)
	}
	for i, a := range amounts {
		id := h.FirstTicket + uint64(i)
		if err := w.Append(a, tm.Sum(id, a, uint16(h.RoundOf(id)))); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), amounts
}

// testGen is the generation id of every test campaign in this package.
const testGen = "00112233445566778899aabbccddeeff"
