package edge

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"shake/ticket"
	"shake/ticketgen"
)

// Fixed keys for the fuzz targets, so that the session tokens in the seed corpus
// (testdata/fuzz/FuzzEdgeHandler) stay valid from run to run. They protect nothing.
var (
	fuzzCampaignKey = bytes.Repeat([]byte{0x5a}, ticket.KeySize)
	fuzzSessionKey  = bytes.Repeat([]byte{0xa5}, ticket.KeySize)
)

// fuzzSessionExpiry is far in the future (2100-01-01), so corpus sessions never expire.
const fuzzSessionExpiry = 4102444800

// edgeAnswers are the statuses docs/api.md names for POST /v1/shake (the handler alone:
// 400/408/431 for unparsable requests come from the shared server, not the handler).
var edgeAnswers = map[int]bool{200: true, 401: true, 404: true, 405: true, 413: true, 429: true}

// FuzzEdgeHandler drives the /v1/shake handler with arbitrary methods, paths, headers,
// bodies and session tokens: it must never panic, must answer one of docs/api.md's statuses
// with a JSON body, and a won token must open under the shard key for the session's user.
func FuzzEdgeHandler(f *testing.F) {
	dir := f.TempDir()
	const campaign = "fuzz-edge"
	man, err := ticketgen.Generate(context.Background(), ticketgen.Config{
		Campaign: campaign, CampaignKey: fuzzCampaignKey, Budget: 2000 * 50, Count: 2000, Edges: 1,
		Min: 1, Max: 100, OutDir: dir, Now: time.Now(), Seed: 1,
	})
	if err != nil {
		f.Fatal(err)
	}
	sessPath := filepath.Join(dir, "session.key")
	if err := ticket.WriteKeyFile(sessPath, fuzzSessionKey); err != nil {
		f.Fatal(err)
	}
	srv, err := New(Config{Tickets: filepath.Join(dir, "edge-000.tickets"), Key: filepath.Join(dir, "edge-000.key"),
		SessionKey: sessPath, State: filepath.Join(dir, "edge.state"), InitState: true, Listen: "127.0.0.1:0", PerUser: 0})
	if err != nil {
		f.Fatal(err)
	}
	stop, err := srv.Start()
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = stop() })
	sk, _ := ticket.NewSessionKey(fuzzSessionKey)
	shardKey, _ := ticket.ShardKey(fuzzCampaignKey, campaign, man.Generation, 0)
	opener, _ := ticket.NewOpener([][]byte{shardKey})
	h := srv.Handler()
	addr := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 4242}

	good := "Bearer " + string(sk.Mint(nil, 7, fuzzSessionExpiry))
	other := "Bearer " + string(sk.Mint(nil, 8, fuzzSessionExpiry))
	expired := "Bearer " + string(sk.Mint(nil, 7, 1))
	flipped := []byte(good)
	flipped[len(flipped)-5] ^= 0x01
	for _, s := range []struct{ method, path, auth, ctype, body string }{
		{"POST", "/v1/shake", good, "", ""},
		{"POST", "/v1/shake", other, "application/json", ""},
		{"POST", "/v1/shake", expired, "", ""},
		{"POST", "/v1/shake", string(flipped), "", ""},
		{"POST", "/v1/shake", "", "", ""},
		{"POST", "/v1/shake", "Basic Zm9vOmJhcg==", "", ""},
		{"POST", "/v1/shake", "Bearer ", "", ""},
		{"POST", "/v1/shake", good, "application/json", `{"x":1}`},
		{"GET", "/v1/shake", good, "", ""},
		{"PUT", "/v1/shake?x=1", good, "text/plain", "abc"},
		{"POST", "/v1/shake/", good, "", ""},
		{"POST", "/v1/open", good, "", ""},
		{"POST", "/%00", "", "", ""},
		{"DELETE", "/", "\xff\xfe", "", "\x00"},
	} {
		f.Add(s.method, s.path, s.auth, s.ctype, []byte(s.body))
	}
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
		if !edgeAnswers[status] {
			t.Fatalf("%s %q: status %d is not one docs/api.md names for /v1/shake (body %s)", method, path, status, ctx.Response.Body())
		}
		rb := ctx.Response.Body()
		if !json.Valid(rb) {
			t.Fatalf("%s %q: status %d with a body that is not JSON: %q", method, path, status, rb)
		}
		if ct := string(ctx.Response.Header.ContentType()); ct != "application/json" {
			t.Fatalf("status %d with Content-Type %q", status, ct)
		}
		if status != 200 {
			return
		}
		var ans struct {
			Result, Token string
		}
		if err := json.Unmarshal(rb, &ans); err != nil {
			t.Fatal(err)
		}
		switch ans.Result {
		case "miss", "closed":
		case "won":
			// A win needs a valid session: the token must be sealed for that user.
			st, ok := ticket.BearerToken([]byte(auth))
			uid, err := sk.Verify(st, time.Now().Unix())
			if !ok || err != nil {
				t.Fatalf("won without a valid session (auth %q): %s", auth, rb)
			}
			var tok ticket.TicketToken
			if err := opener.Open(&tok, []byte(ans.Token), make([]byte, 0, ticket.TokenRawLen)); err != nil || tok.UID != uid {
				t.Fatalf("won token does not open for uid %d: %v %+v", uid, err, tok)
			}
		default:
			t.Fatalf("unknown result in %s", rb)
		}
	})
}
