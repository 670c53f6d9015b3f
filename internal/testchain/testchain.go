// Package testchain starts the real client-facing servers in process for tests that
// drive them over HTTP (the API contract test, the Go client's tests): edges, a
// verifier on an embedded broker, and a query server over an SQLite ledger.
package testchain

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"shake/broker"
	"shake/edge"
	"shake/internal/obs"
	"shake/query"
	"shake/settler/ledger"
	"shake/ticket"
	"shake/ticketgen"
	"shake/verifier"
)

// Chain is a small event: one campaign, its session key and the servers' base URLs.
type Chain struct {
	Root        string
	SessionPath string
	SessionKey  []byte
	Sess        *ticket.SessionKey
	Manifest    *ticket.Manifest
	CampaignKey []byte
	Dir         string // the campaign's directory (manifest.json, campaign.key, shard)
	Edge        string
	Verifier    string
	Broker      string
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// Run starts r in the background and stops it (cancel, wait) when the test ends.
func Run(t testing.TB, r func(context.Context) error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
}

// User mints a session token for uid valid for an hour.
func (c *Chain) User(uid uint64) string {
	return string(c.Sess.Mint(nil, uid, time.Now().Add(time.Hour).Unix()))
}

// Campaign generates a one-shard campaign of count tickets (per_user 1) into dir.
func Campaign(t testing.TB, dir, id string, count uint64, rounds []ticket.RoundWindow) (*ticket.Manifest, []byte) {
	t.Helper()
	ck := ticket.NewKey()
	must(t, os.MkdirAll(dir, 0o755))
	must(t, ticket.WriteKeyFile(filepath.Join(dir, "campaign.key"), ck))
	m, err := ticketgen.Generate(context.Background(), ticketgen.Config{Campaign: id, CampaignKey: ck, Budget: int64(count) * 100,
		Count: count, Edges: 1, Min: 1, Max: 1000, OutDir: dir, PerUser: 1, Rounds: rounds, Seed: 7})
	must(t, err)
	return m, ck
}

// StartEdge serves the shard of the campaign in dir (maxInFlight 0: the default).
func StartEdge(t testing.TB, dir, sessionPath string, maxInFlight int) string {
	t.Helper()
	e, err := edge.New(edge.Config{Tickets: filepath.Join(dir, "edge-000.tickets"), Key: filepath.Join(dir, "edge-000.key"),
		SessionKey: sessionPath, State: filepath.Join(dir, "edge-000.state"), InitState: true, Listen: "127.0.0.1:0",
		PerUser: 1, MaxInFlight: maxInFlight})
	must(t, err)
	Run(t, e.Run)
	return "http://" + e.Addr()
}

// StartVerifier serves the campaign in dir with the given brokers and spool bound
// (0: the default).
func StartVerifier(t testing.TB, dir, sessionPath string, brokers []string, spool string, spoolMax int64, reg *obs.Registry) string {
	t.Helper()
	return StartVerifierWith(t, dir, sessionPath, brokers, spool, func(cfg *verifier.Config) {
		cfg.SpoolMaxBytes = spoolMax
		if spoolMax > 0 {
			cfg.KafkaTimeout = 200 * time.Millisecond
		}
		if reg != nil {
			cfg.Registry = reg
		}
	})
}

// StartVerifierWith serves the campaign in dir with the given brokers and spool, and
// whatever else mut sets (a uid shard, a switches file).
func StartVerifierWith(t testing.TB, dir, sessionPath string, brokers []string, spool string, mut func(*verifier.Config)) string {
	t.Helper()
	cfg := verifier.Config{Manifest: filepath.Join(dir, "manifest.json"), Key: filepath.Join(dir, "campaign.key"),
		SessionKey: sessionPath, Brokers: brokers, Spool: spool, Listen: "127.0.0.1:0", KafkaTimeout: 2 * time.Second}
	if mut != nil {
		mut(&cfg)
	}
	v, err := verifier.New(cfg)
	must(t, err)
	Run(t, v.Run)
	return "http://" + v.Addr()
}

// WaitReady waits until GET base/readyz answers 200 (a verifier has rebuilt what it
// knows from the topic; until then it answers every open 503), or fails t after 30 s.
func WaitReady(t testing.TB, base string) {
	t.Helper()
	hc := &http.Client{Timeout: 2 * time.Second}
	var last string
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		resp, err := hc.Get(base + "/readyz")
		if err != nil {
			last = err.Error()
			continue
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			return
		}
		last = fmt.Sprintf("%d %s", resp.StatusCode, b)
	}
	t.Fatalf("%s/readyz not ready after 30s: %s", base, last)
}

