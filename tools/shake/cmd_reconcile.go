package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"
	"time"

	"shake/internal/obs"
	"shake/settler"
	"shake/settler/ledger"
	"shake/ticket"
)

func init() {
	register(command{name: "reconcile", summary: "prove the ledger against the campaign; --refund the remainder", run: runReconcile})
}

const reconcileUsage = `
Usage: shake reconcile --manifest DIR/manifest.json --ledger URL [--key campaign.key] [--refund]
       shake reconcile --manifest DIR/manifest.json --ledger URL [--key campaign.key] --watch D [--listen ADDR]

Checks the ledger against the campaign and prints one JSON object:
  {"campaign","budget","tickets","settled_tickets","settled_amount","refunded_amount",
   "outstanding_amount","duplicates","mismatches","unknown_tickets","over_limit_users",
   "conflicting_claims","ok", ...}
plus "currency", "funded", "refunded", "late_settled_tickets", "late_settled_amount",
"balance_sum", "drifted_accounts" and "problems" (the first 20 violations, in words).

ok is true only when no ticket is posted twice, every posted amount and currency equals
its ticket's in the shard files (read from the manifest's directory, one shard at a
time), every posted ticket is in the manifest, no claim for a posted ticket came from
another user (conflicting_claims), no user holds more than the manifest's per_user
postings in one round (over_limit_users; per_user 0 is no limit), the account balances
sum to zero and each equals its recorded transfers, and budget = settled + refunded +
outstanding with outstanding >= 0 (outstanding is what was never opened).

reconcile only reads: it opens the ledger read-only (a SQLite file read-only, a
PostgreSQL session with default_transaction_read_only) and never creates, migrates or
writes it, except for the one refund of --refund. A ledger that is not this campaign's
to reconcile is ok:false, exit 1, with "reason" and a problem saying which:
ledger_missing (no such SQLite file or PostgreSQL database), no_schema (no settler ever
used it), schema_newer or schema_older (migrated by another shake), not_registered (this campaign and
generation were never registered there: is --ledger the settler's?), other_generation,
manifest_changed (the manifest's digest is not the one the campaign was funded with:
expires_at moved, say), not_funded. A failed money check is reason "money". --key also
checks the manifest's signature.

--refund needs --key. Allowed only after the manifest's expires_at (every ticket has
expired), it first reconciles read-only and refuses (exit 1) if that fails; then it
moves the outstanding remainder from the campaign's budget account back to the sponsor
account, once: a second --refund posts nothing. A claim that still arrives after the
refund (a ticket opened before expiry whose claim sat in a verifier's spool) is paid,
once, from the sponsor account, which got that ticket's money back in the refund;
refunded_amount is reported net of such late claims.

--watch D repeats the check every D until SIGTERM (the continuous reconciliation an
event is watched by), opening the ledger read-only each time: each result is logged
(an error with the reason and problems when it fails) and exported on --listen
(default 127.0.0.1:8084) /metrics as shake_reconcile_ok, shake_reconcile_<field> for
every number of the object above (labelled campaign),
shake_reconcile_problem{campaign,reason} (1 for the reason the last attempt is not ok;
cannot_check when the ledger could not be read, which also sets shake_reconcile_ok 0),
shake_reconcile_last_run_timestamp_seconds, shake_reconcile_runs_total{result} and
shake_reconcile_duration_seconds; /readyz is 200 while the last check completed. It
exits 0 on SIGTERM.

--dry-run (with or without --watch) checks the manifest (its signature with --key), the
shard files next to it (checksums, headers against the manifest), the ledger read-only
within 5 s (reachable, its schema version, the campaign's registration against the
manifest; never created or migrated) and, with --watch, that --listen can be bound; one
"ok" line per check, exit 0, or one line naming the flag and exit 2.

Exit: 0 ok, 1 a check failed, 2 bad usage, an unreadable file or an unreachable ledger.
`

