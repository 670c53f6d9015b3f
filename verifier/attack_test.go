package verifier

import (
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"shake/ticket"
)

// TestForgedTimesAreRefused: an attacker holding one edge's key seals genuine tickets of
// that shard (true amount and MAC) with the times it likes. Before the time-window
// check, a token expiring in 2099 opened today and stayed openable after the campaign's
// refund; a token issued before the campaign or in the future opened too. Each is 422
// now; only a token an edge following the manifest could have made opens, with
// ticket.ClockSkew of slack for its clock, and a genuine token past its expiry is 410.
func TestForgedTimesAreRefused(t *testing.T) {
	defer setPerUser(0)()
	f := newFixture(t, 1, 100)
	b := startBroker(t)
	s := newServer(t, f, f.config([]string{b.Addr()}))
	now := time.Now()
	created := f.man.CreatedAt
	ttl := time.Duration(f.man.TTLSeconds) * time.Second
	seal := func(id uint64, iss, exp time.Time) []byte {
		a := amountOf(id)
		return f.sealers[0].Seal(nil, &ticket.TicketToken{Ticket: id, UID: 7, Amount: a, MAC: f.mac.Sum(id, a, 0),
			IssuedAt: uint32(iss.Unix()), ExpiresAt: uint32(exp.Unix())})
	}
	cases := []struct {
		name   string
		tok    []byte
		status int
		code   string
	}{
		{"expires in 2099", seal(1, now, time.Date(2099, 1, 1, 0, 0, 0, 0, time.UTC)), 422, "invalid_token"},
		{"expires a second after issued_at + ttl", seal(2, now, now.Add(ttl+time.Second)), 422, "invalid_token"},
		{"expires after the manifest's expires_at", seal(3, f.man.IssueUntil, f.man.ExpiresAt.Add(time.Second)), 422, "invalid_token"},
		{"issued before the campaign", seal(4, created.Add(-time.Minute), now.Add(time.Minute)), 422, "invalid_token"},
		{"issued in the future", seal(5, now.Add(time.Minute), now.Add(time.Minute+ttl)), 422, "invalid_token"},
		{"issued in 2030", seal(6, time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC), f.man.ExpiresAt), 422, "invalid_token"},
		{"edge clock 3 s ahead", seal(7, now.Add(3*time.Second), now.Add(ttl)), 200, "opened"},
		{"as an edge makes it", seal(8, now, now.Add(ttl)), 200, "opened"},
		{"expired", seal(9, created, now.Add(-time.Second)), 410, "expired"},
	}
	for _, c := range cases {
		st, got := do(s, "POST", "/v1/open", f.bearer(7), body(c.tok))
		if st != c.status || !strings.Contains(got, c.code) {
			t.Errorf("%s: %d %s, want %d %s", c.name, st, got, c.status, c.code)
		}
	}
}

// TestClaimsAreSigned: every claim the verifier makes carries a signature over all its
// fields, uid included, that the campaign's claim key verifies; changing any field (the
// uid, the amount) breaks it. Before, a claim carried nothing a forger lacked.
func TestClaimsAreSigned(t *testing.T) {
	f := newFixture(t, 1, 100)
	b := startBroker(t)
	s := newServer(t, f, f.config([]string{b.Addr()}))
	if st, got := do(s, "POST", "/v1/open", f.bearer(7), body(f.tok(5, 7))); st != 200 {
		t.Fatalf("open: %d %s", st, got)
	}
	c := readTopic(t, b.Addr(), 1, 5*time.Second)[5][0]
	if !c.HasSig() || !f.signer.Verify(&c) {
		t.Fatalf("claim %+v carries no valid signature", c)
	}
	c.UID = 8
	if f.signer.Verify(&c) {
		t.Fatal("a claim moved to another uid still verifies")
	}
	c.UID, c.Amount = 7, c.Amount+1
	if f.signer.Verify(&c) {
		t.Fatal("a claim with another amount still verifies")
	}
}

// TestKeyFileReadableByOthersWarns: a campaign.key or session.key that other local users
// can read is logged as a warning at start.
func TestKeyFileReadableByOthersWarns(t *testing.T) {
	f := newFixture(t, 1, 10)
	must(t, os.Chmod(f.ckPath, 0o644))
	cfg := f.config([]string{"127.0.0.1:1"})
	var logs syncBuffer
	cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	newServerNoKafka(t, f, cfg)
	if !strings.Contains(logs.String(), "key file is readable by other users") || !strings.Contains(logs.String(), f.ckPath) {
		t.Fatalf("no warning for %s: %s", f.ckPath, logs.String())
	}
	if strings.Contains(logs.String(), f.skPath) {
		t.Fatalf("a warning for the 0600 %s: %s", f.skPath, logs.String())
	}
}
