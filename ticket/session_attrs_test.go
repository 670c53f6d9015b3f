package ticket

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
)

// A token with attributes is `<uid>.<exp>.<device>~<risk>.<sig>` over
// "shake-session-v2|<uid>|<exp>|<device>|<risk>", recomputed here independently.
func TestSessionAttrsMatchFormat(t *testing.T) {
	key := testKey(3)
	sk, _ := NewSessionKey(key)
	tok := sk.MintAttrs(nil, 42, 1_900_000_000, []byte("iPhone_15-A"), 7)
	m := hmac.New(sha256.New, key)
	m.Write([]byte("shake-session-v2|42|1900000000|iPhone_15-A|7"))
	want := "42.1900000000.iPhone_15-A~7." + base64.RawURLEncoding.EncodeToString(m.Sum(nil))
	if string(tok) != want {
		t.Fatalf("token %q, want %q", tok, want)
	}
	var s Session
	if err := sk.VerifySession(tok, 1_899_999_999, &s); err != nil || s.UID != 42 || string(s.Device) != "iPhone_15-A" || s.Risk != 7 {
		t.Fatalf("VerifySession = %+v, %v", s, err)
	}
	// Risk without a device, and a token without attributes: no device, risk 0, and the
	// old form exactly.
	tok = sk.MintAttrs(nil, 42, 1_900_000_000, nil, 3)
	if !strings.Contains(string(tok), ".~3.") || sk.VerifySession(tok, 0, &s) != nil || s.Device != nil || s.Risk != 3 {
		t.Fatalf("risk only: %s %+v", tok, s)
	}
	old := sk.Mint(nil, 42, 1_900_000_000)
	if !bytes.Equal(old, sk.MintAttrs(nil, 42, 1_900_000_000, nil, 0)) || strings.Count(string(old), ".") != 2 {
		t.Fatalf("no attributes must mint the old form, got %s", old)
	}
	if err := sk.VerifySession(old, 0, &s); err != nil || s.Device != nil || s.Risk != 0 || s.UID != 42 {
		t.Fatalf("old token: %+v %v", s, err)
	}
}

func TestSessionAttrsRejects(t *testing.T) {
	sk, _ := NewSessionKey(testKey(3))
	good := string(sk.MintAttrs(nil, 7, 2_000_000_000, []byte("dev1"), 2))
	sig := good[strings.LastIndexByte(good, '.')+1:]
	oldSig := string(sk.Mint(nil, 7, 2_000_000_000))
	oldSig = oldSig[strings.LastIndexByte(oldSig, '.')+1:]
	for _, tc := range []struct {
		tok  string
		want error
	}{
		{"7.2000000000.dev2~2." + sig, ErrSessionForged},     // another device
		{"7.2000000000.dev1~9." + sig, ErrSessionForged},     // risk lowered or raised
		{"7.2000000000.~2." + sig, ErrSessionForged},         // device dropped
		{"7.2000000000." + sig, ErrSessionForged},            // attributes dropped
		{"7.2000000000.dev1~2." + oldSig, ErrSessionForged},  // attributes added to an old token
		{"7.2000000000.dev1~10." + sig, ErrSessionMalformed}, // risk out of range
		{"7.2000000000.dev1~a." + sig, ErrSessionMalformed},  // risk not a digit
		{"7.2000000000.dev1." + sig, ErrSessionMalformed},    // no risk
		{"7.2000000000.de.v1~2." + sig, ErrSessionMalformed}, // a dot in the device
		{"7.2000000000.dév1~2." + sig, ErrSessionMalformed},  // outside [A-Za-z0-9_-]
		{"7.2000000000." + strings.Repeat("d", 65) + "~2." + sig, ErrSessionMalformed},
		{"7.2000000000.dev1~2.", ErrSessionMalformed},
	} {
		var s Session
		if err := sk.VerifySession([]byte(tc.tok), 1_000_000_000, &s); !errors.Is(err, tc.want) || s.UID != 0 || s.Device != nil {
			t.Errorf("%q: %v (%+v), want %v", tc.tok, err, s, tc.want)
		}
	}
	long := sk.MintAttrs(nil, ^uint64(0), 1<<62, bytes.Repeat([]byte("D"), MaxDeviceLen), MaxRisk)
	if len(long) > MaxSessionLen {
		t.Fatalf("the longest token is %d bytes, MaxSessionLen %d", len(long), MaxSessionLen)
	}
	if _, err := sk.Verify(long, 0); err != nil {
		t.Fatalf("the longest token: %v", err)
	}
}

// Key rotation: a SessionKey of (new, old) mints with new and accepts both; new alone
// refuses old's tokens.
func TestSessionKeyRotation(t *testing.T) {
	newK, oldK := testKey(5), testKey(6)
	both, err := NewSessionKeys([][]byte{newK, oldK})
	if err != nil {
		t.Fatal(err)
	}
	onlyNew, _ := NewSessionKey(newK)
	onlyOld, _ := NewSessionKey(oldK)
	oldTok := onlyOld.MintAttrs(nil, 9, 2_000_000_000, []byte("dev"), 1)
	if uid, err := both.Verify(oldTok, 0); err != nil || uid != 9 {
		t.Fatalf("old key's token during the rotation: %d %v", uid, err)
	}
	if _, err := onlyNew.Verify(oldTok, 0); !errors.Is(err, ErrSessionForged) {
		t.Fatalf("old key's token after the rotation: %v", err)
	}
	if tok := both.Mint(nil, 9, 2_000_000_000); !bytes.Equal(tok, onlyNew.Mint(nil, 9, 2_000_000_000)) {
		t.Fatal("a rotation must mint with its first key")
	}
	if _, err := NewSessionKeys([][]byte{newK, oldK[:5]}); err == nil {
		t.Fatal("a short key in a rotation")
	}
	if _, err := NewSessionKeys(nil); err == nil {
		t.Fatal("no key")
	}
}

func TestSessionAttrsAllocateNothing(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector makes sync.Pool drop pooled HMAC states")
	}
	sk, _ := NewSessionKeys([][]byte{testKey(5), testKey(3)})
	tok := sk.MintAttrs(nil, 42, 2_000_000_000, []byte("device-0123456789"), 4)
	var s Session
	if n := testing.AllocsPerRun(200, func() {
		if err := sk.VerifySession(tok, 1_000_000_000, &s); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("VerifySession with attributes, second key of a rotation: %v allocs/op", n)
	}
	dst := make([]byte, 0, MaxSessionLen)
	if n := testing.AllocsPerRun(200, func() { dst = sk.MintAttrs(dst[:0], 42, 2_000_000_000, []byte("d"), 1) }); n != 0 {
		t.Errorf("MintAttrs: %v allocs/op", n)
	}
}

func BenchmarkSessionVerifyAttrs(b *testing.B) {
	sk, _ := NewSessionKey(testKey(3))
	tok := sk.MintAttrs(nil, 42, 2_000_000_000, []byte("device-0123456789"), 4)
	var s Session
	b.ReportAllocs()
	for b.Loop() {
		if err := sk.VerifySession(tok, 1_000_000_000, &s); err != nil {
			b.Fatal(err)
		}
	}
}
