package baseline

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

func TestServeAnswersBodyAndStops(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ServeListener(ctx, ln) }()
	code, body, err := fasthttp.GetTimeout(nil, "http://"+ln.Addr().String()+"/anything", 5*time.Second)
	if err != nil || code != 200 || string(body) != string(Body) {
		t.Fatalf("%d %q %v", code, body, err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := Serve(context.Background(), "256.0.0.1:x"); err == nil {
		t.Fatal("bad address accepted")
	}
}

func TestHandlerAllocatesNothing(t *testing.T) {
	var ctx fasthttp.RequestCtx
	Handler(&ctx)
	if a := testing.AllocsPerRun(1000, func() { ctx.Response.Reset(); Handler(&ctx) }); a != 0 {
		t.Fatalf("%.1f allocs", a)
	}
}
