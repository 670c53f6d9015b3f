package verifier

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"shake/ticket"
	"shake/ticketgen"
)

// Fixed keys for the fuzz target, so that the session tokens in the seed corpus
// (testdata/fuzz/FuzzVerifierHandler) stay valid from run to run. They protect nothing.
var (
	fuzzCampaignKey = bytes.Repeat([]byte{0x3c}, ticket.KeySize)
	fuzzSessionKey  = bytes.Repeat([]byte{0xc3}, ticket.KeySize)
)

// fuzzSessionExpiry is far in the future (2100-01-01), so corpus sessions never expire.
const fuzzSessionExpiry = 4102444800

// verifierAnswers are the statuses docs/api.md names for POST /v1/open.
var verifierAnswers = map[int]bool{200: true, 400: true, 401: true, 403: true, 404: true, 405: true,
	409: true, 410: true, 413: true, 421: true, 422: true, 503: true}

// FuzzVerifierHandler drives the /v1/open handler with arbitrary methods, paths, headers,
// bodies and tokens (genuine, other users', expired, bit-flipped ones among the seeds):
// it must never panic, must answer one of docs/api.md's statuses with a JSON body, and a 200
// must name exactly the ticket and amount sealed in a genuine token of the session's user.
func FuzzVerifierHandler(f *testing.F) {
	dir := f.TempDir()
	const campaign = "fuzz-verifier"
	if _, err := ticketgen.Generate(context.Background(), ticketgen.Config{
		Campaign: campaign, CampaignKey: fuzzCampaignKey, Budget: 1000 * 50, Count: 1000, Edges: 2,
		Min: 1, Max: 100, OutDir: dir, Now: time.Now(), Seed: 1,
	}); err != nil {
		f.Fatal(err)
	}
	ckPath, skPath := filepath.Join(dir, "campaign.key"), filepath.Join(dir, "session.key")
	if err := ticket.WriteKeyFile(ckPath, fuzzCampaignKey); err != nil {
		f.Fatal(err)
	}
	if err := ticket.WriteKeyFile(skPath, fuzzSessionKey); err != nil {
		f.Fatal(err)
	}
	// No Kafka: the first write fails fast and every claim goes to the spool, which is
	// what docs/api.md asks while Kafka is unreachable.
	srv, err := New(Config{Manifest: filepath.Join(dir, "manifest.json"), Key: ckPath, SessionKey: skPath,
		Brokers: []string{"127.0.0.1:1"}, Spool: filepath.Join(dir, "spool"), Listen: "127.0.0.1:0",
		KafkaTimeout: 100 * time.Millisecond, DownFor: time.Hour})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = srv.Close() })
	skipRebuild(srv)
	h := srv.Handler()
	addr := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 4243}

	sk, _ := ticket.NewSessionKey(fuzzSessionKey)
	shard, err := ticket.LoadShard(filepath.Join(dir, "edge-000.tickets"))
	if err != nil {
		f.Fatal(err)
	}
	shardKey, _ := ticket.ShardKey(fuzzCampaignKey, campaign, shard.Header.Generation, 0)
	sealer, _ := ticket.NewSealer(shardKey, 0)
	seal := func(id, uid uint64, exp int64) string {
		rec := shard.Records[id-shard.Header.FirstTicket]
		return string(sealer.Seal(nil, &ticket.TicketToken{Ticket: id, UID: uid, Amount: rec.Amount, MAC: rec.MAC,
			IssuedAt: uint32(time.Now().Unix()), ExpiresAt: uint32(exp)}))
	}
	first := shard.Header.FirstTicket
	good := "Bearer " + string(sk.Mint(nil, 7, fuzzSessionExpiry))
	other := "Bearer " + string(sk.Mint(nil, 8, fuzzSessionExpiry))
	// Genuine tokens expire when an edge would make them: within the ttl.
	live := time.Now().Add(time.Hour).Unix()
	tok := seal(first, 7, live)
	flipped := []byte(tok)
	flipped[40] ^= 0x02
	body := func(t string) string { return `{"token":"` + t + `"}` }
	for _, s := range []struct{ method, path, auth, ctype, body string }{
		{"POST", "/v1/open", good, "application/json", body(tok)},
		{"POST", "/v1/open", other, "application/json", body(tok)},
		{"POST", "/v1/open", good, "application/json", body(seal(first+1, 7, 1000))},
		{"POST", "/v1/open", good, "application/json", body(seal(first+2, 8, live))},
		{"POST", "/v1/open", good, "application/json", body(string(flipped))},
		{"POST", "/v1/open", good, "application/json", body(seal(first+4, 7, fuzzSessionExpiry))},
		{"POST", "/v1/open", good, "text/plain", body(seal(first+3, 7, live))},
		{"POST", "/v1/open", good, "", `{"token":` + strconv.Quote(tok) + `,"x":[1,{"y":null}]}`},
		{"POST", "/v1/open", good, "application/json", `{"token":"` + tok[:50] + `"}`},
		{"POST", "/v1/open", good, "application/json", `{"token":12}`},
		{"POST", "/v1/open", good, "application/json", `[`},
		{"POST", "/v1/open", "", "application/json", body(tok)},
		{"POST", "/v1/open", "Bearer x.y.z", "application/json", body(tok)},
		{"GET", "/v1/open", good, "", ""},
		{"POST", "/v1/shake", good, "", ""},
		{"POST", "/v1/open", good, "application/json", string(bytes.Repeat([]byte{' '}, MaxBodySize+1))},
	} {
		f.Add(s.method, s.path, s.auth, s.ctype, []byte(s.body))
	}
	scratch := make([]byte, 0, ticket.TokenRawLen)
	f.Fuzz(func(t *testing.T, method, path, auth, ctype string, body []byte) {
		var req fasthttp.Request
		req.Header.SetMethod(method)
		req.SetRequestURI(path)
		if auth != "" {
			req.Header.Set(fasthttp.HeaderAuthorization, auth)
		}
		if ctype != "" {
			req.Header.SetContentType(ctype)
		}
		req.SetBody(body)
		var ctx fasthttp.RequestCtx
		ctx.Init(&req, addr, nil)
		h(&ctx)
		status := ctx.Response.StatusCode()
		rb := ctx.Response.Body()
		if !verifierAnswers[status] {
			t.Fatalf("%s %q: status %d is not one docs/api.md names for /v1/open (body %s)", method, path, status, rb)
		}
		if !json.Valid(rb) {
			t.Fatalf("%s %q: status %d with a body that is not JSON: %q", method, path, status, rb)
		}
		if status != 200 {
			return
		}
		// A 200 needs a valid session and a genuine token sealed for that user, and
		// names exactly the sealed ticket and amount.
		st, ok := ticket.BearerToken([]byte(auth))
		uid, err := sk.Verify(st, time.Now().Unix())
		if !ok || err != nil {
			t.Fatalf("opened without a valid session (auth %q): %s", auth, rb)
		}
		var ans struct {
			Result, Ticket string
			Amount         int64
		}
		if err := json.Unmarshal(rb, &ans); err != nil || ans.Result != "opened" {
			t.Fatalf("200 that is not an opened answer: %s", rb)
		}
		id, ok := ticket.ParseUintString(ans.Ticket)
		if !ok || id < first || id >= first+uint64(len(shard.Records)) || ans.Amount != int64(shard.Records[id-first].Amount) {
			t.Fatalf("200 %s names a ticket or amount the campaign does not hold", rb)
		}
		// The body's token (as encoding/json reads it) must be that ticket, sealed for
		// this user. (Only genuine tokens from the seeds can get here.)
		var in struct{ Token string }
		if json.Unmarshal(body, &in) == nil {
			var tt ticket.TicketToken
			if srv.opener.Open(&tt, []byte(in.Token), scratch) == nil && (tt.UID != uid || tt.Ticket != id) {
				t.Fatalf("opened ticket %d for uid %d, but the token holds ticket %d of uid %d", id, uid, tt.Ticket, tt.UID)
			}
		}
	})
}
