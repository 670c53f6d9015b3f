package bench

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// TestBenchQueriesOpeners: with QueryURL, every user who opened asks /v1/packets once,
// with their own session, after the think time; the "packets" endpoint counts them.
func TestBenchQueriesOpeners(t *testing.T) {
	f, edge, verifier := newFakeChain(t)
	var mu sync.Mutex
	asked := map[uint64]int{}
	var bad int
	query := startFake(t, func(ctx *fasthttp.RequestCtx) {
		uid, ok := sessionUID(f.sk, ctx)
		if !ok || !ctx.IsGet() || string(ctx.Path()) != "/v1/packets" {
			mu.Lock()
			bad++
			mu.Unlock()
			ctx.SetStatusCode(401)
			ctx.SetBodyString(`{"error":"unauthorized"}`)
			return
		}
		mu.Lock()
		asked[uid]++
		mu.Unlock()
		ctx.SetContentType("application/json")
		ctx.SetBodyString(`{"uid":"1","packets":[],"next":null}`)
	})
	res, err := Run(context.Background(), Config{
		EdgeURLs: []string{edge}, VerifierURL: verifier, QueryURL: query, SessionKey: testSessionKey,
		Users: 50, Rate: 400, Duration: 500 * time.Millisecond, Think: 10 * time.Millisecond, Seed: 1, MaxOpened: 1000,
	})
	if err != nil {
		t.Fatal(err)
	}
	p := res.Packets
	if p == nil || res.OpenedN == 0 {
		t.Fatalf("packets %v, opened %d", p, res.OpenedN)
	}
	if p.Results["page"] != res.OpenedN || p.Requests != res.OpenedN || len(p.Errors) != 0 || bad != 0 {
		t.Fatalf("packets: %d pages of %d requests (errors %v, bad %d) for %d opens", p.Results["page"], p.Requests, p.Errors, bad, res.OpenedN)
	}
	per := map[uint64]int{}
	for _, o := range res.Opened {
		per[o.UID]++
	}
	for uid, n := range per {
		if asked[uid] != n {
			t.Errorf("user %d opened %d tickets and asked %d times", uid, n, asked[uid])
		}
	}
	if eps := res.Endpoints(); len(eps) != 3 || eps[2].Name != "packets" {
		t.Errorf("endpoints %v", eps)
	}
}
