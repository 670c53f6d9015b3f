package settler

import (
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
	macKey, _ := ticket.MACKey(c.key, "val", c.manifest.Generation)
	withMAC, err := NewValidator(c.manifest, macKey, amounts)
	if err != nil {
		t.Fatal(err)
	}
	rangeOnly, err := NewValidator(c.manifest, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	otherKey, _ := ticket.MACKey(ticket.NewKey(), "val", c.manifest.Generation)
	wrongKey, _ := NewValidator(c.manifest, otherKey, nil)

	mod := func(id uint64, f func(*ticket.Claim)) []byte {
		cl := c.claim(id, 42)
		f(&cl)
		return claimJSON(cl)
	}
	noop := func(*ticket.Claim) {}
	tests := []struct {
		name   string
		v      *Validator
		raw    []byte
		reason string
	}{
		{"good shard 0", withMAC, mod(1, noop), ""},
		{"good shard 1", withMAC, mod(150, noop), ""},
		{"good without key", rangeOnly, mod(120, noop), ""},
		{"not json", withMAC, []byte("{nope"), ReasonMalformed},
		{"empty", withMAC, nil, ReasonMalformed},
		{"wrong campaign", withMAC, mod(1, func(c *ticket.Claim) { c.Campaign = "other" }), ReasonCampaign},
		{"ticket beyond every shard", withMAC, mod(151, noop), ReasonUnknownTicket},
		{"ticket far out", rangeOnly, mod(1<<40, noop), ReasonUnknownTicket},
		{"wrong shard", withMAC, mod(120, func(c *ticket.Claim) { c.Shard = 0 }), ReasonShard},
		{"wrong round", withMAC, mod(3, func(c *ticket.Claim) { c.Round = 1 }), ReasonRound},
		{"wrong currency", withMAC, mod(3, func(c *ticket.Claim) { c.Currency = "USD" }), ReasonCurrency},
		{"amount above max", rangeOnly, mod(3, func(c *ticket.Claim) { c.Amount = 98 }), ReasonAmount},
		{"amount below min", rangeOnly, mod(3, func(c *ticket.Claim) { c.Amount = 0 }), ReasonAmount},
		{"amount in range but not the ticket's", withMAC, mod(3, func(c *ticket.Claim) { c.Amount = 50 }), ReasonAmount},
		{"amount changed, MAC only", wrongKey, mod(3, func(c *ticket.Claim) { c.Amount = 50 }), ReasonMAC},
		{"forged MAC", withMAC, mod(3, func(c *ticket.Claim) { c.MAC[0] ^= 1 }), ReasonMAC},
		{"missing MAC", withMAC, mod(3, func(c *ticket.Claim) { c.MAC = [ticket.MACSize]byte{} }), ReasonMAC},
		{"missing MAC without key", rangeOnly, mod(3, func(c *ticket.Claim) { c.MAC = [ticket.MACSize]byte{} }), ""},
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
	if _, err := NewValidator(c.manifest, nil, amounts[:10]); err == nil {
		t.Fatal("short amounts accepted")
	}
}

func FuzzValidatorCheck(f *testing.F) {
	c := makeCampaign(f, f.TempDir(), "fz", []uint64{10}, time.Now().Add(time.Hour))
	v, _ := NewValidator(c.manifest, nil, nil)
	f.Add(claimJSON(c.claim(1, 1)))
	f.Add([]byte(`{"v":1}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		p, reason, _ := v.Check(raw)
		if reason == "" && (p.Ticket < 1 || p.Ticket > 10 || p.Amount < 1 || p.Amount > 97) {
			t.Fatalf("accepted %+v", p)
		}
	})
}
