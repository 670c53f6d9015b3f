package testpg

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
)

func TestURLIsolatesSchemas(t *testing.T) {
	a, b := URL(t), URL(t)
	if a == "" {
		t.Skip(Env + " is unset: set it to e.g. postgres://postgres@127.0.0.1:5432/test?sslmode=disable")
	}
	if a == b {
		t.Fatal("two calls returned the same schema")
	}
	ctx := context.Background()
	ca, err := pgx.Connect(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	defer ca.Close(ctx)
	if _, err := ca.Exec(ctx, "CREATE TABLE only_in_a (x int)"); err != nil {
		t.Fatal(err)
	}
	cb, err := pgx.Connect(ctx, b)
	if err != nil {
		t.Fatal(err)
	}
	defer cb.Close(ctx)
	if _, err := cb.Exec(ctx, "SELECT * FROM only_in_a"); err == nil {
		t.Fatal("a table made in one schema is visible from the other")
	}
}
