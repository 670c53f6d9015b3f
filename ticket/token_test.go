package ticket

import (
	"bytes"
	"errors"
	"testing"
)

func testToken() TicketToken {
	return TicketToken{Ticket: 123456789, UID: 42, Amount: 888, MAC: [MACSize]byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12},
		Round: 3, IssuedAt: 1_900_000_000, ExpiresAt: 1_900_086_400}
}

func testSealerOpener(t testing.TB, shards int) ([]*Sealer, *Opener) {
	t.Helper()
	keys := make([][]byte, shards)
	sealers := make([]*Sealer, shards)
	for i := range keys {
		k, err := ShardKey(testKey(7), "c1", testGen, i)
		if err != nil {
			t.Fatal(err)
		}
		keys[i] = k
		if sealers[i], err = NewSealer(k, i); err != nil {
			t.Fatal(err)
		}
	}
	o, err := NewOpener(keys)
	if err != nil {
		t.Fatal(err)
	}
	return sealers, o
}

func TestTokenRoundTrip(t *testing.T) {
	sealers, o := testSealerOpener(t, 3)
	in := testToken()
	for i, s := range sealers {
		tok := s.Seal([]byte("prefix:"), &in)
		if !bytes.HasPrefix(tok, []byte("prefix:")) {
			t.Fatal("Seal dropped dst's contents")
		}
		tok = tok[len("prefix:"):]
		if len(tok) != TokenLen || TokenLen > 160 {
			t.Fatalf("token length %d, TokenLen %d", len(tok), TokenLen)
		}
		for _, c := range tok {
			if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				t.Fatalf("token %q is not URL-safe", tok)
			}
		}
		if sh, err := TokenShard(tok); err != nil || int(sh) != i {
			t.Fatalf("TokenShard = %d, %v; want %d", sh, err, i)
		}
		var out TicketToken
		if err := o.Open(&out, tok, make([]byte, TokenRawLen)); err != nil {
			t.Fatal(err)
		}
		want := in
		want.Shard = uint16(i)
		if out != want {
			t.Fatalf("opened %+v, want %+v", out, want)
		}
	}
}

func TestTokenNoncesDiffer(t *testing.T) {
	sealers, _ := testSealerOpener(t, 1)
	in := testToken()
	a := sealers[0].Seal(nil, &in)
	b := sealers[0].Seal(nil, &in)
	if bytes.Equal(a, b) {
		t.Fatal("two seals of the same ticket are identical: nonce reused")
	}
}

// Flipping any bit of any character must make Open fail: every byte is either the
// authenticated header, the nonce, the ciphertext or the tag.
func TestTokenEveryByteFlipFails(t *testing.T) {
	sealers, o := testSealerOpener(t, 2)
	in := testToken()
	tok := sealers[1].Seal(nil, &in)
	var out TicketToken
	scratch := make([]byte, TokenRawLen)
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	for i := range tok {
		for _, c := range []byte(alphabet + "=+/. ") {
			if c == tok[i] {
				continue
			}
			bad := bytes.Clone(tok)
			bad[i] = c
			// Decoding is strict base64, so even the last character, which carries
			// padding bits, has one spelling.
			err := o.Open(&out, bad, scratch)
			if !errors.Is(err, ErrInvalidToken) {
				t.Fatalf("char %d changed to %q: Open = %v", i, c, err)
			}
		}
	}
	for _, bad := range [][]byte{nil, tok[:len(tok)-1], append(bytes.Clone(tok), 'A')} {
		if err := o.Open(&out, bad, scratch); !errors.Is(err, ErrInvalidToken) {
			t.Fatalf("length %d accepted", len(bad))
		}
	}
	if err := o.Open(&out, tok, make([]byte, 10)); !errors.Is(err, ErrInvalidToken) {
		t.Fatal("short scratch accepted")
	}
}

// A token is bound to its user: the uid is authenticated, so a caller comparing it with
// the session tells "someone else's ticket" apart from tampering.
func TestTokenBoundToUID(t *testing.T) {
	sealers, o := testSealerOpener(t, 1)
	in := testToken()
	tok := sealers[0].Seal(nil, &in)
	var out TicketToken
	if err := o.Open(&out, tok, make([]byte, TokenRawLen)); err != nil {
		t.Fatal(err)
	}
	if out.UID != 42 || out.UID == 43 {
		t.Fatalf("uid %d", out.UID)
	}
}

func TestTokenWrongKeyOrShard(t *testing.T) {
	sealers, _ := testSealerOpener(t, 2)
	in := testToken()
	tok := sealers[1].Seal(nil, &in)
	// An opener that knows only shard 0 cannot open shard 1's token.
	k0, _ := ShardKey(testKey(7), "c1", testGen, 0)
	o1, _ := NewOpener([][]byte{k0})
	var out TicketToken
	if err := o1.Open(&out, tok, make([]byte, TokenRawLen)); !errors.Is(err, ErrInvalidToken) {
		t.Fatalf("unknown shard: %v", err)
	}
	// Another campaign's keys do not open it.
	ka, _ := ShardKey(testKey(7), "c2", testGen, 0)
	kb, _ := ShardKey(testKey(7), "c2", testGen, 1)
	o2, _ := NewOpener([][]byte{ka, kb})
	if err := o2.Open(&out, tok, make([]byte, TokenRawLen)); !errors.Is(err, ErrInvalidToken) {
		t.Fatalf("other campaign: %v", err)
	}
	if _, err := NewSealer(k0, MaxShards); err == nil {
		t.Fatal("shard out of range accepted")
	}
	if _, err := NewOpener(nil); err == nil {
		t.Fatal("opener without keys accepted")
	}
	if _, err := NewSealer(k0[:16], 0); err == nil {
		t.Fatal("short key accepted")
	}
}

func TestSealOpenAllocateNothing(t *testing.T) {
	sealers, o := testSealerOpener(t, 1)
	in := testToken()
	dst := make([]byte, 0, TokenLen+TokenRawLen)
	tok := sealers[0].Seal(nil, &in)
	scratch := make([]byte, TokenRawLen)
	var out TicketToken
	if n := testing.AllocsPerRun(200, func() { dst = sealers[0].Seal(dst[:0], &in) }); n != 0 {
		t.Errorf("Seal: %v allocs/op", n)
	}
	if n := testing.AllocsPerRun(200, func() {
		if o.Open(&out, tok, scratch) != nil {
			t.Fatal("open failed")
		}
	}); n != 0 {
		t.Errorf("Open: %v allocs/op", n)
	}
}

func BenchmarkSeal(b *testing.B) {
	sealers, _ := testSealerOpener(b, 1)
	in := testToken()
	dst := make([]byte, 0, TokenLen+TokenRawLen)
	b.ReportAllocs()
	for b.Loop() {
		dst = sealers[0].Seal(dst[:0], &in)
	}
}

func BenchmarkOpen(b *testing.B) {
	sealers, o := testSealerOpener(b, 1)
	in := testToken()
	tok := sealers[0].Seal(nil, &in)
	scratch := make([]byte, TokenRawLen)
	var out TicketToken
	b.ReportAllocs()
	for b.Loop() {
		if err := o.Open(&out, tok, scratch); err != nil {
			b.Fatal(err)
		}
	}
}
