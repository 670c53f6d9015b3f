// Package baseline is the bare fasthttp server the edge's throughput is measured
// against: one handler that writes a constant JSON body, nothing else. Whatever the
// edge does per shake (session HMAC, round and per-user checks, AEAD seal, JSON) shows
// up as the gap between the two on the same client and machine.
package baseline

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/valyala/fasthttp"
)

// Body is the constant answer: about the size of an edge "won" answer, so both servers
// move comparable bytes.
var Body = []byte(`{"result":"won","token":"AQAAbaselinebaselinebaselinebaselinebaselinebaselinebaselinebaselinebaselinebaselinebaselinebaseli","campaign":"baseline","expires_at":"2026-01-01T00:00:00Z"}`)

var contentJSON = []byte("application/json")

// Handler answers every request with 200 and Body. It allocates nothing.
func Handler(ctx *fasthttp.RequestCtx) {
	ctx.SetStatusCode(fasthttp.StatusOK)
	ctx.Response.Header.SetContentTypeBytes(contentJSON)
	ctx.Response.SetBody(Body)
}

// NewServer returns a fasthttp server for Handler with the same limits the shake
// servers use (small bodies, 5 s read/write timeouts).
func NewServer() *fasthttp.Server {
	return &fasthttp.Server{
		Handler: Handler, Name: "shake-baseline",
		ReadTimeout: 5 * time.Second, WriteTimeout: 5 * time.Second, IdleTimeout: 60 * time.Second,
		MaxRequestBodySize: 1 << 10, NoDefaultContentType: true,
	}
}

// ServeListener serves Handler on ln until ctx is cancelled, then shuts down.
func ServeListener(ctx context.Context, ln net.Listener) error {
	srv := NewServer()
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("baseline: serve %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := srv.ShutdownWithContext(sctx)
	ln.Close()
	<-errc
	if err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("baseline: shutdown: %w", err)
	}
	return nil
}

// Serve listens on addr and serves Handler until ctx is cancelled.
func Serve(ctx context.Context, addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("baseline: %w", err)
	}
	return ServeListener(ctx, ln)
}
