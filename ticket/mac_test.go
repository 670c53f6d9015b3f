package ticket

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

func TestTicketMACBindsEveryField(t *testing.T) {
	tm := testMAC(t, "c1")
	base := tm.Sum(10, 500, 2)
	if !tm.Verify(10, 500, 2, base) {
		t.Fatal("own MAC does not verify")
	}
	other := testMAC(t, "c2")
	mk, _ := MACKey(testKey(9), "c1", testGen)
	otherKey, _ := NewTicketMAC(mk, "c1")
	for name, ok := range map[string]bool{
		"id":       tm.Verify(11, 500, 2, base),
		"amount":   tm.Verify(10, 501, 2, base),
		"round":    tm.Verify(10, 500, 3, base),
		"campaign": other.Verify(10, 500, 2, base),
		"key":      otherKey.Verify(10, 500, 2, base),
	} {
		if ok {
			t.Errorf("MAC verifies with a different %s", name)
		}
	}
	for i := 0; i < MACSize; i++ {
		bad := base
		bad[i] ^= 1
		if tm.Verify(10, 500, 2, bad) {
			t.Fatalf("MAC with byte %d flipped verifies", i)
		}
	}
	if n := testing.AllocsPerRun(100, func() { tm.Sum(1, 2, 3) }); n != 0 && !raceEnabled {
		t.Errorf("Sum: %v allocs/op", n)
	}
	if _, err := NewTicketMAC(mk[:31], "c1"); err == nil {
		t.Error("short MAC key accepted")
	}
	if _, err := NewTicketMAC(mk, "-bad"); err == nil {
		t.Error("bad campaign accepted")
	}
}

func TestKeyDerivationSeparatesPurposes(t *testing.T) {
	ck := testKey(5)
	seen := map[string]string{}
	add := func(name string, k []byte, err error) {
		t.Helper()
		if err != nil || len(k) != KeySize {
			t.Fatalf("%s: %v", name, err)
		}
		if prev, dup := seen[string(k)]; dup {
			t.Fatalf("%s derives the same key as %s", name, prev)
		}
		seen[string(k)] = name
	}
	for _, c := range []string{"c1", "c2"} {
		k, err := MACKey(ck, c, testGen)
		add("mac "+c, k, err)
		for s := 0; s < 3; s++ {
			k, err := ShardKey(ck, c, testGen, s)
			add("shard "+c+string(rune('0'+s)), k, err)
		}
	}
	again, _ := ShardKey(ck, "c1", testGen, 1)
	if seen[string(again)] != "shard c11" {
		t.Fatal("derivation is not deterministic")
	}
	if _, err := ShardKey(ck[:10], "c1", testGen, 0); err == nil {
		t.Fatal("short campaign key accepted")
	}
}

func TestKeyFiles(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "a.key")
	k := NewKey()
	if bytes.Equal(k, NewKey()) {
		t.Fatal("NewKey repeats")
	}
	if err := WriteKeyFile(p, k); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(p); st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v", st.Mode())
	}
	if err := WriteKeyFile(p, k); err == nil {
		t.Fatal("overwrote an existing key")
	}
	got, err := ReadKeyFile(p)
	if err != nil || !bytes.Equal(got, k) {
		t.Fatalf("read back %x, %v", got, err)
	}
	os.WriteFile(filepath.Join(dir, "short"), k[:5], 0o600)
	if _, err := ReadKeyFile(filepath.Join(dir, "short")); err == nil {
		t.Fatal("short key file accepted")
	}
}

func TestIDs(t *testing.T) {
	for s, ok := range map[string]bool{"a": true, "0": true, "c-1": true, "a-": true, "-a": false, "": false, "A": false,
		"a_b": false, "abcdefghijklmnopqrstuvwxyz012345": true, "abcdefghijklmnopqrstuvwxyz0123456": false} {
		if ValidCampaign(s) != ok || (CheckCampaign(s) == nil) != ok {
			t.Errorf("campaign %q: want %v", s, ok)
		}
	}
	for s, ok := range map[string]bool{"CNY": true, "USD": true, "cny": false, "CN": false, "CNYY": false} {
		if ValidCurrency(s) != ok {
			t.Errorf("currency %q: want %v", s, ok)
		}
	}
	for s, want := range map[string]int64{"0": 0, "1": 1, "18446744073709551615": -1, "18446744073709551616": -2,
		"01": -2, "": -2, "+1": -2, "1a": -2} {
		n, ok := ParseUint([]byte(s))
		n2, ok2 := ParseUintString(s)
		if ok != ok2 || (ok && n != n2) || ok != (want != -2) || (ok && want >= 0 && n != uint64(want)) {
			t.Errorf("%q: %d %v / %d %v", s, n, ok, n2, ok2)
		}
	}
}

func BenchmarkTicketMAC(b *testing.B) {
	tm := testMAC(b, "c1")
	b.ReportAllocs()
	var id uint64
	for b.Loop() {
		id++
		tm.Sum(id, 500, 0)
	}
}
