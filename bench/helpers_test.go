package bench

import (
	"net"
	"testing"

	"github.com/valyala/fasthttp"

	"shake/ticket"
)

// startFake serves h on a loopback port for the duration of the test and returns its
// base URL.
func startFake(t testing.TB, h fasthttp.RequestHandler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &fasthttp.Server{Handler: h}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Shutdown() })
	return "http://" + ln.Addr().String()
}

var testSessionKey = func() []byte {
	k := make([]byte, ticket.KeySize)
	for i := range k {
		k[i] = byte(i * 7)
	}
	return k
}()

// sessionUID verifies the request's bearer session like an edge would.
func sessionUID(sk *ticket.SessionKey, ctx *fasthttp.RequestCtx) (uint64, bool) {
	tok, ok := ticket.BearerToken(ctx.Request.Header.Peek("Authorization"))
	if !ok {
		return 0, false
	}
	uid, err := sk.Verify(tok, 0)
	return uid, err == nil
}
