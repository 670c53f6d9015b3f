package ledger

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

func TestTransient(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, refused := Open(ctx, "postgres://postgres@"+addr+"/test?sslmode=disable")
	if refused == nil {
		t.Fatal("opened a ledger on a closed port")
	}
	pg := func(code string) error { return fmt.Errorf("connect: %w", &pgconn.PgError{Code: code}) }
	for _, c := range []struct {
		name string
		err  error
		want bool
	}{
		{"connection refused", refused, true},
		{"deadline", fmt.Errorf("x: %w", context.DeadlineExceeded), true},
		{"starting up", pg("57P03"), true},
		{"too many connections", pg("53300"), true},
		{"connection failure", pg("08006"), true},
		{"wrong password", pg("28P01"), false},
		{"no such database", pg("3D000"), false},
		{"syntax", pg("42601"), false},
		{"newer schema", fmt.Errorf("x: %w", ErrSchemaNewer), false},
		{"other generation", ErrOtherGeneration, false},
		{"bad url", ErrBadURL, false},
		{"nil", nil, false},
	} {
		if got := Transient(c.err); got != c.want {
			t.Errorf("%s: Transient(%v) = %v, want %v", c.name, c.err, got, c.want)
		}
	}
}

// TestOpenRefusesNewerSchema: a ledger a newer shake migrated is refused before any
// migration of this version runs on it, and ProbeLedger says so without writing.
func TestOpenRefusesNewerSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ledger.db")
	ctx := context.Background()
	l, err := Open(ctx, "sqlite://"+path)
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
	p, err := ProbeLedger(ctx, "sqlite://"+path, "c")
	if err != nil || !p.Exists || p.Version != p.Latest || p.Registered {
		t.Fatalf("probe of a fresh ledger: %+v %v", p, err)
	}
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`INSERT INTO schema_migrations VALUES (?, 'future.sql', 0)`, p.Latest+1); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if _, err := Open(ctx, "sqlite://"+path); !errors.Is(err, ErrSchemaNewer) {
		t.Fatalf("Open of a newer schema: %v, want ErrSchemaNewer", err)
	}
	before, _ := os.ReadDir(filepath.Dir(path))
	if _, err := ProbeLedger(ctx, "sqlite://"+path, "c"); !errors.Is(err, ErrSchemaNewer) {
		t.Fatalf("ProbeLedger of a newer schema: %v, want ErrSchemaNewer", err)
	}
	if after, _ := os.ReadDir(filepath.Dir(path)); len(after) != len(before) {
		t.Fatalf("ProbeLedger created files: %v -> %v", before, after)
	}
}

func TestProbeMissingSQLite(t *testing.T) {
	dir := t.TempDir()
	p, err := ProbeLedger(context.Background(), "sqlite://"+filepath.Join(dir, "new.db"), "c")
	if err != nil || p.Exists || p.Version != 0 {
		t.Fatalf("probe of a missing file: %+v %v", p, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "new.db")); err == nil {
		t.Fatal("ProbeLedger created the ledger")
	}
	if _, err := ProbeLedger(context.Background(), "sqlite://"+filepath.Join(dir, "no", "new.db"), "c"); err == nil {
		t.Fatal("a ledger in a missing directory passed the probe")
	}
}
