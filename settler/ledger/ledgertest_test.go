package ledger

import (
	"path/filepath"
	"testing"

	"shake/internal/testpg"
)

// backend is one ledger implementation under test: url opens it (again and again).
type backend struct {
	name string
	url  string
}

// backends returns SQLite always and PostgreSQL when SHAKE_TEST_POSTGRES is set, each
// fresh: a new file, or a new schema (selected through search_path) dropped at the end.
func backends(t *testing.T) []backend {
	t.Helper()
	bs := []backend{{"sqlite", "sqlite://" + filepath.Join(t.TempDir(), "ledger.db")}}
	if u := testpg.URL(t); u != "" {
		bs = append(bs, backend{"postgres", u})
	} else {
		t.Log("SHAKE_TEST_POSTGRES not set: PostgreSQL ledger not tested (set it to e.g. postgres://postgres@127.0.0.1:5432/test?sslmode=disable)")
	}
	return bs
}
