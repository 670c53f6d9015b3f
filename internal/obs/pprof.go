package obs

import (
	"net/http/pprof"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttpadaptor"
)

// The net/http/pprof handlers, adapted once. fasthttp's own pprofhandler answers 404 to
// the index at /debug/pprof/ (its trailing slash), so the routes are made here.
var (
	pprofIndex   = fasthttpadaptor.NewFastHTTPHandlerFunc(pprof.Index)
	pprofCmdline = fasthttpadaptor.NewFastHTTPHandlerFunc(pprof.Cmdline)
	pprofProfile = fasthttpadaptor.NewFastHTTPHandlerFunc(pprof.Profile)
	pprofSymbol  = fasthttpadaptor.NewFastHTTPHandlerFunc(pprof.Symbol)
	pprofTrace   = fasthttpadaptor.NewFastHTTPHandlerFunc(pprof.Trace)
)

// servePprof serves /debug/pprof/ (the index and every named profile, as net/http/pprof).
func servePprof(ctx *fasthttp.RequestCtx) {
	switch string(ctx.Path()) {
	case "/debug/pprof/cmdline":
		pprofCmdline(ctx)
	case "/debug/pprof/profile":
		pprofProfile(ctx)
	case "/debug/pprof/symbol":
		pprofSymbol(ctx)
	case "/debug/pprof/trace":
		pprofTrace(ctx)
	default:
		pprofIndex(ctx)
	}
}
