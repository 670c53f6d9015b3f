package settler

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"shake/ticket"
)

// testCampaign is a campaign written to disk for tests: manifest.json plus one shard file
// per entry of counts, amounts 1 + id%97 (so every amount is known), every ticket MAC'd.
type testCampaign struct {
	dir      string
	manifest *ticket.Manifest
	path     string // manifest.json
	key      []byte // campaign key
	mac      *ticket.TicketMAC
	signer   *ticket.ClaimSigner
}

func amountOf(id uint64) int64 { return 1 + int64(id%97) }

// makeCampaign writes a campaign without a per-user rule (per_user 0).
func makeCampaign(t testing.TB, dir, campaign string, counts []uint64, expires time.Time) *testCampaign {
	t.Helper()
	return makeCampaignRule(t, dir, campaign, counts, expires, 0)
}

// makeCampaignRule is makeCampaign with the campaign's per_user rule.
func makeCampaignRule(t testing.TB, dir, campaign string, counts []uint64, expires time.Time, perUser int) *testCampaign {
	t.Helper()
	key := ticket.NewKey()
	gen := ticket.NewGeneration()
	macKey, err := ticket.MACKey(key, campaign, gen)
	if err != nil {
		t.Fatal(err)
	}
	tm, err := ticket.NewTicketMAC(macKey, campaign)
	if err != nil {
		t.Fatal(err)
	}
	created := time.Now().UTC().Truncate(time.Second)
	m := &ticket.Manifest{Version: ticket.ManifestVersion, Campaign: campaign, Currency: "CNY", Min: 1, Max: 97,
		TTL: "1h0m0s", TTLSeconds: 3600, Rounds: []ticket.RoundWindow{{Index: 0}}, CreatedAt: created,
		IssueUntil: expires.Add(-time.Hour), ExpiresAt: expires, Generation: gen, PerUser: perUser}
	next := uint64(1)
	for i, n := range counts {
		var amount int64
		for id := next; id < next+n; id++ {
			amount += amountOf(id)
		}
		file := fmt.Sprintf("edge-%03d.tickets", i)
		h := ticket.ShardHeader{Version: ticket.ShardVersion, Campaign: campaign, Currency: "CNY", Shard: i,
			Shards: len(counts), FirstTicket: next, Count: n, Amount: amount, TTLSeconds: 3600,
			Rounds: m.Rounds, RoundRanges: []ticket.RoundRange{{Round: 0, FirstTicket: next, Count: n, Amount: amount}},
			CreatedAt: created, Generation: gen, PerUser: perUser}
		f, err := os.Create(filepath.Join(dir, file))
		if err != nil {
			t.Fatal(err)
		}
		sw, err := ticket.NewShardWriter(f, h)
		if err != nil {
			t.Fatal(err)
		}
		for id := next; id < next+n; id++ {
			a := uint32(amountOf(id))
			if err := sw.Append(a, tm.Sum(id, a, 0)); err != nil {
				t.Fatal(err)
			}
		}
		if err := sw.Close(); err != nil {
			t.Fatal(err)
		}
		f.Close()
		m.Shards = append(m.Shards, ticket.ManifestShard{Index: i, File: file, KeyFile: fmt.Sprintf("edge-%03d.key", i),
			FirstTicket: next, Count: n, Amount: amount, Rounds: h.RoundRanges})
		m.Count += n
		m.Budget += amount
		next += n
	}
	if err := m.Validate(); err != nil {
		t.Fatal(err)
	}
	if err := m.Sign(key); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "manifest.json")
	b, _ := jsonMarshal(m)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := ticket.WriteKeyFile(filepath.Join(dir, "campaign.key"), key); err != nil {
		t.Fatal(err)
	}
	signer, err := m.ClaimSigner(key)
	if err != nil {
		t.Fatal(err)
	}
	return &testCampaign{dir: dir, manifest: m, path: path, key: key, mac: tm, signer: signer}
}

// validator returns the campaign's validator (amounts may be nil).
func (c *testCampaign) validator(t testing.TB, amounts []uint32) *Validator {
	t.Helper()
	v, err := NewValidator(ValidatorConfig{Manifest: c.manifest, CampaignKey: c.key, Amounts: amounts})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// claim returns the claim for ticket id as the verifier would produce it, signed: issued
// when the campaign opened (inside its window however slow the test), opened now.
func (c *testCampaign) claim(id uint64, uid uint64) ticket.Claim {
	shard, ok := c.manifest.ShardOf(id)
	if !ok {
		shard = 0
	}
	a := amountOf(id)
	now := time.Now().UTC()
	cl := ticket.Claim{Campaign: c.manifest.Campaign, Ticket: id, Shard: shard, Round: 0, Amount: a, Currency: "CNY",
		UID: uid, IssuedAt: c.manifest.CreatedAt, OpenedAt: now, MAC: c.mac.Sum(id, uint32(a), 0)}
	c.signer.Sign(&cl)
	return cl
}

// resign signs cl again after a test changed it (a claim a verifier would have made).
func (c *testCampaign) resign(cl ticket.Claim) ticket.Claim {
	c.signer.Sign(&cl)
	return cl
}

func claimJSON(c ticket.Claim) []byte { return c.AppendJSON(nil) }
