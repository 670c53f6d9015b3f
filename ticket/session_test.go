package ticket

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"testing"
)

func TestSessionMatchesSpec(t *testing.T) {
	key := testKey(3)
	sk, err := NewSessionKey(key)
	if err != nil {
		t.Fatal(err)
	}
	tok := sk.Mint(nil, 42, 1_900_000_000)
	// Recompute the documented formula (docs/api.md, Sessions) independently.
	m := hmac.New(sha256.New, key)
	m.Write([]byte("shake-session-v1|42|1900000000"))
	want := "42.1900000000." + base64.RawURLEncoding.EncodeToString(m.Sum(nil))
	if string(tok) != want {
		t.Fatalf("token %q, want %q", tok, want)
	}
	uid, err := sk.Verify(tok, 1_899_999_999)
	if err != nil || uid != 42 {
		t.Fatalf("Verify = %d, %v", uid, err)
	}
	if _, err := sk.Verify(tok, 1_900_000_000); !errors.Is(err, ErrSessionExpired) {
		t.Fatalf("expired token: %v", err)
	}
}

func TestSessionRejects(t *testing.T) {
	sk, _ := NewSessionKey(testKey(3))
	other, _ := NewSessionKey(testKey(4))
	good := sk.Mint(nil, 7, 2_000_000_000)
	sig := good[bytes.LastIndexByte(good, '.')+1:]
	for _, tc := range []struct {
		tok  string
		want error
	}{
		{"", ErrSessionMalformed},
		{"7", ErrSessionMalformed},
		{"7.2000000000", ErrSessionMalformed},
		{"07.2000000000." + string(sig), ErrSessionMalformed},
		{"-7.2000000000." + string(sig), ErrSessionMalformed},
		{"7.2000000000." + string(sig[:42]), ErrSessionMalformed},
		{"7.2000000000." + string(sig) + "A", ErrSessionMalformed},
		{"7.2000000000.!" + string(sig[1:]), ErrSessionMalformed},
		{"18446744073709551616.2000000000." + string(sig), ErrSessionMalformed},
		{"8.2000000000." + string(sig), ErrSessionForged},
		{"7.2000000001." + string(sig), ErrSessionForged},
		{string(other.Mint(nil, 7, 2_000_000_000)), ErrSessionForged},
		{string(bytes.Repeat([]byte("9"), MaxSessionLen+1)), ErrSessionMalformed},
	} {
		if _, err := sk.Verify([]byte(tc.tok), 1_000_000_000); !errors.Is(err, tc.want) {
			t.Errorf("%q: %v, want %v", tc.tok, err, tc.want)
		}
	}
}

// Changing any character of a token to any other byte must fail verification.
func TestSessionEveryByteChangeFails(t *testing.T) {
	sk, _ := NewSessionKey(testKey(3))
	tok := sk.Mint(nil, 123456, 2_000_000_000)
	for i := range tok {
		for c := 0; c < 256; c++ {
			if byte(c) == tok[i] {
				continue
			}
			bad := bytes.Clone(tok)
			bad[i] = byte(c)
			// Strict base64: the padding bits of the 43rd character must be zero too.
			if uid, err := sk.Verify(bad, 1_000_000_000); err == nil {
				t.Fatalf("char %d -> %q accepted as uid %d", i, byte(c), uid)
			}
		}
	}
}

func TestSessionAllocatesNothing(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector makes sync.Pool drop pooled HMAC states")
	}
	sk, _ := NewSessionKey(testKey(3))
	tok := sk.Mint(nil, 42, 2_000_000_000)
	if n := testing.AllocsPerRun(200, func() {
		if _, err := sk.Verify(tok, 1_000_000_000); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("Verify: %v allocs/op", n)
	}
	dst := make([]byte, 0, MaxSessionLen)
	if n := testing.AllocsPerRun(200, func() { dst = sk.Mint(dst[:0], 42, 2_000_000_000) }); n != 0 {
		t.Errorf("Mint: %v allocs/op", n)
	}
}

func TestBearerToken(t *testing.T) {
	for _, tc := range []struct {
		h, want string
		ok      bool
	}{
		{"Bearer abc", "abc", true},
		{"bearer  abc ", "abc", true},
		{"Bearer ", "", false},
		{"Basic abc", "", false},
		{"", "", false},
	} {
		got, ok := BearerToken([]byte(tc.h))
		if ok != tc.ok || string(got) != tc.want {
			t.Errorf("%q: %q %v", tc.h, got, ok)
		}
	}
}

func BenchmarkSessionVerify(b *testing.B) {
	sk, _ := NewSessionKey(testKey(3))
	tok := sk.Mint(nil, 42, 2_000_000_000)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := sk.Verify(tok, 1_000_000_000); err != nil {
			b.Fatal(err)
		}
	}
}

func ExampleSessionKey_Mint() {
	sk, _ := NewSessionKey(make([]byte, KeySize))
	fmt.Printf("%s\n", sk.Mint(nil, 42, 1_900_000_000)[:14])
	// Output: 42.1900000000.
}
