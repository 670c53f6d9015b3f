package ledger

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/url"
	"os"
	"strings"
	"syscall"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Schema versions: what a ledger has applied against what this binary knows.

// openSQLiteRO opens the existing SQLite file at path read-only. With no -wal file
// there, no writer has it open (a settler removes the -wal file when it closes):
// immutable keeps SQLite from creating -wal and -shm files for this read, which a
// read-only open of a WAL database otherwise does. With a -wal file there, a settler
// may be writing, and the normal read-only open finds its files.
func openSQLiteRO(path string) (*sql.DB, error) {
	q := url.Values{}
	q.Set("mode", "ro")
	if _, err := os.Stat(path + "-wal"); errors.Is(err, fs.ErrNotExist) {
		q.Set("immutable", "1")
	}
	q.Add("_pragma", "busy_timeout(5000)")
	q.Add("_pragma", "query_only(1)")
	db, err := sql.Open("sqlite", "file:"+path+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("cannot open sqlite ledger %s: %w", path, err)
	}
	db.SetMaxOpenConns(1)
	return db, nil
}

// pgReadOnlyConfig is the connection config of url for a session that cannot write.
func pgReadOnlyConfig(url, app string) (*pgx.ConnConfig, error) {
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadURL, err)
	}
	cfg.RuntimeParams["default_transaction_read_only"] = "on"
	if cfg.RuntimeParams["application_name"] == "" {
		cfg.RuntimeParams["application_name"] = app
	}
	return cfg, nil
}

// checkSchemaVersion refuses a ledger whose applied schema is newer than the newest
// migration this binary embeds (ErrSchemaNewer).
func checkSchemaVersion(applied, known int) error {
	if applied > known {
		return fmt.Errorf("%w: it is at version %d, this shake knows versions up to %d: run the shake that migrated it (or a newer one)", ErrSchemaNewer, applied, known)
	}
	return nil
}

// pgSchemaVersion returns the newest applied migration (0: none), without writing.
func pgSchemaVersion(ctx context.Context, c *pgx.Conn) (int, error) {
	var exists bool
	if err := c.QueryRow(ctx, `SELECT to_regclass('schema_migrations') IS NOT NULL`).Scan(&exists); err != nil || !exists {
		return 0, err
	}
	var v int
	err := c.QueryRow(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&v)
	return v, err
}

// sqliteSchemaVersion is pgSchemaVersion for SQLite.
func sqliteSchemaVersion(ctx context.Context, db *sql.DB) (int, error) {
	var n int
	if err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'`).Scan(&n); err != nil || n == 0 {
		return 0, err
	}
	var v int
	err := db.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&v)
	return v, err
}

// Probe is what a look at a ledger learns without changing anything in it (the
// settler's and reconcile's --dry-run).
type Probe struct {
	Backend string // "postgres" or "sqlite"
	// Exists is false for a SQLite file that is not there yet (a start creates it).
	Exists bool
	// Version is the newest schema migration applied (0: none); Latest is the newest
	// this binary knows, the version a start migrates the ledger to.
	Version, Latest int
	// Registered and Info are what Register recorded for the campaign probed for; they
	// are read only from a ledger at the Latest version.
	Registered bool
	Info       CampaignInfo
}

// ProbeLedger connects to the ledger at url read-only, reads its schema version and,
// when it is this binary's, what it has registered for campaign. It never migrates,
// creates or writes anything: a PostgreSQL session is read-only, a SQLite file is
// opened read-only, and a missing one is reported as such (Exists false). A schema
// newer than this binary's is ErrSchemaNewer; an unreachable server is the dial error
// (Transient says so).
func ProbeLedger(ctx context.Context, url, campaign string) (Probe, error) {
	switch {
	case strings.HasPrefix(url, "postgres://"), strings.HasPrefix(url, "postgresql://"):
		return probePostgres(ctx, url, campaign)
	case strings.HasPrefix(url, "sqlite://"):
		path, err := sqlitePath(url)
		if err != nil {
			return Probe{}, err
		}
		return probeSQLite(ctx, path, campaign)
	}
	return Probe{}, fmt.Errorf("%w: got %q", ErrBadURL, url)
}

