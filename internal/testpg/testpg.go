// Package testpg gives tests their own PostgreSQL schema in the database named by
// SHAKE_TEST_POSTGRES, so tests of different packages never see each other's rows.
package testpg

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Env is the variable that names the test database; CI always sets it.
const Env = "SHAKE_TEST_POSTGRES"

var seq atomic.Int64

// URL creates a fresh schema (dropped when the test ends) and returns a URL whose
// search_path selects it, or "" when SHAKE_TEST_POSTGRES is unset. An unreachable
// database fails the test: CI sets the variable only where PostgreSQL runs.
func URL(t testing.TB) string {
	t.Helper()
	base := os.Getenv(Env)
	if base == "" {
		return ""
	}
	schema := fmt.Sprintf("shake_t_%d_%d_%d", os.Getpid(), time.Now().UnixNano()%1e6, seq.Add(1))
	exec(t, base, "CREATE SCHEMA "+schema)
	t.Cleanup(func() { exec(t, base, "DROP SCHEMA "+schema+" CASCADE") })
	sep := "?"
	if strings.Contains(base, "?") {
		sep = "&"
	}
	return base + sep + "search_path=" + schema
}

func exec(t testing.TB, url, stmt string) {
	t.Helper()
	ctx := context.Background()
	c, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatalf("%s=%s: %v", Env, url, err)
	}
	defer c.Close(ctx)
	if _, err := c.Exec(ctx, stmt); err != nil {
		t.Fatalf("%s: %v", stmt, err)
	}
}
