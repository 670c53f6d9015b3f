package main

import (
	"flag"
	"fmt"
	"time"

	"shake/internal/control"
	"shake/internal/obs"
	"shake/ticket"
)

// serverFlags are the flags every server (edge, verifier, settler) takes the same way:
// its admin listener, the admin key, the switches file, the drain and the connection
// limits.
type serverFlags struct {
	adminListen   *string
	adminKey      *string
	switches      *string
	switchesReset *bool
	drain         *time.Duration
	maxConns      *int
	maxConnsPerIP *int
}

// serverFlagsUsage is the help text the servers share (appended to their usage).
const serverFlagsUsage = `
Admin listener: --admin-listen (default 127.0.0.1 and the port of --listen plus 1000;
the settler's --listen is its admin listener) serves /metrics, /debug/pprof/, /healthz,
/readyz and /admin/switches; the public listener serves only /v1/..., /healthz and
/readyz. PUT /admin/switches needs Authorization: Bearer <shake admin token> and so a
server started with --admin-key; without one the switches can be read, not changed.
/debug/pprof/ also needs the token when --admin-key is set. --switches FILE keeps the
document across restarts (written with fsync before a PUT answers 200, reread on SIGHUP).
A switches version is at most 2^53-1 and a PUT may raise it by at most 2^20; should a
server still hold a document no change can follow, restart it with --switches-reset
(the file is replaced by the defaults, version 0; ctl then brings it up to the fleet).

Connections are capped below the descriptor limit (--max-conns, default: from ulimit -n,
keeping a quarter back for files and Kafka) and per client IP (--max-conns-per-ip);
beyond either a connection gets 503 and is closed. Running out of descriptors on
accept is retried with a backoff, never fatal.
`

// addServerFlags defines the shared flags on fs; public says whether the server has a
// public listener beside its admin one (edge, verifier) or not (settler).
func addServerFlags(fs *flag.FlagSet, public bool) *serverFlags {
	f := &serverFlags{
		adminKey: fs.String("admin-key", "", "the role's admin key `file` (admin-ROLE.key): PUT /admin/switches and /debug/pprof/ need its token"),
		switches: fs.String("switches", "", "switches `file`: loaded at start, written before a change answers, reread on SIGHUP"),
		switchesReset: fs.Bool("switches-reset", false, "start from the default switches (version 0) and overwrite --switches with them: "+
			"the way out of a hostile document; every switch the file held is dropped"),
	}
	if public {
		f.adminListen = fs.String("admin-listen", "", "admin listener `address` (default 127.0.0.1:<port of --listen + 1000>)")
		f.drain = fs.Duration("drain", 2*time.Second, "on SIGTERM, how long /readyz answers 503 while requests are still served")
		f.maxConns = fs.Int("max-conns", 0, "most open connections on the public listener (0 = from the descriptor limit)")
		f.maxConnsPerIP = fs.Int("max-conns-per-ip", obs.DefaultMaxConnsPerIP, "most open connections per client IP (0 = no limit; a load balancer is one IP)")
	} else {
		f.maxConns = fs.Int("max-conns", 0, "most open connections on the listener (0 = from the descriptor limit)")
	}
	return f
}

// build checks the flags and returns the HTTP settings and the switches options.
// listen is the server's --listen, the base of the default admin address; role is the
// server's role, whose admin key --admin-key must be.
func (f *serverFlags) build(listen, role string) (obs.Common, control.Options, error) {
	var c obs.Common
	var o control.Options
	if f.adminListen != nil {
		c.AdminListen = *f.adminListen
		if c.AdminListen == "" {
			a, err := obs.DefaultAdminListen(listen)
			if err != nil {
				return c, o, fmt.Errorf("--admin-listen: %w", err)
			}
			c.AdminListen = a
		}
		if *f.drain < 0 {
			return c, o, fmt.Errorf("--drain must be >= 0")
		}
		c.Drain = *f.drain
		if *f.maxConnsPerIP < 0 {
			return c, o, fmt.Errorf("--max-conns-per-ip must be >= 0")
		}
		c.MaxConnsPerIP = *f.maxConnsPerIP
	}
	if *f.maxConns < 0 {
		return c, o, fmt.Errorf("--max-conns must be >= 0")
	}
	c.MaxConns = *f.maxConns
	o.File, o.Reset = *f.switches, *f.switchesReset
	if *f.adminKey != "" {
		k, err := readRoleAdminKey(*f.adminKey, role)
		if err != nil {
			return c, o, err
		}
		o.AdminKey = k
	}
	return c, o, nil
}

// optionalRoleKey is readRoleAdminKey for a server that may run without --admin-key
// (path ""): it then serves no profile.
func optionalRoleKey(path, role string) ([]byte, error) {
	if path == "" {
		return nil, nil
	}
	return readRoleAdminKey(path, role)
}

// readRoleAdminKey reads --admin-key for a server of role: it must be that role's key
// (admin-ROLE.key), never the operator's admin.key nor another role's key, so that a key
// taken from this server changes the switches of its role only.
func readRoleAdminKey(path, role string) ([]byte, error) {
	k, err := ticket.ReadKeyFile(path)
	if err != nil {
		return nil, fmt.Errorf("--admin-key: %w", err)
	}
	want := ticket.AdminRoleKeyFile(role)
	switch have := ticket.AdminKeyRole(k); have {
	case role:
		return k, nil
	case "":
		return nil, fmt.Errorf("--admin-key: %s is not a %s admin key (the operator's admin.key is for 'shake ctl' only): give the %s %s, which 'shake keys init' writes beside admin.key", path, role, role, want)
	default:
		return nil, fmt.Errorf("--admin-key: %s is the %s's admin key: give the %s %s", path, have, role, want)
	}
}
