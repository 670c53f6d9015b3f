package ticket

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// Attacks on the shared vocabulary. Each test states the attack and the
// refusal; the settler's and reconcile's attacks are in their packages.

// TestAttackCampaignIDReused: a campaign id generated twice under one campaign.key (a
// re-run of `shake gen` after a mistake, say). Before generations, both runs derived the
// same shard, ticket-MAC and claim keys, so a token won in the first opened in the second
// and its claim was accepted. Every derived key now includes the generation.
func TestAttackCampaignIDReused(t *testing.T) {
	ck := testKey(1)
	genA, genB := NewGeneration(), NewGeneration()
	if genA == genB || !ValidGeneration(genA) {
		t.Fatalf("generations %q %q", genA, genB)
	}
	derive := func(gen string) (shard, mac, claim []byte) {
		var err error
		if shard, err = ShardKey(ck, "c1", gen, 0); err != nil {
			t.Fatal(err)
		}
		if mac, err = MACKey(ck, "c1", gen); err != nil {
			t.Fatal(err)
		}
		if claim, err = ClaimKey(ck, "c1", gen); err != nil {
			t.Fatal(err)
		}
		return
	}
	sa, ma, ca := derive(genA)
	sb, mb, cb := derive(genB)
	if bytes.Equal(sa, sb) || bytes.Equal(ma, mb) || bytes.Equal(ca, cb) {
		t.Fatal("two generations share a derived key")
	}
	// A token sealed in generation A does not open under generation B's keys.
	sealer, _ := NewSealer(sa, 0)
	tok := sealer.Seal(nil, &TicketToken{Ticket: 5, UID: 9, Amount: 100, IssuedAt: 1, ExpiresAt: 1 << 31})
	openB, _ := NewOpener([][]byte{sb})
	var got TicketToken
	if err := openB.Open(&got, tok, make([]byte, TokenRawLen)); err == nil {
		t.Fatal("a token of the old generation opens under the new one")
	}
	openA, _ := NewOpener([][]byte{sa})
	if err := openA.Open(&got, tok, make([]byte, TokenRawLen)); err != nil {
		t.Fatalf("control: the token does not open under its own generation: %v", err)
	}
	// Its ticket MAC and its claim signature do not verify in generation B either.
	tmA, _ := NewTicketMAC(ma, "c1")
	tmB, _ := NewTicketMAC(mb, "c1")
	if tmB.Verify(5, 100, 0, tmA.Sum(5, 100, 0)) {
		t.Fatal("a ticket MAC of the old generation verifies in the new one")
	}
	csA, _ := NewClaimSigner(ca)
	csB, _ := NewClaimSigner(cb)
	c := testClaim()
	csA.Sign(&c)
	if csB.Verify(&c) || !csA.Verify(&c) {
		t.Fatal("a claim of the old generation verifies in the new one")
	}
	for _, bad := range []string{"", "00", genA[:31] + "G", "00112233445566778899AABBCCDDEEFF"} {
		if _, err := ShardKey(ck, "c1", bad, 0); !errors.Is(err, ErrBadGeneration) {
			t.Errorf("generation %q: %v", bad, err)
		}
	}
}

// TestAttackForgedClaimSignature: someone who can produce to the claims topic but holds no
// campaign.key writes claims with any signature. None verifies.
func TestAttackForgedClaimSignature(t *testing.T) {
	cs := testClaimSigner(t)
	c := testClaim()
	for _, sig := range [][ClaimSigSize]byte{{}, {1}, {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}} {
		c.Sig = sig
		if cs.Verify(&c) {
			t.Fatalf("forged signature %x verifies", sig)
		}
	}
	// A signature copied from a genuine claim onto another uid does not verify.
	cs.Sign(&c)
	stolen := c
	stolen.UID = 1234
	if cs.Verify(&stolen) {
		t.Fatal("a genuine signature verifies for another uid")
	}
}

// TestCheckKeyFileMode: a key readable by group or others is reported.
func TestCheckKeyFileMode(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "campaign.key")
	if err := WriteKeyFile(p, testKey(1)); err != nil {
		t.Fatal(err)
	}
	if err := CheckKeyFileMode(p); err != nil {
		t.Fatalf("0600 key: %v", err)
	}
	for _, mode := range []os.FileMode{0o640, 0o604, 0o644, 0o660} {
		os.Chmod(p, mode)
		if err := CheckKeyFileMode(p); !errors.Is(err, ErrKeyExposed) {
			t.Errorf("mode %04o: %v", mode, err)
		}
	}
	if err := CheckKeyFileMode(filepath.Join(dir, "missing")); err == nil || errors.Is(err, ErrKeyExposed) {
		t.Errorf("missing file: %v", err)
	}
}