// Start generates a campaign of count always-open tickets and starts its edge
// (shedding above maxInFlight requests at once, 0 = the default), a broker and a
// verifier.
func Start(t testing.TB, count uint64, maxInFlight int) *Chain {
	t.Helper()
	c := &Chain{Root: t.TempDir()}
	c.SessionPath = filepath.Join(c.Root, "session.key")
	c.SessionKey = ticket.NewKey()
	must(t, ticket.WriteKeyFile(c.SessionPath, c.SessionKey))
	var err error
	c.Sess, err = ticket.NewSessionKey(c.SessionKey)
	must(t, err)
	c.Dir = filepath.Join(c.Root, "campaign")
	c.Manifest, c.CampaignKey = Campaign(t, c.Dir, "open", count, nil)
	c.Edge = StartEdge(t, c.Dir, c.SessionPath, maxInFlight)
	b, err := broker.Start(broker.Config{Listen: "127.0.0.1:0", Partitions: 2})
	must(t, err)
	t.Cleanup(b.Close)
	c.Broker = b.Addr()
	c.Verifier = StartVerifier(t, c.Dir, c.SessionPath, []string{b.Addr()}, filepath.Join(c.Root, "spool"), 0, nil)
	WaitReady(t, c.Verifier)
	return c
}

// DeadVerifier starts a verifier of the chain's campaign that can make nothing durable
// (no Kafka, a spool that holds nothing): every genuine open is 503.
func (c *Chain) DeadVerifier(t testing.TB, reg *obs.Registry) string {
	return StartVerifier(t, c.Dir, c.SessionPath, []string{"127.0.0.1:1"}, filepath.Join(c.Root, "spool-dead"), 1, reg)
}

// Ledger creates an SQLite ledger with the campaign funded and registered and ps
// posted, and starts a query server on it; it returns the query server's base URL.
func (c *Chain) Ledger(t testing.TB, ps []ledger.Posting) string {
	t.Helper()
	ctx := context.Background()
	url := "sqlite://" + filepath.Join(c.Root, "ledger.db")
	l, err := ledger.Open(ctx, url)
	must(t, err)
	m := c.Manifest
	digest, err := m.Digest()
	must(t, err)
	// Registered for at least as many tickets as ps holds: the query server refuses a
	// campaign page whose figures do not cover the postings, and callers post more
	// than the chain's few tickets to get several pages.
	must(t, l.Register(ctx, ledger.CampaignInfo{Campaign: m.Campaign, Generation: m.Generation, ManifestDigest: digest,
		Currency: m.Currency, Budget: m.Budget, Tickets: max(m.Count, uint64(len(ps)))}))
	must(t, l.Fund(ctx, m.Campaign, m.Currency, m.Budget))
	if len(ps) > 0 {
		_, err = l.Post(ctx, ps)
		must(t, err)
	}
	must(t, l.Close())
	rd, err := query.OpenReader(ctx, url, 2)
	must(t, err)
	return c.Query(t, rd)
}

// Query starts a query server over rd and returns its base URL.
func (c *Chain) Query(t testing.TB, rd query.Reader) string {
	t.Helper()
	qs, err := query.New(query.Config{Reader: rd, SessionKey: c.SessionKey, Listen: "127.0.0.1:0"})
	must(t, err)
	Run(t, qs.Run)
	return "http://" + qs.Addr()
}
