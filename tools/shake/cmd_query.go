package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"shake/internal/control"
	"shake/internal/obs"
	"shake/query"
	"shake/settler/ledger"
	"shake/ticket"
)

func init() {
	register(command{name: "query", summary: "answer users from the ledger: my red packets, campaign pages (read-only)", run: runQuery})
}

const queryUsage = `
Usage: shake query --ledger URL --session-key session.key [--listen 127.0.0.1:8083]
                   [--db-conns 8] [--max-in-flight 1024] [--db-timeout 2s]
                   [--log-format text|json]

A read-only server over the ledger the settler writes: --ledger postgres://... (a read
replica and a read-only role will do; every transaction it opens is read-only) or
sqlite:///path/ledger.db (the settler's file; it is never created or written). It never
migrates: the ledger must already carry this version's schema (start the settler once).

  GET /v1/packets[?campaign=ID][&before=CURSOR]   Authorization: Bearer <session token>
      200 {"uid":"...","packets":[{"campaign","ticket","amount","currency","settled_at"}],
           "next":"CURSOR"|null}
      The user's settled packets, newest first, at most 50 a page; pass next as before=
      for the following page. Cursors are opaque, bound to the user and the filter, and
      stable while postings arrive. 401 unauthorized, 400 bad_request (an unknown or
      repeated argument, a malformed campaign id), 400 bad_cursor.
  GET /v1/campaigns/ID
      200 {"campaign","currency","budget","tickets","settled_tickets","settled_amount",
           "top":[{"uid_masked","amount"}]}
      Totals and the ten largest packets (uids masked: "13****89", short uids "****7"),
      from the ledger's campaign registry and postings, cached for one second: a stampede
      costs the ledger one query. 404 not_found (unknown campaign), 400 bad_request.
  Both: 405 (not GET), 413 (a body), 503 {"error":"unavailable","retry_after_ms":N} with
  Retry-After when the ledger does not answer within --db-timeout or more than
  --max-in-flight requests are in progress.

--dry-run looks at the ledger read-only (one attempt within 5 s: reachable, the schema
of this version; a PostgreSQL ledger is then opened and closed by the server's own
reader; a SQLite file only read, since opening it as the server does creates its -wal
and -shm files), reads the session key, binds and closes --listen and
--admin-listen, prints one "ok" line per check and exits 0, or one line naming the flag
and exit 2.

Also serves GET /healthz, /readyz (the ledger answers); /metrics on --admin-listen, and
/debug/pprof/ there with the token of --admin-key admin-query.key (never without). SIGTERM
or SIGINT: stops accepting, finishes in-flight requests, exits 0.
`

