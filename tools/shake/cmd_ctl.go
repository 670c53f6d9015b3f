package main

import (
	"fmt"
	"io"
	"strings"
	"time"

	"shake/internal/control"
	"shake/ticket"
)

func init() {
	register(command{name: "ctl", summary: "show or change the switches of running servers (show, set, pause, resume)", run: runCtl})
}

const ctlUsage = `
Usage: shake ctl --admin-key admin.key --servers URL[,URL...] show
       shake ctl --admin-key admin.key --servers URL[,URL...] set KEY=VALUE...
       shake ctl --admin-key admin.key --servers URL[,URL...] pause | resume

Reads or changes the switches document of every server named by --servers: their admin
listeners (edge and verifier --admin-listen, the settler's --listen), as host:port or
http://host:port. Every change is fanned out with one version, one above every server's
current one, and each server answers only once the change is in force (and written to
its --switches file). One line per server; exit 1 unless every server confirmed.

  show               prints each server's document
  set KEY=VALUE...   changes switches in each server's own document, for example
                     edge.shed_ratio=0.5 edge.closed_rounds=0,2 verifier.revoked_shards=3
                     edge.per_user=null verifier.message="back soon" settler.paused=true
  pause              closes the whole event: edge.paused=true (every shake answers closed)
  resume             reopens it: edge.paused=false

Keys: ` + "edge.paused, edge.closed_rounds, edge.pace_factor, edge.shed_ratio, edge.retry_after_ms, edge.per_user, verifier.open_paused, verifier.revoked_shards, verifier.message, settler.paused" + `.
`

func runCtl(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("ctl", ctlUsage, stderr)
	keyPath := fs.String("admin-key", "", "admin.key `file` (required to change; show works without)")
	servers := fs.String("servers", "", "admin listeners, comma-separated `URL` list (required)")
	timeout := fs.Duration("timeout", 15*time.Second, "per-server request timeout")
	if ok, code := parseFlagsArgs(fs, args, 1, -1); !ok {
		return code
	}
	if err := requireFlag(fs, "servers"); err != nil {
		return usageError(stderr, "ctl: %v", err)
	}
	var list []string
	for _, s := range strings.Split(*servers, ",") {
		if s = strings.TrimSpace(s); s != "" {
			list = append(list, control.NormalizeServer(s))
		}
	}
	if len(list) == 0 {
		return usageError(stderr, "ctl: --servers names no server")
	}
	if *timeout <= 0 {
		return usageError(stderr, "ctl: --timeout must be > 0")
	}
	c := &control.Client{Timeout: *timeout}
	if *keyPath != "" {
		k, err := ticket.ReadKeyFile(*keyPath)
		if err != nil {
			return usageError(stderr, "ctl: --admin-key: %v", err)
		}
		c.Token = ticket.AdminToken(k)
	}
	rest := fs.Args()
	verb := rest[0]
	var sets [][2]string
	switch verb {
	case "show":
		if len(rest) > 1 {
			return usageError(stderr, "ctl: show takes no arguments, got %q", rest[1])
		}
		return ctlReport(stdout, c.Show(list), false)
	case "pause", "resume":
		if len(rest) > 1 {
			return usageError(stderr, "ctl: %s takes no arguments, got %q", verb, rest[1])
		}
		sets = [][2]string{{"edge.paused", fmt.Sprint(verb == "pause")}}
	case "set":
		if len(rest) == 1 {
			return usageError(stderr, "ctl: set needs at least one KEY=VALUE")
		}
		for _, kv := range rest[1:] {
			k, v, ok := strings.Cut(kv, "=")
			if !ok {
				return usageError(stderr, "ctl: set: %q is not KEY=VALUE", kv)
			}
			sets = append(sets, [2]string{k, v})
		}
	default:
		return usageError(stderr, "ctl: unknown action %q (want show, set, pause or resume)", verb)
	}
	if c.Token == "" {
		return usageError(stderr, "ctl: %s: --admin-key is required to change switches", verb)
	}
	// Check every KEY=VALUE on the defaults first: a typo is a usage error before any
	// server is touched.
	probe := ticket.DefaultSwitches()
	for _, kv := range sets {
		if err := probe.Set(kv[0], kv[1]); err != nil {
			return usageError(stderr, "ctl: %s: %v", verb, err)
		}
	}
	change := func(d *ticket.Switches) error {
		for _, kv := range sets {
			if err := d.Set(kv[0], kv[1]); err != nil {
				return err
			}
		}
		return nil
	}
	return ctlReport(stdout, c.Change(list, change), true)
}

// ctlReport prints one line per server and returns 0 only when every server answered.
func ctlReport(stdout io.Writer, res []control.Result, changed bool) int {
	code := 0
	for _, r := range res {
		switch {
		case r.Err != nil:
			code = 1
			fmt.Fprintf(stdout, "%s FAILED %v\n", r.Server, r.Err)
		case changed:
			fmt.Fprintf(stdout, "%s ok version %d %s\n", r.Server, r.Doc.Version, r.Doc.JSON())
		default:
			fmt.Fprintf(stdout, "%s version %d %s\n", r.Server, r.Doc.Version, r.Doc.JSON())
		}
	}
	return code
}
