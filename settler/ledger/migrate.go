package ledger

import (
	"embed"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"
)

// migrationFS holds the schema, one directory per backend with the same versions.
//
//go:embed migrations
var migrationFS embed.FS

// migration is one versioned schema step.
type migration struct {
	version int
	name    string
	sql     string
}

// migrationTable records applied versions; applying is idempotent because each step
// runs in a transaction that also inserts its version, and applied versions are skipped.
const migrationTable = `CREATE TABLE IF NOT EXISTS schema_migrations (
    version    INTEGER PRIMARY KEY,
    name       TEXT   NOT NULL,
    applied_at BIGINT NOT NULL
)`

// loadMigrations returns the migrations of backend ("postgres" or "sqlite") in version
// order. File names are NNNN_name.sql.
func loadMigrations(backend string) ([]migration, error) {
	dir := path.Join("migrations", backend)
	ents, err := fs.ReadDir(migrationFS, dir)
	if err != nil {
		return nil, fmt.Errorf("BUG: embedded migrations %s: %w", dir, err)
	}
	var ms []migration
	for _, e := range ents {
		n := e.Name()
		if !strings.HasSuffix(n, ".sql") {
			continue
		}
		us := strings.IndexByte(n, '_')
		v, err := strconv.Atoi(n[:max(us, 0)])
		if us <= 0 || err != nil || v <= 0 {
			return nil, fmt.Errorf("BUG: migration file %s has no NNNN_ version prefix", n)
		}
		b, err := migrationFS.ReadFile(path.Join(dir, n))
		if err != nil {
			return nil, err
		}
		ms = append(ms, migration{version: v, name: n, sql: string(b)})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].version < ms[j].version })
	for i := range ms {
		if ms[i].version != i+1 {
			return nil, fmt.Errorf("BUG: migrations of %s are not numbered 1..n", backend)
		}
	}
	return ms, nil
}
