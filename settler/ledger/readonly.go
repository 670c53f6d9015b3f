package ledger

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Errors of OpenReadOnly: a ledger that is not there to be read. They are permanent
// (Transient is false): waiting does not make a typo'd path or an empty database the
// settler's ledger.
var (
	// ErrNoLedger reports a SQLite ledger file, or a PostgreSQL database, that does not
	// exist.
	ErrNoLedger = errors.New("the ledger does not exist")
	// ErrNoSchema reports a database with no shake schema in it (no migration applied):
	// no settler ever used it.
	ErrNoSchema = errors.New("the ledger has no shake schema (no settler ever migrated it)")
	// ErrSchemaOlder reports a ledger migrated by an older shake: this binary's queries
	// may need what a newer migration adds, and a reader does not migrate.
	ErrSchemaOlder = errors.New("the ledger's schema is older than this shake reads")
)

// OpenReadOnly opens the ledger at url for reading only: it never creates, migrates or
// writes anything. A SQLite file is opened read-only (a missing one is ErrNoLedger,
// never created); a PostgreSQL session runs with default_transaction_read_only on and
// creates no staging table. The ledger's schema must be exactly this binary's:
// ErrNoSchema (none), ErrSchemaOlder or ErrSchemaNewer otherwise. The write methods of
// the returned Ledger fail. It is what reconcile reads with.
func OpenReadOnly(ctx context.Context, url string) (Ledger, error) {
	switch {
	case strings.HasPrefix(url, "postgres://"), strings.HasPrefix(url, "postgresql://"):
		l := &pgLedger{url: url, readOnly: true}
		if err := l.withConn(ctx, func(*pgx.Conn) error { return nil }); err != nil {
			return nil, err
		}
		return l, nil
	case strings.HasPrefix(url, "sqlite://"):
		path, err := sqlitePath(url)
		if err != nil {
			return nil, err
		}
		return openSQLiteReadOnly(ctx, path)
	}
	return nil, fmt.Errorf("%w: got %q", ErrBadURL, url)
}

// checkReadable returns nil when applied is exactly the known schema version.
func checkReadable(applied, known int) error {
	switch {
	case applied == 0:
		return ErrNoSchema
	case applied < known:
		return fmt.Errorf("%w: it is at version %d, this shake reads version %d: start this version's settler once to migrate it", ErrSchemaOlder, applied, known)
	}
	return checkSchemaVersion(applied, known)
}

// dialReadOnly connects a read-only PostgreSQL session and checks the schema version.
func dialReadOnly(ctx context.Context, url string) (*pgx.Conn, error) {
	cfg, err := pgReadOnlyConfig(url, "shake-reader")
	if err != nil {
		return nil, err
	}
	c, err := pgx.ConnectConfig(ctx, cfg)
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == "3D000" { // invalid_catalog_name: no such database
		return nil, fmt.Errorf("postgres ledger: database %q: %w", cfg.Database, ErrNoLedger)
	}
	if err != nil {
		return nil, fmt.Errorf("cannot connect to postgres ledger: %w", err)
	}
	ms, err := loadMigrations("postgres")
	if err == nil {
		var v int
		if v, err = pgSchemaVersion(ctx, c); err == nil {
			err = checkReadable(v, len(ms))
		}
	}
	if err != nil {
		c.Close(context.Background())
		return nil, fmt.Errorf("postgres ledger: %w", err)
	}
	return c, nil
}

func openSQLiteReadOnly(ctx context.Context, path string) (*sqliteLedger, error) {
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("sqlite ledger %s: %w", path, ErrNoLedger)
	} else if err != nil {
		return nil, fmt.Errorf("sqlite ledger %s: %w", path, err)
	}
	// A caller that reads again later (a watch) opens the ledger again, so it sees what
	// a settler wrote meanwhile even where the open is immutable.
	db, err := openSQLiteRO(path)
	if err != nil {
		return nil, err
	}
	ms, err := loadMigrations("sqlite")
	if err == nil {
		var v int
		if v, err = sqliteSchemaVersion(ctx, db); err == nil {
			err = checkReadable(v, len(ms))
		}
	}
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("sqlite ledger %s: %w", path, err)
	}
	return &sqliteLedger{db: db}, nil
}

// CheckURL returns ErrBadURL unless url names a supported backend (it connects to
// nothing): what a command checks at start before it retries a ledger in a loop.
func CheckURL(url string) error {
	switch {
	case strings.HasPrefix(url, "postgres://"), strings.HasPrefix(url, "postgresql://"):
		if _, err := pgx.ParseConfig(url); err != nil {
			return fmt.Errorf("%w: %v", ErrBadURL, err)
		}
		return nil
	case strings.HasPrefix(url, "sqlite://"):
		_, err := sqlitePath(url)
		return err
	}
	return fmt.Errorf("%w: got %q", ErrBadURL, url)
}
