package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"shake/edge"
	"shake/ticket"
	"shake/ticketgen"
)

// farmEdge generates a one-shard, always-open campaign of count tickets (per_user 1) and
// serves it on a real edge with the given device rule; it returns the edge's URL.
func farmEdge(t *testing.T, count uint64, perDevice int) string {
	t.Helper()
	dir := t.TempDir()
	ck := ticket.NewKey()
	if _, err := ticketgen.Generate(context.Background(), ticketgen.Config{Campaign: "farm", CampaignKey: ck,
		Budget: int64(count) * 100, Count: count, Edges: 1, OutDir: dir, PerUser: 1, PerDevice: perDevice, Seed: 25}); err != nil {
		t.Fatal(err)
	}
	sessPath := filepath.Join(dir, "session.key")
	if err := ticket.WriteKeyFile(sessPath, testSessionKey); err != nil {
		t.Fatal(err)
	}
	e, err := edge.New(edge.Config{Tickets: filepath.Join(dir, "edge-000.tickets"), Key: filepath.Join(dir, "edge-000.key"),
		SessionKey: sessPath, State: filepath.Join(dir, "edge.state"), InitState: true, Listen: "127.0.0.1:0",
		PerUser: edge.PerUserFromShard, PerDevice: edge.PerDeviceFromShard})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return "http://" + e.Addr()
}

func runFarm(t *testing.T, url string) *Result {
	t.Helper()
	res, err := Run(context.Background(), Config{EdgeURLs: []string{url}, SessionKey: testSessionKey, Users: 300,
		Rate: 600, Duration: time.Second, MaxInFlight: 4096, Seed: 3,
		Farm: &Farm{Accounts: 500, Devices: 5, Every: 250 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	if res.Farm == nil || res.Farm.Shakes != 4*500 || res.Shake.ErrorCount() != 0 {
		t.Fatalf("farm %+v, shake errors %v", res.Farm, res.Shake.Errors)
	}
	return res
}

// A farm of 500 accounts on 5 devices, shaking with every account four times in the
// round: with the device rule (per_device 1) it wins at most one ticket per device, 5;
// without it, the per-user rule alone lets every account win once, 500, in proportion
// to its accounts.
func TestFarmAgainstDeviceRule(t *testing.T) {
	res := runFarm(t, farmEdge(t, 3000, 1))
	f := res.Farm
	t.Logf("per_device 1: %+v (all won %d)", *f, res.Shake.Results["won"])
	if f.Won > 5 || f.Won == 0 {
		t.Fatalf("with per_device 1 the farm won %d tickets, want 1..5", f.Won)
	}
	res = runFarm(t, farmEdge(t, 3000, 0))
	f = res.Farm
	t.Logf("no device rule: %+v (all won %d)", *f, res.Shake.Results["won"])
	if f.Won != 500 {
		t.Fatalf("without a device rule the farm won %d tickets, want one per account (500)", f.Won)
	}
	if want := 500 / float64(res.Shake.Results["won"]); f.TicketShare != want {
		t.Fatalf("ticket share %.3f, want %.3f", f.TicketShare, want)
	}
}

func TestFarmConfigErrors(t *testing.T) {
	for _, f := range []Farm{{Accounts: 0, Devices: 1}, {Accounts: 5, Devices: 6}, {Accounts: 5, Devices: 0},
		{Accounts: MaxFarmAccounts + 1, Devices: 1}, {Accounts: 5, Devices: 1, Every: time.Microsecond}} {
		f := f
		if _, err := Run(context.Background(), Config{EdgeURLs: []string{"http://127.0.0.1:1"}, SessionKey: testSessionKey,
			Rate: 1, Duration: time.Second, Farm: &f}); err == nil {
			t.Errorf("%+v: accepted", f)
		}
	}
}

// The farm's money: what its accounts opened, against every amount opened (fake servers
// that pay uid*10 for a win of every fifth uid).
func TestFarmMoneyShare(t *testing.T) {
	_, edgeURL, verifierURL := newFakeChain(t)
	res, err := Run(context.Background(), Config{EdgeURLs: []string{edgeURL}, VerifierURL: verifierURL, SessionKey: testSessionKey,
		Users: 50, Rate: 200, Duration: 500 * time.Millisecond, Think: 10 * time.Millisecond, Seed: 1,
		Farm: &Farm{Accounts: 10, Devices: 2, Every: 250 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	f := res.Farm
	// Farm uids 51..60: 55 and 60 win every wave, two waves.
	if f == nil || f.Shakes != 20 || f.Won != 4 || f.Opened != 4 || f.Amount != 2*(550+600) {
		t.Fatalf("farm %+v", f)
	}
	if want := float64(f.Amount) / float64(res.OpenedSum); f.MoneyShare != want || want <= 0 || want >= 1 {
		t.Fatalf("money share %.3f, want %.3f", f.MoneyShare, want)
	}
	var text bytes.Buffer
	WriteText(&text, res)
	if !strings.Contains(text.String(), "farm: 10 accounts on 2 devices, 20 shakes, won 4 tickets") {
		t.Fatalf("text report:\n%s", text.String())
	}
	var page bytes.Buffer
	WriteHTML(&page, res)
	if !strings.Contains(page.String(), "<h2>Farm</h2>") {
		t.Fatal("HTML report has no farm section")
	}
	j, _ := json.Marshal(res)
	if !bytes.Contains(j, []byte(`"farm":{"accounts":10,"devices":2,"shakes":20,"won":4,"opened":4,"amount":2300`)) {
		t.Fatalf("json: %s", j)
	}
}
