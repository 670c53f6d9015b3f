package settler

import (
	"strings"
	"testing"
	"time"

	"shake/ticket"
)

func TestValidator(t *testing.T) {
	c := makeCampaign(t, t.TempDir(), "val", []uint64{100, 50}, time.Now().Add(time.Hour))
	amounts, err := LoadAmounts(c.manifest, c.dir)
	if err != nil {
		t.Fatal(err)
	}
	exact := c.validator(t, amounts)
	macOnly := c.validator(t, nil)

	// signed applies f to a genuine claim and signs it again: what a verifier with a bug
	// (or a stolen campaign.key) would send. The manifest checks still refuse it.
	signed := func(id uint64, f func(*ticket.Claim)) []byte {
		cl := c.claim(id, 42)
		f(&cl)
		return claimJSON(c.resign(cl))
	}
	noop := func(*ticket.Claim) {}
	now := time.Now()
	tests := []struct {
		name   string
		v      *Validator
		raw    []byte
		reason string
	}{
		{"good shard 0", exact, signed(1, noop), ""},
		{"good shard 1", exact, signed(150, noop), ""},
		{"good, MAC only", macOnly, signed(120, noop), ""},
		{"not json", exact, []byte("{nope"), ReasonMalformed},
		{"empty", exact, nil, ReasonMalformed},
		{"wrong campaign", exact, signed(1, func(c *ticket.Claim) { c.Campaign = "other" }), ReasonCampaign},
		{"ticket beyond every shard", exact, signed(151, noop), ReasonUnknownTicket},
		{"ticket far out", macOnly, signed(1<<40, noop), ReasonUnknownTicket},
		{"wrong shard", exact, signed(120, func(c *ticket.Claim) { c.Shard = 0 }), ReasonShard},
		{"wrong round", exact, signed(3, func(c *ticket.Claim) { c.Round = 1 }), ReasonRound},
		{"wrong currency", exact, signed(3, func(c *ticket.Claim) { c.Currency = "USD" }), ReasonCurrency},
		{"amount above max", macOnly, signed(3, func(c *ticket.Claim) { c.Amount = 98 }), ReasonAmount},
		{"amount below min", macOnly, signed(3, func(c *ticket.Claim) { c.Amount = 0 }), ReasonAmount},
		{"amount in range but not the ticket's", exact, signed(3, func(c *ticket.Claim) { c.Amount = 50 }), ReasonAmount},
		{"amount changed, MAC only", macOnly, signed(3, func(c *ticket.Claim) { c.Amount = 50 }), ReasonMAC},
		{"forged MAC", exact, signed(3, func(c *ticket.Claim) { c.MAC[0] ^= 1 }), ReasonMAC},
		{"missing MAC", exact, signed(3, func(c *ticket.Claim) { c.MAC = [ticket.MACSize]byte{} }), ReasonMAC},
		{"issued in 2030", exact, signed(3, func(c *ticket.Claim) { c.IssuedAt = now.AddDate(4, 0, 0); c.OpenedAt = c.IssuedAt }), ReasonIssueTime},
		{"issued before the campaign", exact, signed(3, func(c *ticket.Claim) { c.IssuedAt = now.Add(-time.Hour) }), ReasonIssueTime},
		{"opened after the ttl", exact, signed(3, func(c *ticket.Claim) { c.OpenedAt = c.IssuedAt.Add(61 * time.Minute) }), ReasonExpired},
		{"opened before issued", exact, signed(3, func(c *ticket.Claim) { c.OpenedAt = c.IssuedAt.Add(-time.Minute) }), ReasonExpired},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, reason, detail := tt.v.Check(tt.raw)
			if reason != tt.reason {
				t.Fatalf("reason %q (%s), want %q", reason, detail, tt.reason)
			}
			if reason == "" {
				if p.Campaign != "val" || p.Amount != amountOf(p.Ticket) || p.UID != 42 || p.Currency != "CNY" {
					t.Fatalf("posting %+v", p)
				}
			} else if detail == "" {
				t.Fatal("no detail")
			}
		})
	}
	if _, err := NewValidator(ValidatorConfig{Manifest: c.manifest, CampaignKey: c.key, Amounts: amounts[:10]}); err == nil {
		t.Fatal("short amounts accepted")
	}
	if _, err := NewValidator(ValidatorConfig{Manifest: c.manifest}); err != ErrNoKey {
		t.Fatalf("validator without campaign.key: %v, want ErrNoKey", err)
	}
}