func runReconcile(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("reconcile", reconcileUsage, stderr)
	manifestPath := fs.String("manifest", "", "campaign `DIR/manifest.json` (required; shard files are read from DIR)")
	lf := addLedgerFlags(fs, "ledger `URL`: postgres://... or sqlite:///path/ledger.db (required)")
	refund := fs.Bool("refund", false, "after expiry, return the unopened remainder to the sponsor (once)")
	keyPath := fs.String("key", "", "campaign.key `FILE`: also verify the manifest's signature")
	watch := fs.Duration("watch", 0, "repeat the check every `D` until SIGTERM, exporting it on --listen/metrics (0: check once)")
	listen := fs.String("listen", defaultReconcileListen, "with --watch: `HOST:PORT` for /metrics, /healthz, /readyz, /debug/pprof/")
	adminKey := fs.String("admin-key", "", "with --watch: admin-query.key `file`; /debug/pprof/ needs its token (without it no profile is served)")
	logFormat := logFormatFlag(fs, "with --watch: log format, text or json")
	dryRun := fs.Bool("dry-run", false, "check the manifest, the shard files, the ledger (read-only, within 5s) and, with --watch, --listen; print what was checked, exit 0 or 2; reconcile nothing")
	logLvl := logLevelFlag(fs)
	if ok, code := parseFlags(fs, args); !ok {
		return code
	}
	if err := requireFlag(fs, "manifest", "ledger"); err != nil {
		return flagError(fs, "%v", err)
	}
	ledgerURL, err := lf.resolve()
	if err != nil {
		return flagError(fs, "%v", err)
	}
	switch {
	case *adminKey != "" && *watch == 0:
		return flagError(fs, "--admin-key goes with --watch (it guards the watch's /debug/pprof/)")
	case *watch < 0:
		return flagError(fs, "--watch must be > 0")
	case *watch > 0 && *refund:
		return flagError(fs, "--refund and --watch do not go together: refund once, by hand")
	case *refund && *keyPath == "":
		return flagError(fs, "--refund needs --key campaign.key: a refund moves money, so the manifest's signature is checked first")
	}
	m, err := loadManifestFlags(*manifestPath, *keyPath)
	if err != nil {
		return flagError(fs, "%v", err)
	}
	ak, err := optionalRoleKey(*adminKey, ticket.RoleQuery)
	if err != nil {
		return flagError(fs, "%v", err)
	}
	if *dryRun {
		return reconcileDryRun(newStartCheck(fs, true, stdout), m, *manifestPath, ledgerURL, *watch, *listen, *keyPath != "")
	}
	if *watch > 0 {
		return runReconcileWatch(reconcileWatch{every: *watch, listen: *listen, adminKey: ak, manifest: m, dir: filepath.Dir(*manifestPath),
			ledgerURL: ledgerURL, log: obs.NewLogger(stderr, *logFormat, logLvl.Level()), stderr: stderr})
	}
	if *refund {
		// Refuse early, before touching the ledger.
		if err := settler.CheckRefundable(m, time.Now()); err != nil {
			return flagError(fs, "--refund: %v", err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	dir := filepath.Dir(*manifestPath)
	rep, err := settler.ReconcileURL(ctx, m, dir, ledgerURL)
	if err != nil {
		return flagError(fs, "%v", err)
	}
	if *refund && rep.OK {
		if rep, err = reconcileRefund(ctx, m, dir, ledgerURL); err != nil {
			return flagError(fs, "--refund: %v", err)
		}
	}
	b, err := json.Marshal(rep)
	if err != nil {
		return flagError(fs, "%v", err)
	}
	stdout.Write(append(b, '\n'))
	if !rep.OK {
		return 1
	}
	return 0
}

// reconcileRefund is --refund once the read-only reconciliation passed: the one write
// reconcile makes, on the ledger opened for writing (it is at this binary's schema
// version, so opening it migrates nothing), then the check again, read-only.
func reconcileRefund(ctx context.Context, m *ticket.Manifest, dir, url string) (*settler.Report, error) {
	l, err := ledger.Open(ctx, url)
	if err != nil {
		return nil, err
	}
	rr, err := settler.Refund(ctx, m, l, time.Now())
	l.Close()
	if err != nil {
		return nil, err
	}
	rep, err := settler.ReconcileURL(ctx, m, dir, url)
	if err != nil {
		return nil, err
	}
	rep.RefundPosted = rr.Posted
	return rep, nil
}

// reconcileDryRun is reconcile's --dry-run: what a check would read, read-only.
func reconcileDryRun(chk *startCheck, m *ticket.Manifest, manifestPath, ledgerURL string, watch time.Duration, listen string, signed bool) int {
	sig := "signature not checked (no --key)"
	if signed {
		sig = "signature valid"
	}
	chk.ok("manifest", "%s: campaign %s generation %s, %d tickets, budget %d %s, %s", manifestPath, m.Campaign, m.Generation, m.Count, m.Budget, m.Currency, sig)
	amounts, err := settler.LoadAmounts(m, filepath.Dir(manifestPath))
	if err != nil {
		return chk.fail("--manifest: %v", err)
	}
	chk.ok("shards", "%d amounts in the shard files, checksums and headers match the manifest", len(amounts))
	if code, ok := ledgerDryRun(chk, ledgerURL, m, "a reconcile would create an empty one (schema version %d): is --ledger the settler's?"); !ok {
		return code
	}
	if watch > 0 {
		if a, err := bindCheck(listen); err != nil {
			return chk.fail("--listen: %v", err)
		} else {
			chk.ok("listen", "%s can be bound (--watch %v)", a, watch)
		}
	}
	return chk.done()
}

// loadManifestFlags loads --manifest, checking its signature when --key is given; the
// error names the flag.
func loadManifestFlags(manifestPath, keyPath string) (*ticket.Manifest, error) {
	if keyPath == "" {
		m, err := ticket.LoadManifest(manifestPath)
		if err != nil {
			return nil, fmt.Errorf("--manifest: %w", err)
		}
		return m, nil
	}
	key, err := ticket.ReadKeyFile(keyPath)
	if err != nil {
		return nil, fmt.Errorf("--key: %w", err)
	}
	m, err := ticket.LoadManifestKey(manifestPath, key)
	if err != nil {
		return nil, fmt.Errorf("--manifest: %w", err)
	}
	return m, nil
}
