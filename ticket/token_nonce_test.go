package ticket

import (
	"bytes"
	"encoding/binary"
	"testing"
)

// sealNonces seals n tokens in a row and returns their nonces.
func sealNonces(t *testing.T, s *Sealer, n int) [][tokenNonceLen]byte {
	t.Helper()
	in := testToken()
	raw := make([]byte, TokenRawLen)
	out := make([][tokenNonceLen]byte, n)
	dst := make([]byte, 0, TokenLen+TokenRawLen)
	for i := range out {
		dst = s.Seal(dst[:0], &in)
		if _, err := tokenEncoding.Decode(raw, dst); err != nil {
			t.Fatal(err)
		}
		copy(out[i][:], raw[tokenHeaderLen:tokenHeaderLen+tokenNonceLen])
	}
	return out
}

// TestNonceHidesTheCounter is the attack on a readable nonce: a user who wins twice
// reads the nonces in the clear part of the two tokens. With a salt and a plain
// counter the two nonces share their salt and differ by the number of tokens sealed
// in between, which tells the user how many tickets the edge handed out. The nonces
// must share nothing a user can subtract.
func TestNonceHidesTheCounter(t *testing.T) {
	sealers, _ := testSealerOpener(t, 1)
	s := sealers[0]
	const n = 2000
	ns := sealNonces(t, s, n)
	sameHead, smallStep := 0, 0
	for i := 1; i < n; i++ {
		a, b := ns[i-1], ns[i]
		// Any fixed 4-byte field (a salt) repeats between consecutive nonces; random
		// nonces share 4 leading bytes once in 2^32 pairs.
		if bytes.Equal(a[:4], b[:4]) {
			sameHead++
		}
		// Any counter in the last 8 bytes (or the first 8) moves by a small step.
		for _, off := range []int{0, 4} {
			d := binary.BigEndian.Uint64(b[off:]) - binary.BigEndian.Uint64(a[off:])
			if d < 1<<20 || -d < 1<<20 {
				smallStep++
			}
		}
	}
	if sameHead != 0 || smallStep != 0 {
		t.Fatalf("consecutive nonces share a fixed field %d times and step by a small count %d times of %d: the counter shows", sameHead, smallStep, n-1)
	}
	// Nor does a nonce carry the sealer's counter itself, in either byte order (6 bytes
	// of it are enough to count with).
	in := testToken()
	raw := make([]byte, TokenRawLen)
	for i := 0; i < n; i++ {
		tok := s.Seal(nil, &in)
		c := s.ctr.Load()
		if _, err := tokenEncoding.Decode(raw, tok); err != nil {
			t.Fatal(err)
		}
		nonce := raw[tokenHeaderLen : tokenHeaderLen+tokenNonceLen]
		var be, le [8]byte
		binary.BigEndian.PutUint64(be[:], c)
		binary.LittleEndian.PutUint64(le[:], c)
		if bytes.Contains(nonce, be[2:]) || bytes.Contains(nonce, le[:6]) {
			t.Fatalf("nonce %x contains the counter %d", nonce, c)
		}
	}
}

// TestNoncesAreUnique: a repeated nonce under one key breaks AES-GCM (it leaks the
// authentication key), so nonces never repeat within a sealer, nor between two
// sealers of the same key (two runs of the same edge).
func TestNoncesAreUnique(t *testing.T) {
	sealers, _ := testSealerOpener(t, 1)
	again, _ := testSealerOpener(t, 1)
	const n = 100_000
	seen := make(map[[tokenNonceLen]byte]struct{}, 2*n)
	for _, s := range []*Sealer{sealers[0], again[0]} {
		for _, v := range sealNonces(t, s, n) {
			if _, dup := seen[v]; dup {
				t.Fatalf("nonce %x repeated", v)
			}
			seen[v] = struct{}{}
		}
	}
}
