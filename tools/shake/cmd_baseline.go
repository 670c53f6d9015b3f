package main

import (
	"context"
	"io"

	"shake/bench/baseline"
	"shake/internal/obs"
)

func init() {
	register(command{name: "baseline", summary: "serve the bare fasthttp constant handler that ratios are taken against", run: runBaseline})
}

const baselineUsage = `
Usage: shake baseline [--listen 127.0.0.1:8090]

Serves bench/baseline's bare fasthttp handler, which answers every request with a
constant body the size of an edge's "won" answer, in a process of its own: the ceiling
that shake bench compares the edge with. shake bench --baseline bare starts one itself;
run it by hand to drive it with any other client. Stops on SIGTERM or SIGINT.
`

func runBaseline(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("baseline", baselineUsage, stderr)
	listen := fs.String("listen", "127.0.0.1:8090", "listen `address` host:port")
	if ok, code := parseFlags(fs, args); !ok {
		return code
	}
	srv, err := obs.Listen(obs.ServerConfig{Name: "baseline", Listen: *listen}, baseline.Handler)
	if err != nil {
		return usageError(stderr, "baseline: --listen: %v", err)
	}
	ctx, cancel := obs.SignalContext(context.Background())
	defer cancel()
	if err := srv.Serve(ctx); err != nil {
		return usageError(stderr, "baseline: %v", err)
	}
	return 0
}
