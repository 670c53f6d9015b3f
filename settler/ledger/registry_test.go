package ledger

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
)

// TestRegister records a campaign, its generation, digest and figures, in one call,
// accepts the same registration again (a restarted settler) and refuses other figures
// for the same id, on both backends.
func TestRegister(t *testing.T) {
	g, d := strings.Repeat("1", 32), strings.Repeat("a", 64)
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			l := open(t, b.url)
			c := CampaignInfo{Campaign: "reg", Generation: g, ManifestDigest: d, Currency: "CNY", Budget: 10000, Tickets: 50}
			if err := l.Register(ctx, c); err != nil {
				t.Fatal(err)
			}
			if err := l.Register(ctx, c); err != nil {
				t.Fatalf("same registration again: %v", err)
			}
			if got, ok, err := l.Registered(ctx, "reg"); !ok || err != nil || got != c {
				t.Fatalf("Registered = %+v %v %v, want %+v", got, ok, err, c)
			}
			for _, bad := range []CampaignInfo{
				{Campaign: "reg", Generation: g, ManifestDigest: d, Currency: "CNY", Budget: 10001, Tickets: 50},
				{Campaign: "reg", Generation: g, ManifestDigest: d, Currency: "USD", Budget: 10000, Tickets: 50},
				{Campaign: "reg", Generation: g, ManifestDigest: d, Currency: "CNY", Budget: 10000, Tickets: 51},
			} {
				if err := l.Register(ctx, bad); !errors.Is(err, ErrManifestChanged) {
					t.Errorf("Register(%+v) = %v, want ErrManifestChanged", bad, err)
				}
			}
			for _, bad := range []CampaignInfo{
				{Campaign: "Bad!", Generation: g, ManifestDigest: d, Currency: "CNY", Budget: 1, Tickets: 1},
				{Campaign: "ok", Generation: g, ManifestDigest: d, Currency: "CNY", Budget: -1, Tickets: 1},
				{Campaign: "ok", Generation: g, ManifestDigest: d, Currency: "CNY", Budget: 1, Tickets: 1 << 63},
				{Campaign: "ok", Generation: g, ManifestDigest: d, Currency: "", Budget: 1, Tickets: 1},
			} {
				if err := l.Register(ctx, bad); !errors.Is(err, ErrInvalid) {
					t.Errorf("Register(%+v) = %v, want ErrInvalid", bad, err)
				}
			}
			if got, ok, err := l.Registered(ctx, "reg"); !ok || err != nil || got != c {
				t.Fatalf("after refused registrations: %+v %v %v, want %+v", got, ok, err, c)
			}
		})
	}
}

// execer runs statements on one backend's raw connection.
type execer func(t *testing.T, q string, args ...any)

// rawConn is b's database, unmigrated, on a connection of its own closed when the
// test ends: exec runs a statement, query returns the rows as text.
type rawConn struct {
	exec  execer
	query func(t *testing.T, q string) [][]string
}

