package ledger

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

var schemaSeq atomic.Int64

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
	if u := PostgresURL(t); u != "" {
		bs = append(bs, backend{"postgres", u})
	} else {
		t.Log("SHAKE_TEST_POSTGRES not set: PostgreSQL ledger not tested (set it to e.g. postgres://postgres@127.0.0.1:5432/test?sslmode=disable)")
	}
	return bs
}

// PostgresURL returns a URL for a fresh schema in the SHAKE_TEST_POSTGRES database, or ""
// when the variable is unset.
func PostgresURL(t testing.TB) string {
	t.Helper()
	base := os.Getenv("SHAKE_TEST_POSTGRES")
	if base == "" {
		return ""
	}
	schema := fmt.Sprintf("shake_t_%d_%d_%d", os.Getpid(), time.Now().UnixNano()%1e6, schemaSeq.Add(1))
	ctx := context.Background()
	c, err := pgx.Connect(ctx, base)
	if err != nil {
		t.Fatalf("SHAKE_TEST_POSTGRES=%s: %v", base, err)
	}
	defer c.Close(ctx)
	if _, err := c.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c, err := pgx.Connect(ctx, base)
		if err == nil {
			c.Exec(ctx, "DROP SCHEMA "+schema+" CASCADE")
			c.Close(ctx)
		}
	})
	sep := "?"
	if strings.Contains(base, "?") {
		sep = "&"
	}
	return base + sep + "search_path=" + schema
}
