package ticket

import (
	"bytes"
	"testing"
	"time"
)

func TestSmokeRoundTrip(t *testing.T) {
	ck := NewKey()
	mk, _ := MACKey(ck, "c1")
	tm, err := NewTicketMAC(mk, "c1")
	if err != nil {
		t.Fatal(err)
	}
	n := uint64(BlockRecords*2 + 17)
	h := ShardHeader{Version: 1, Campaign: "c1", Currency: "CNY", Shard: 0, Shards: 1, FirstTicket: 1, Count: n,
		Amount: int64(n) * 5, TTLSeconds: 60, Rounds: []RoundWindow{{}}, RoundRanges: []RoundRange{{Round: 0, FirstTicket: 1, Count: n, Amount: int64(n) * 5}}}
	var buf bytes.Buffer
	w, err := NewShardWriter(&buf, h)
	if err != nil {
		t.Fatal(err)
	}
	for i := uint64(0); i < n; i++ {
		if err := w.Append(5, tm.Sum(1+i, 5, 0)); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	sh, err := ReadShard(bytes.NewReader(buf.Bytes()), "mem")
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range sh.Records {
		if r.Amount != 5 || !tm.Verify(uint64(i)+1, 5, 0, r.MAC) {
			t.Fatalf("record %d bad", i)
		}
	}
	sk, _ := ShardKey(ck, "c1", 0)
	s, _ := NewSealer(sk, 0)
	o, _ := NewOpener([][]byte{sk})
	tok := s.Seal(nil, &TicketToken{Ticket: 9, UID: 42, Amount: 5, MAC: sh.Records[8].MAC, IssuedAt: 100, ExpiresAt: 200})
	var got TicketToken
	if err := o.Open(&got, tok, make([]byte, TokenRawLen)); err != nil || got.Ticket != 9 || got.UID != 42 || got.ExpiresAt != 200 {
		t.Fatalf("open: %v %+v", err, got)
	}
	if len(tok) != TokenLen || TokenLen > 160 {
		t.Fatalf("len %d", len(tok))
	}
	sess, _ := NewSessionKey(NewKey())
	st := sess.Mint(nil, 77, time.Now().Add(time.Hour).Unix())
	if uid, err := sess.Verify(st, time.Now().Unix()); err != nil || uid != 77 {
		t.Fatal(uid, err)
	}
}