// TestValidatorDetailRevealsNothing: a dead letter's detail names what the claim said and
// never the value the manifest expected (the old details taught a forger the right
// amount, shard and round: "ticket 3 is worth 4, claim says 50").
func TestValidatorDetailRevealsNothing(t *testing.T) {
	c := makeCampaign(t, t.TempDir(), "det", []uint64{100, 50}, time.Now().Add(time.Hour))
	amounts, err := LoadAmounts(c.manifest, c.dir)
	if err != nil {
		t.Fatal(err)
	}
	v := c.validator(t, amounts)
	m := c.manifest
	for _, tc := range []struct {
		name    string
		mut     func(*ticket.Claim)
		secrets []string // values the detail must not contain
	}{
		{"amount", func(cl *ticket.Claim) { cl.Amount = 55 }, []string{" 4", "worth", "[1, 97]", "97"}},
		{"amount out of range", func(cl *ticket.Claim) { cl.Amount = 500 }, []string{"97", "[1"}},
		{"shard", func(cl *ticket.Claim) { cl.Shard = 1 }, []string{"shard 0", "belongs"}},
		{"round", func(cl *ticket.Claim) { cl.Round = 3 }, []string{"round 0", "is in round"}},
		{"campaign", func(cl *ticket.Claim) { cl.Campaign = "zzz" }, []string{m.Campaign + `"`}},
		{"currency", func(cl *ticket.Claim) { cl.Currency = "USD" }, []string{"CNY"}},
		{"unknown ticket", func(cl *ticket.Claim) { cl.Ticket = 9999 }, []string{"150", "has "}},
	} {
		cl := c.claim(3, 42) // ticket 3 is worth 4, shard 0, round 0
		tc.mut(&cl)
		_, reason, detail := v.Check(claimJSON(c.resign(cl)))
		if reason == "" {
			t.Fatalf("%s: accepted", tc.name)
		}
		for _, s := range tc.secrets {
			if strings.Contains(detail, s) {
				t.Errorf("%s: detail %q reveals %q", tc.name, detail, s)
			}
		}
	}
}

func FuzzValidatorCheck(f *testing.F) {
	c := makeCampaign(f, f.TempDir(), "fz", []uint64{10}, time.Now().Add(time.Hour))
	v := c.validator(f, nil)
	f.Add(claimJSON(c.claim(1, 1)))
	f.Add([]byte(`{"v":1}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		p, reason, _ := v.Check(raw)
		if reason == "" && (p.Ticket < 1 || p.Ticket > 10 || p.Amount < 1 || p.Amount > 97) {
			t.Fatalf("accepted %+v", p)
		}
	})
}

// BenchmarkValidatorCheck is the settler's cost per claim: parse, signature, manifest,
// exact amount, ticket MAC, time windows.
func BenchmarkValidatorCheck(b *testing.B) {
	c := makeCampaign(b, b.TempDir(), "bench", []uint64{1000}, time.Now().Add(time.Hour))
	amounts, err := LoadAmounts(c.manifest, c.dir)
	if err != nil {
		b.Fatal(err)
	}
	v := c.validator(b, amounts)
	raw := claimJSON(c.claim(77, 42))
	b.ReportAllocs()
	for b.Loop() {
		if _, reason, detail := v.Check(raw); reason != "" {
			b.Fatal(reason, detail)
		}
	}
}