func runQuery(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("query", queryUsage, stderr)
	lf := addLedgerFlags(fs, "ledger `URL`: postgres://... or sqlite:///path/ledger.db (required)")
	sessionKeys := addSessionKeyFlag(fs)
	listen := fs.String("listen", query.DefaultListen, "listen `address` host:port")
	adminListen := fs.String("admin-listen", "", "admin listener `address` for /metrics and /debug/pprof/ (default 127.0.0.1:<port of --listen + 1000>)")
	adminKey := fs.String("admin-key", "", "admin-query.key `file`: /debug/pprof/ needs its token (without it no profile is served)")
	conns := fs.Int("db-conns", query.DefaultDBConns, "most ledger connections")
	maxInFlight := fs.Int("max-in-flight", query.DefaultMaxInFlight, "requests in progress before answering 503")
	dbTimeout := fs.Duration("db-timeout", query.DefaultDBTimeout, "longest wait for the ledger per request")
	logFormat := logFormatFlag(fs, "log format: text or json")
	dryRun := fs.Bool("dry-run", false, "check the session key, the listen addresses and the ledger (reachable within 5s, this version's schema), print what was checked, exit 0 or 2; serve nothing")
	if ok, code := parseFlags(fs, args); !ok {
		return code
	}
	if err := requireFlag(fs, "ledger", "session-key"); err != nil {
		return usageError(stderr, "query: %v", err)
	}
	switch {
	case *conns < 1 || *conns > 1024:
		return usageError(stderr, "query: --db-conns must be in 1..1024, have %d", *conns)
	case *maxInFlight < 1:
		return usageError(stderr, "query: --max-in-flight must be > 0")
	case *dbTimeout <= 0:
		return usageError(stderr, "query: --db-timeout must be > 0")
	}
	ledgerURL, sk, moreSK, ak, err := queryInputs(lf, sessionKeys, *adminKey)
	if err != nil {
		return usageError(stderr, "query: %v", err)
	}
	chk := newStartCheck(fs, *dryRun, stdout)
	chk.ok("session-key", "%s", sessionKeys)
	log := obs.NewLogger(stderr, *logFormat, slog.LevelInfo)
	openTimeout := 15 * time.Second
	if *dryRun {
		openTimeout = dryRunLedgerTimeout
		// A read-only look that leaves no file behind (opening a WAL SQLite file, even
		// read-only, creates its -wal and -shm files): the schema must be this version's.
		pctx, cancel := context.WithTimeout(context.Background(), dryRunLedgerTimeout)
		p, err := ledger.ProbeLedger(pctx, ledgerURL, "")
		cancel()
		switch {
		case err != nil:
			return chk.fail("--ledger: %v", err)
		case !p.Exists:
			return chk.fail("--ledger: %s does not exist (the query server never creates a ledger: point it at the settler's)", redactLedgerURL(ledgerURL))
		case p.Version < p.Latest:
			return chk.fail("--ledger: schema version %d, this query server reads version %d: start the settler of this version once to migrate it", p.Version, p.Latest)
		}
		if p.Backend == "sqlite" {
			chk.ok("ledger", "sqlite reachable, read-only, schema version %d (current)", p.Version)
			return queryDryRunListen(chk, *listen, *adminListen)
		}
	}
	octx, cancel := context.WithTimeout(context.Background(), openTimeout)
	rd, err := query.OpenReader(octx, ledgerURL, *conns)
	cancel()
	if err != nil {
		if errors.Is(err, query.ErrBadURL) || errors.Is(err, query.ErrSchema) {
			return usageError(stderr, "query: --ledger: %v", err)
		}
		return usageError(stderr, "query: --ledger: cannot open %s: %v", redactLedgerURL(ledgerURL), err)
	}
	httpCfg := obs.Common{AdminListen: *adminListen, AdminAuth: control.TokenAuth(ak)}
	if httpCfg.AdminListen == "" {
		if httpCfg.AdminListen, err = obs.DefaultAdminListen(*listen); err != nil {
			rd.Close()
			return usageError(stderr, "query: --admin-listen: %v", err)
		}
	}
	if *dryRun {
		// The same reader the server uses (read-only, never migrates) opened and closed.
		rd.Close()
		chk.ok("ledger", "%s reachable, read-only, with the query schema", ledgerScheme(ledgerURL))
		return queryDryRunListen(chk, *listen, *adminListen)
	}
	srv, err := query.New(query.Config{
		HTTP: httpCfg, Reader: rd, SessionKey: sk, MoreSessionKeys: moreSK, Listen: *listen, MaxInFlight: *maxInFlight, DBTimeout: *dbTimeout, Logger: log,
	})
	if err != nil {
		rd.Close()
		return usageError(stderr, "query: %v", err)
	}
	fmt.Fprintf(stdout, "query listening on %s\n", srv.Addr())
	ctx, stop := obs.SignalContext(context.Background())
	defer stop()
	if err := srv.Run(ctx); err != nil {
		fmt.Fprintf(stderr, "shake query: %v\n", err)
		return 1
	}
	return 0
}

// ledgerScheme is the backend a ledger URL names, for messages that must not print
// the URL (it may hold a password).
func ledgerScheme(u string) string {
	if i := strings.Index(u, "://"); i > 0 {
		return u[:i]
	}
	return "ledger"
}

// queryDryRunListen ends the query server's --dry-run: both listen addresses bound and
// closed.
func queryDryRunListen(chk *startCheck, listen, adminListen string) int {
	if adminListen == "" {
		a, err := obs.DefaultAdminListen(listen)
		if err != nil {
			return chk.fail("--admin-listen: %v", err)
		}
		adminListen = a
	}
	if code := 0; !chk.binds(&code, "--listen", listen, "--admin-listen", adminListen) {
		return code
	}
	return chk.done()
}

// queryInputs reads the query server's secrets: the ledger URL (no password on the
// command line), the session key and the optional admin-query.key.
func queryInputs(lf *ledgerFlags, sessionKeys *sessionKeysFlag, adminKey string) (ledgerURL string, sk []byte, moreSK [][]byte, ak []byte, err error) {
	if ledgerURL, err = lf.resolve(); err != nil {
		return "", nil, nil, nil, err
	}
	if sk, moreSK, err = sessionKeys.read(); err != nil {
		return "", nil, nil, nil, fmt.Errorf("--session-key: %w", err)
	}
	ak, err = optionalRoleKey(adminKey, ticket.RoleQuery)
	return ledgerURL, sk, moreSK, ak, err
}