func raw(t *testing.T, b backend) rawConn {
	t.Helper()
	ctx := context.Background()
	if b.name == "postgres" {
		c, err := pgx.Connect(ctx, b.url)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close(ctx) })
		return rawConn{exec: func(t *testing.T, q string, args ...any) {
			t.Helper()
			if _, err := c.Exec(ctx, q, args...); err != nil {
				t.Fatalf("%s: %v", q, err)
			}
		}, query: func(t *testing.T, q string) [][]string {
			t.Helper()
			rows, err := c.Query(ctx, q)
			if err != nil {
				t.Fatal(err)
			}
			out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) ([]string, error) {
				vs, err := r.Values()
				f := make([]string, len(vs))
				for i, v := range vs {
					f[i] = fmt.Sprint(v)
				}
				return f, err
			})
			if err != nil {
				t.Fatal(err)
			}
			return out
		}}
	}
	db, err := sql.Open("sqlite", "file:"+strings.TrimPrefix(b.url, "sqlite://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return rawConn{exec: func(t *testing.T, q string, args ...any) {
		t.Helper()
		if _, err := db.ExecContext(ctx, q, args...); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}, query: func(t *testing.T, q string) [][]string {
		t.Helper()
		rows, err := db.QueryContext(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		cols, _ := rows.Columns()
		var out [][]string
		for rows.Next() {
			f := make([]string, len(cols))
			ptrs := make([]any, len(cols))
			for i := range f {
				ptrs[i] = &f[i]
			}
			if err := rows.Scan(ptrs...); err != nil {
				t.Fatal(err)
			}
			out = append(out, f)
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		return out
	}}
}

// TestUpgradeFrom0003 builds a ledger at schema version 3 with both old registries
// filled (campaigns by the settler's start, campaign_registry when it funded), then
// opens it with this version: migration 0004 folds them into one table without losing
// a row or a value, and registration and the readers work on the result.
func TestUpgradeFrom0003(t *testing.T) {
	g1, g2, g3 := strings.Repeat("1", 32), strings.Repeat("2", 32), strings.Repeat("3", 32)
	d1, d2, d3 := strings.Repeat("a", 64), strings.Repeat("b", 64), strings.Repeat("c", 64)
	for _, b := range backends(t) {
		t.Run(b.name, func(t *testing.T) {
			ctx := context.Background()
			exec := schemaAt(t, b, 3)
			// both: registered at start (t=100), figures recorded when funded (t=200).
			exec(t, `INSERT INTO campaigns VALUES ('both', '`+g1+`', '`+d1+`', 100)`)
			exec(t, `INSERT INTO campaign_registry VALUES ('both', 'CNY', 5000, 20, 200)`)
			// started: registered by a settler that never got to fund it.
			exec(t, `INSERT INTO campaigns VALUES ('started', '`+g2+`', '`+d2+`', 300)`)
			// figures: recorded without a registration (a settler library run alone).
			exec(t, `INSERT INTO campaign_registry VALUES ('figures', 'USD', 700, 7, 400)`)
			role := ""
			if b.name == "postgres" {
				// The query server's read-only role (README) reads the old table.
				schema := b.url[strings.LastIndex(b.url, "search_path=")+len("search_path="):]
				role = "shake_upgrade_" + schema
				exec(t, `CREATE ROLE `+role)
				t.Cleanup(func() {
					exec(t, `REVOKE ALL ON ALL TABLES IN SCHEMA `+schema+` FROM `+role)
					exec(t, `DROP ROLE `+role)
				})
				exec(t, `GRANT SELECT ON campaign_registry TO `+role)
			}

			l := open(t, b.url)
			want := map[string]CampaignInfo{
				"both":    {Campaign: "both", Generation: g1, ManifestDigest: d1, Currency: "CNY", Budget: 5000, Tickets: 20},
				"started": {Campaign: "started", Generation: g2, ManifestDigest: d2},
			}
			for c, w := range want {
				if got, ok, err := l.Registered(ctx, c); !ok || err != nil || got != w {
					t.Errorf("Registered(%s) = %+v %v %v, want %+v", c, got, ok, err, w)
				}
			}
			if got, ok, err := l.Registered(ctx, "figures"); ok || err != nil {
				t.Errorf("Registered(figures) = %+v %v %v, want nothing (no generation yet)", got, ok, err)
			}
			rows := registryRows(t, b)
			wantRows := map[string]string{
				"both":    g1 + " " + d1 + " CNY 5000 20 100",
				"started": g2 + " " + d2 + " NULL NULL NULL 300",
				"figures": "NULL NULL USD 700 7 400",
			}
			if len(rows) != len(wantRows) {
				t.Errorf("registry rows %v, want %v", rows, wantRows)
			}
			for c, w := range wantRows {
				if rows[c] != w {
					t.Errorf("row %s = %q, want %q", c, rows[c], w)
				}
			}
			if n := countTables(t, b, "campaign_registry"); n != 0 {
				t.Errorf("campaign_registry still exists (%d)", n)
			}
			if role != "" {
				var can []string
				scanAll(t, b, `SELECT has_table_privilege('`+role+`', 'campaigns', 'SELECT')`, func(f []string) { can = f })
				if len(can) != 1 || can[0] != "true" {
					t.Errorf("the read-only role lost its SELECT on the registry: %v", can)
				}
			}

			// The half rows get their other half from the next registration, once.
			started := CampaignInfo{Campaign: "started", Generation: g2, ManifestDigest: d2, Currency: "CNY", Budget: 90, Tickets: 9}
			if err := l.Register(ctx, CampaignInfo{Campaign: "started", Generation: g3, ManifestDigest: d3, Currency: "CNY", Budget: 90, Tickets: 9}); !errors.Is(err, ErrOtherGeneration) {
				t.Errorf("another generation of started: %v", err)
			}
			if err := l.Register(ctx, started); err != nil {
				t.Fatal(err)
			}
			if got, _, _ := l.Registered(ctx, "started"); got != started {
				t.Errorf("started after registration: %+v, want %+v", got, started)
			}
			figures := CampaignInfo{Campaign: "figures", Generation: g3, ManifestDigest: d3, Currency: "USD", Budget: 700, Tickets: 7}
			if err := l.Register(ctx, CampaignInfo{Campaign: "figures", Generation: g3, ManifestDigest: d3, Currency: "USD", Budget: 701, Tickets: 7}); !errors.Is(err, ErrManifestChanged) {
				t.Errorf("other figures for figures: %v", err)
			}
			if got, ok, _ := l.Registered(ctx, "figures"); ok {
				t.Errorf("a refused registration was kept: %+v", got)
			}
			if err := l.Register(ctx, figures); err != nil {
				t.Fatal(err)
			}
			if got, _, _ := l.Registered(ctx, "figures"); got != figures {
				t.Errorf("figures after registration: %+v, want %+v", got, figures)
			}
			if err := l.Register(ctx, want["both"]); err != nil {
				t.Errorf("both again: %v", err)
			}
			if got := registryRows(t, b)["both"]; got != wantRows["both"] {
				t.Errorf("a complete row was rewritten: %q", got)
			}
		})
	}
}

// registryRows returns every row of the registry as "generation digest currency budget
// tickets registered_at" by campaign, NULL for NULL.
func registryRows(t *testing.T, b backend) map[string]string {
	t.Helper()
	q := `SELECT campaign, COALESCE(generation, 'NULL'), COALESCE(manifest_digest, 'NULL'), COALESCE(currency, 'NULL'),
COALESCE(CAST(budget AS TEXT), 'NULL'), COALESCE(CAST(tickets AS TEXT), 'NULL'), CAST(registered_at AS TEXT) FROM campaigns`
	out := map[string]string{}
	scanAll(t, b, q, func(f []string) { out[f[0]] = strings.Join(f[1:], " ") })
	return out
}

func countTables(t *testing.T, b backend, name string) int {
	t.Helper()
	q := `SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = '` + name + `'`
	if b.name == "postgres" {
		q = `SELECT COUNT(*) FROM pg_tables WHERE schemaname = current_schema() AND tablename = '` + name + `'`
	}
	n := -1
	scanAll(t, b, q, func(f []string) { n, _ = strconv.Atoi(f[0]) })
	return n
}

// scanAll runs q on b and calls fn with each row's columns as text.
func scanAll(t *testing.T, b backend, q string, fn func([]string)) {
	t.Helper()
	for _, f := range raw(t, b).query(t, q) {
		fn(f)
	}
}

// schemaAt applies the first n migrations of b's backend to its empty database, as a
// shake of that schema version would have, and returns a way to write to it directly.
func schemaAt(t *testing.T, b backend, n int) func(t *testing.T, q string, args ...any) {
	t.Helper()
	ms, err := loadMigrations(b.name)
	if err != nil {
		t.Fatal(err)
	}
	exec := raw(t, b).exec
	exec(t, migrationTable)
	for _, m := range ms[:n] {
		exec(t, m.sql)
		exec(t, `INSERT INTO schema_migrations (version, name, applied_at) VALUES (`+strconv.Itoa(m.version)+`, '`+m.name+`', 1)`)
	}
	return exec
}
