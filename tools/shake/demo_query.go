package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"shake/bench"
	"shake/internal/proc"
	"shake/ticket"
)

// demoWinnersShown is how many winners the demo asks "my red packets" for.
const demoWinnersShown = 3

// showPackets starts `shake query` on the settled ledger and prints, for a few winners,
// what GET /v1/packets answers them, checking it against what they were told they
// opened. The query server joins the demo's processes, so stopAll stops it.
func (d *demo) showPackets(ctx context.Context, skPath string, sessionKey []byte, ledgerURL string, res *bench.Result) {
	if len(res.Opened) == 0 || ctx.Err() != nil {
		return
	}
	self, err := os.Executable()
	if err != nil {
		d.fail("query: %v", err)
		return
	}
	addr, err := proc.FreeAddr()
	if err != nil {
		d.fail("query: %v", err)
		return
	}
	p, err := proc.Start("query", self, []string{"query", "--ledger", ledgerURL, "--session-key", skPath, "--listen", addr,
		"--log-format", "json"}, filepath.Join(d.cfg.out, "logs", "query.log"))
	if err != nil {
		d.fail("query: %v", err)
		return
	}
	d.procs = append(d.procs, p)
	if err := p.WaitReady(ctx, "http://"+addr+"/readyz", 30*time.Second); err != nil {
		d.fail("query did not become ready: %v", err)
		return
	}
	d.summary.Servers["query"] = addr
	sk, err := ticket.NewSessionKey(sessionKey)
	if err != nil {
		d.fail("query: %v", err)
		return
	}
	d.say("query server on %s; what GET /v1/packets answers %d winners:", addr, min(demoWinnersShown, len(res.Opened)))
	hc := &http.Client{Timeout: 5 * time.Second}
	for _, o := range res.Opened[:min(demoWinnersShown, len(res.Opened))] {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/v1/packets", nil)
		req.Header.Set("Authorization", "Bearer "+string(sk.Mint(nil, o.UID, time.Now().Add(time.Hour).Unix())))
		resp, err := hc.Do(req)
		if err != nil {
			d.fail("GET /v1/packets for uid %d: %v", o.UID, err)
			return
		}
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
		d.say("  uid %d: %d %s", o.UID, resp.StatusCode, body)
		var page struct {
			Packets []struct {
				Ticket string `json:"ticket"`
				Amount int64  `json:"amount"`
			} `json:"packets"`
		}
		found := false
		if resp.StatusCode == http.StatusOK && json.Unmarshal(body, &page) == nil {
			for _, pk := range page.Packets {
				if pk.Ticket == strconv.FormatUint(o.Ticket, 10) && pk.Amount == o.Amount {
					found = true
				}
			}
		}
		if !found {
			d.fail("GET /v1/packets for uid %d does not show ticket %d (%d), which it opened", o.UID, o.Ticket, o.Amount)
		}
	}
	if resp, err := hc.Get("http://" + addr + "/v1/campaigns/" + res.Campaign); err == nil {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
		d.say("  GET /v1/campaigns/%s: %d %s", res.Campaign, resp.StatusCode, body)
	}
}
