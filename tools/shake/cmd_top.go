package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"shake/internal/control"
	ifleet "shake/internal/fleet"
	"shake/internal/obs"
)

func init() {
	register(command{name: "top", summary: "a live terminal view of the fleet from the servers' admin listeners", run: runTop})
}

const topUsage = `
Usage: shake top --servers URL[,URL...] [--once] [--interval 1s] [--timeout 900ms]

Watches a running event from its servers' admin listeners (/healthz, /readyz, /metrics,
/admin/switches), in the manner of nats-top: one table per role (edges, verifiers,
settlers, query servers, reconcile watchers), refreshed every --interval, with per server:
its state (ready, NOT READY, PAUSED, UNREACHABLE), requests per second and p99 over the
last interval, results by class, an edge's tickets left, the switches in force, a
settler's Kafka lag and settlement lag (claim to ledger commit, p99), the last reconcile,
and under "attention" every server that is not ready and why, or could not be read.
The role is the one /healthz names, or inferred from the metric names.

--once reads every server twice, --interval apart (rates need two readings), prints one
frame and exits: for scripts and tests.

Exit codes: 0 every server was read; 1 a server could not be reached or read (the frame
says why); 2 bad usage. Without --once it runs until Ctrl-C or SIGTERM and exits 0.
`

func runTop(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("top", topUsage, stderr)
	servers := fs.String("servers", "", "admin listeners, comma-separated `URL` list (required)")
	once := fs.Bool("once", false, "print one frame and exit")
	interval := fs.Duration("interval", time.Second, "time between frames")
	timeout := fs.Duration("timeout", 900*time.Millisecond, "per-server request timeout")
	if ok, code := parseFlags(fs, args); !ok {
		return code
	}
	if err := requireFlag(fs, "servers"); err != nil {
		return usageError(stderr, "top: %v", err)
	}
	list, err := topServers(*servers)
	if err != nil {
		return usageError(stderr, "top: --servers: %v", err)
	}
	if *interval < 100*time.Millisecond || *timeout <= 0 || *timeout > *interval*10 {
		return usageError(stderr, "top: --interval must be at least 100ms and --timeout in (0, 10 x --interval]")
	}
	ctx, cancel := obs.SignalContext(context.Background())
	defer cancel()
	// One client for every reading: a few connections per server, kept alive.
	hc := &http.Client{Timeout: *timeout, Transport: &http.Transport{MaxIdleConnsPerHost: 2, MaxConnsPerHost: 4}}
	prev := ifleet.ReadAll(ctx, hc, list, *timeout)
	for {
		select {
		case <-ctx.Done():
			return 0
		case <-time.After(*interval):
		}
		now := ifleet.ReadAll(ctx, hc, list, *timeout)
		f := &ifleet.Frame{At: time.Now()}
		for i := range now {
			f.Rows = append(f.Rows, ifleet.Compare(now[i], prev[i]))
		}
		prev = now
		var frame bytes.Buffer
		if !*once {
			frame.WriteString("\x1b[H\x1b[2J") // home and clear: redraw in place
		}
		if err := ifleet.Render(&frame, f); err != nil {
			fmt.Fprintf(stderr, "shake top: %v\n", err)
			return 1
		}
		if _, err := stdout.Write(frame.Bytes()); err != nil {
			return 1
		}
		if *once {
			if f.Unreachable() > 0 {
				return 1
			}
			return 0
		}
	}
}

// topServers splits and checks the --servers list.
func topServers(s string) ([]string, error) {
	var list []string
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part == "" {
			continue
		}
		if scheme, _, ok := strings.Cut(part, "://"); ok && scheme != "http" && scheme != "https" {
			return nil, fmt.Errorf("%q is not an http(s) URL", part)
		}
		u, err := url.Parse(control.NormalizeServer(part))
		if err != nil || u.Hostname() == "" || (u.Scheme != "http" && u.Scheme != "https") {
			return nil, fmt.Errorf("%q is not an http(s) URL", part)
		}
		list = append(list, control.NormalizeServer(part))
	}
	switch {
	case len(list) == 0:
		return nil, fmt.Errorf("names no server")
	case len(list) > ifleet.MaxServers:
		return nil, fmt.Errorf("names %d servers, at most %d", len(list), ifleet.MaxServers)
	}
	return list, nil
}