func probePostgres(ctx context.Context, url, campaign string) (Probe, error) {
	ms, err := loadMigrations("postgres")
	if err != nil {
		return Probe{}, err
	}
	p := Probe{Backend: "postgres", Exists: true, Latest: len(ms)}
	cfg, err := pgReadOnlyConfig(url, "shake-dry-run")
	if err != nil {
		return p, err
	}
	c, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return p, fmt.Errorf("cannot connect to postgres ledger: %w", err)
	}
	defer c.Close(context.Background())
	if p.Version, err = pgSchemaVersion(ctx, c); err != nil {
		return p, fmt.Errorf("postgres ledger: schema version: %w", err)
	}
	if err := checkSchemaVersion(p.Version, p.Latest); err != nil {
		return p, err
	}
	if campaign != "" && p.Version == p.Latest {
		l := &pgLedger{url: url, conn: c, migrated: true}
		p.Info, p.Registered, err = l.Registered(ctx, campaign)
		l.conn = nil // closed by the defer above, not by a pgLedger that never owned it
		if err != nil {
			return p, fmt.Errorf("postgres ledger: %w", err)
		}
	}
	return p, nil
}

func probeSQLite(ctx context.Context, path, campaign string) (Probe, error) {
	ms, err := loadMigrations("sqlite")
	if err != nil {
		return Probe{}, err
	}
	p := Probe{Backend: "sqlite", Latest: len(ms)}
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		// A start creates it; its directory must let it.
		if _, derr := os.Stat(dirOf(path)); derr != nil {
			return p, fmt.Errorf("sqlite ledger %s: cannot be created: %w", path, derr)
		}
		return p, nil
	} else if err != nil {
		return p, fmt.Errorf("sqlite ledger %s: %w", path, err)
	}
	p.Exists = true
	db, err := openSQLiteRO(path)
	if err != nil {
		return p, err
	}
	defer db.Close()
	if p.Version, err = sqliteSchemaVersion(ctx, db); err != nil {
		return p, fmt.Errorf("sqlite ledger %s: schema version: %w", path, err)
	}
	if err := checkSchemaVersion(p.Version, p.Latest); err != nil {
		return p, fmt.Errorf("sqlite ledger %s: %w", path, err)
	}
	if campaign != "" && p.Version == p.Latest {
		if p.Info, p.Registered, err = (&sqliteLedger{db: db}).Registered(ctx, campaign); err != nil {
			return p, fmt.Errorf("sqlite ledger %s: %w", path, err)
		}
	}
	return p, nil
}

func dirOf(path string) string {
	if i := strings.LastIndexByte(path, '/'); i > 0 {
		return path[:i]
	}
	if strings.HasPrefix(path, "/") {
		return "/"
	}
	return "."
}

// Transient reports whether err, from Open or a call on a ledger, is the kind that
// goes away by itself: the server cannot be reached (refused, reset, timed out, no
// route), is starting up or shutting down, or has no connection slot free. A wrong
// password, a missing database or role, a bad URL, a schema newer than this binary
// and a registration conflict are permanent: retrying cannot fix them.
func Transient(err error) bool {
	if err == nil {
		return false
	}
	for _, perm := range []error{ErrBadURL, ErrSchemaNewer, ErrNoLedger, ErrNoSchema, ErrSchemaOlder, ErrOtherGeneration, ErrManifestChanged, ErrInvalid, ErrConflict} {
		if errors.Is(err, perm) {
			return false
		}
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch {
		case strings.HasPrefix(pe.Code, "08"), // connection exception
			strings.HasPrefix(pe.Code, "53"),                           // insufficient resources (too many connections)
			pe.Code == "57P01", pe.Code == "57P02", pe.Code == "57P03", // shutting down, crash, starting up
			pe.Code == "40001", pe.Code == "40P01": // serialization failure, deadlock
			return true
		}
		return false // authentication (28...), no such database (3D000), permissions, SQL
	}
	if errors.Is(err, context.DeadlineExceeded) || pgconn.Timeout(err) {
		return true
	}
	var ne net.Error
	var oe *net.OpError
	var de *net.DNSError
	switch {
	case errors.As(err, &de):
		return de.IsTemporary || de.IsTimeout || de.IsNotFound // a name not yet in DNS (a pod starting)
	case errors.As(err, &oe), errors.As(err, &ne):
		return true
	}
	return errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EHOSTUNREACH) || errors.Is(err, syscall.ENETUNREACH) || errors.Is(err, syscall.EPIPE)
}
