package verifier

import (
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"shake/ticket"
)

// fixture is a campaign built by hand for tests: keys, a manifest with nShards shards of
// perShard tickets each, and sealers as the edges would hold them. The verifier reads
// only the manifest and the keys, so no shard files are needed.
type fixture struct {
	dir, manifest, ckPath, skPath string
	man                           *ticket.Manifest
	sess                          *ticket.SessionKey
	mac                           *ticket.TicketMAC
	sealers                       []*ticket.Sealer
	signer                        *ticket.ClaimSigner
}

const testCampaign = "cny-2026"

// amountOf is the amount of ticket id in the test campaign, in [1, 100].
func amountOf(id uint64) uint32 { return uint32(id%100) + 1 }

func newFixture(t testing.TB, nShards int, perShard uint64) *fixture {
	t.Helper()
	dir := t.TempDir()
	f := &fixture{dir: dir, manifest: filepath.Join(dir, "manifest.json"),
		ckPath: filepath.Join(dir, "campaign.key"), skPath: filepath.Join(dir, "session.key")}
	ck, sk := ticket.NewKey(), ticket.NewKey()
	must(t, ticket.WriteKeyFile(f.ckPath, ck))
	must(t, ticket.WriteKeyFile(f.skPath, sk))
	m := &ticket.Manifest{Version: 1, Campaign: testCampaign, Currency: "CNY", Min: 1, Max: 100,
		TTL: "1h0m0s", TTLSeconds: 3600, Rounds: []ticket.RoundWindow{{}}, CreatedAt: time.Now().UTC(),
		Generation: ticket.NewGeneration(), PerUser: fixturePerUser}
	m.IssueUntil = m.CreatedAt.Add(time.Hour)
	m.ExpiresAt = m.IssueUntil.Add(time.Hour)
	next := uint64(1)
	for i := 0; i < nShards; i++ {
		var amt int64
		for id := next; id < next+perShard; id++ {
			amt += int64(amountOf(id))
		}
		m.Shards = append(m.Shards, ticket.ManifestShard{Index: i, File: "edge-00" + string(rune('0'+i)) + ".tickets",
			FirstTicket: next, Count: perShard, Amount: amt,
			Rounds: []ticket.RoundRange{{Round: 0, FirstTicket: next, Count: perShard, Amount: amt}}})
		m.Count += perShard
		m.Budget += amt
		next += perShard
	}
	must(t, m.Sign(ck))
	b, err := json.Marshal(m)
	must(t, err)
	must(t, os.WriteFile(f.manifest, b, 0o600))
	f.man, err = ticket.LoadManifest(f.manifest)
	must(t, err)
	f.sess, err = ticket.NewSessionKey(sk)
	must(t, err)
	f.signer, err = f.man.ClaimSigner(ck)
	must(t, err)
	mk, _ := ticket.MACKey(ck, testCampaign, m.Generation)
	f.mac, err = ticket.NewTicketMAC(mk, testCampaign)
	must(t, err)
	for i := 0; i < nShards; i++ {
		k, _ := ticket.ShardKey(ck, testCampaign, m.Generation, i)
		s, err := ticket.NewSealer(k, i)
		must(t, err)
		f.sealers = append(f.sealers, s)
	}
	return f
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// token seals ticket id (with its true amount and MAC) for uid with shard's key.
func (f *fixture) token(shard int, id, uid uint64, expires time.Time) []byte {
	a := amountOf(id)
	return f.sealers[shard].Seal(nil, &ticket.TicketToken{Ticket: id, UID: uid, Amount: a,
		MAC: f.mac.Sum(id, a, 0), IssuedAt: uint32(time.Now().Unix()), ExpiresAt: uint32(expires.Unix())})
}

// tok seals ticket id for uid with the shard that owns it, expiring in an hour.
func (f *fixture) tok(id, uid uint64) []byte {
	sh, _ := f.man.ShardOf(id)
	return f.token(sh, id, uid, time.Now().Add(time.Hour))
}

func (f *fixture) bearer(uid uint64) []byte {
	return f.sess.Mint([]byte("Bearer "), uid, time.Now().Add(time.Hour).Unix())
}

func body(tok []byte) []byte { return []byte(`{"token":"` + string(tok) + `"}`) }

func (f *fixture) config(brokers []string) Config {
	return Config{Manifest: f.manifest, Key: f.ckPath, SessionKey: f.skPath, Brokers: brokers,
		Spool: filepath.Join(f.dir, "spool"), Listen: "127.0.0.1:0", KafkaTimeout: time.Second}
}

func nullLog() *slog.Logger { return slog.New(slog.DiscardHandler) }

// fixturePerUser is the per_user rule of the campaigns newFixture makes.
var fixturePerUser = 1

// setPerUser sets the per_user rule of the campaigns newFixture makes from now on and
// returns the function that restores it.
func setPerUser(n int) func() {
	old := fixturePerUser
	fixturePerUser = n
	return func() { fixturePerUser = old }
}

// sign signs c as a verifier of the fixture's campaign would.
func (f *fixture) sign(c *ticket.Claim) { f.signer.Sign(c) }
