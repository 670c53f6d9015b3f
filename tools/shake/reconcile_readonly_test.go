package main

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"shake/internal/testpg"
	"shake/settler/ledger"
	"shake/ticket"
)

// genCampaign generates a small campaign with id and returns its manifest path.
func genCampaign(t *testing.T, keys, id string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), id)
	args := genArgs(keys, out)
	args[2] = id // --campaign
	if code, _, errOut := runCLI(args...); code != 0 {
		t.Fatalf("gen %s: %s", id, errOut)
	}
	return filepath.Join(out, "manifest.json")
}

// fundLedger registers and funds the campaign of manifest in the ledger at url, as a
// settler does at its start.
func fundLedger(t *testing.T, url, manifest, keyFile string) {
	t.Helper()
	registerLedger(t, url, manifest, keyFile)
	m, err := ticket.LoadManifest(manifest)
	if err != nil {
		t.Fatal(err)
	}
	l, err := ledger.Open(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := l.Fund(context.Background(), m.Campaign, m.Currency, m.Budget); err != nil {
		t.Fatal(err)
	}
}

// reconcileRefused runs reconcile and wants exit 1, one JSON object with ok false and
// a problem containing want.
func reconcileRefused(t *testing.T, want string, args ...string) {
	t.Helper()
	code, out, errOut := runCLI(append([]string{"reconcile"}, args...)...)
	var rep struct {
		OK       *bool    `json:"ok"`
		Problems []string `json:"problems"`
		Reason   string   `json:"reason"`
	}
	if code != 1 || json.Unmarshal([]byte(out), &rep) != nil || rep.OK == nil || *rep.OK {
		t.Fatalf("reconcile %v: exit %d, want 1 and ok:false\nstdout %s\nstderr %s", args, code, out, errOut)
	}
	if !strings.Contains(strings.Join(rep.Problems, "\n"), want) {
		t.Fatalf("reconcile %v: problems %q do not say %q", args, rep.Problems, want)
	}
	t.Logf("reconcile %v: exit 1, reason %q, problems %q", args[len(args)-1], rep.Reason, rep.Problems)
}

// sqliteSchema is what a SQLite file holds of a schema (and its bytes' digest).
func sqliteSchema(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("sqlite", "file:"+path+"?mode=ro&immutable=1")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.Query(`SELECT name FROM sqlite_master ORDER BY name`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var names []string
	for rows.Next() {
		var n string
		rows.Scan(&n)
		names = append(names, n)
	}
	return strings.Join(names, ",") + "|" + fmt.Sprintf("%x", sha256.Sum256(b))
}

// pgTables lists the tables of the test schema url selects.
func pgTables(t *testing.T, url string) string {
	t.Helper()
	ctx := context.Background()
	c, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	rows, err := c.Query(ctx, `SELECT table_name || ':' || (SELECT COUNT(*) FROM information_schema.columns c WHERE c.table_schema = t.table_schema AND c.table_name = t.table_name)
		FROM information_schema.tables t WHERE table_schema = current_schema() ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return strings.Join(names, ",")
}

// TestReconcileNeverCreatesOrMigrates: reconcile pointed at a ledger that does not
// exist, has no shake schema or settles another campaign is ok:false, exit 1, with the
// problem named, and the ledger is left exactly as it was.
func TestReconcileNeverCreatesOrMigrates(t *testing.T) {
	t.Parallel()
	keys := keysDir(t)
	man := genCampaign(t, keys, "cny-2030")
	ck := filepath.Join(keys, "campaign.key")
	other := genCampaign(t, keys, "other-2030")

	t.Run("missing sqlite path", func(t *testing.T) {
		typo := filepath.Join(t.TempDir(), "typo.db")
		reconcileRefused(t, "does not exist", "--manifest", man, "--ledger", "sqlite://"+typo)
		if ents, _ := os.ReadDir(filepath.Dir(typo)); len(ents) != 0 {
			t.Fatalf("reconcile created %v", ents)
		}
	})
	t.Run("sqlite funded for another campaign", func(t *testing.T) {
		db := filepath.Join(t.TempDir(), "ledger.db")
		fundLedger(t, "sqlite://"+db, other, ck)
		before := sqliteSchema(t, db)
		reconcileRefused(t, "not registered", "--manifest", man, "--ledger", "sqlite://"+db)
		if after := sqliteSchema(t, db); after != before {
			t.Fatalf("the ledger changed: %q, was %q", after, before)
		}
	})
	t.Run("sqlite without a shake schema", func(t *testing.T) {
		db := filepath.Join(t.TempDir(), "empty.db")
		if err := os.WriteFile(db, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		reconcileRefused(t, "no shake schema", "--manifest", man, "--ledger", "sqlite://"+db)
		if fi, _ := os.Stat(db); fi.Size() != 0 {
			t.Fatalf("reconcile wrote %d bytes into an empty file", fi.Size())
		}
	})
	t.Run("sqlite migrated by a newer shake", func(t *testing.T) {
		db := filepath.Join(t.TempDir(), "ledger.db")
		fundLedger(t, "sqlite://"+db, man, ck)
		sdb, err := sql.Open("sqlite", "file:"+db)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := sdb.Exec(`INSERT INTO schema_migrations (version, name, applied_at) VALUES (999, '0999_future.sql', 0)`); err != nil {
			t.Fatal(err)
		}
		sdb.Close()
		reconcileRefused(t, "newer", "--manifest", man, "--ledger", "sqlite://"+db)
	})

	pg := testpg.URL(t)
	if pg == "" {
		t.Logf("%s unset: the PostgreSQL cases are not run here (CI sets it)", testpg.Env)
		return
	}
	t.Run("postgres database that does not exist", func(t *testing.T) {
		u, err := url.Parse(os.Getenv(testpg.Env))
		if err != nil {
			t.Fatal(err)
		}
		u.Path = fmt.Sprintf("/shake_typo_%d", time.Now().UnixNano())
		reconcileRefused(t, "does not exist", "--manifest", man, "--ledger", u.String())
	})
	t.Run("empty postgres schema", func(t *testing.T) {
		url := testpg.URL(t)
		reconcileRefused(t, "no shake schema", "--manifest", man, "--ledger", url)
		if tables := pgTables(t, url); tables != "" {
			t.Fatalf("reconcile created tables in an empty schema: %s", tables)
		}
	})
	t.Run("postgres funded for another campaign", func(t *testing.T) {
		url := testpg.URL(t)
		fundLedger(t, url, other, ck)
		before := pgTables(t, url)
		reconcileRefused(t, "not registered", "--manifest", man, "--ledger", url)
		if after := pgTables(t, url); after != before {
			t.Fatalf("the schema changed: %s, was %s", after, before)
		}
	})
}

// TestReconcileRefundNeedsKey: --refund moves money, so the manifest it trusts must be
// proven by its signature.
func TestReconcileRefundNeedsKey(t *testing.T) {
	t.Parallel()
	keys := keysDir(t)
	man := genCampaign(t, keys, "cny-2030")
	db := filepath.Join(t.TempDir(), "ledger.db")
	wantUsage(t, []string{"reconcile", "--manifest", man, "--ledger", "sqlite://" + db, "--refund"}, "shake reconcile:", "--key")
	if _, err := os.Stat(db); err == nil {
		t.Fatal("reconcile --refund without --key created the ledger")
	}
}

// TestReconcileWatchNamesTheReason: a watch pointed at a ledger that does not exist
// exports shake_reconcile_ok 0 with the reason, creates nothing, and turns ok once a
// settler has funded the campaign there.
func TestReconcileWatchNamesTheReason(t *testing.T) {
	t.Parallel()
	keys := keysDir(t)
	man := genCampaign(t, keys, "cny-2030")
	ck := filepath.Join(keys, "campaign.key")
	db := filepath.Join(t.TempDir(), "ledger.db")
	addr := freePort(t)
	cmd := exec.Command(shakeBinary(t), "reconcile", "--manifest", man, "--ledger", "sqlite://"+db, "--watch", "100ms", "--listen", addr)
	var logs strings.Builder
	cmd.Stderr = &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	camp := `{campaign="cny-2030"}`
	missing := `shake_reconcile_problem{campaign="cny-2030",reason="ledger_missing"}`
	waitMetric(t, addr, missing, 20*time.Second, func(v float64) bool { return v == 1 })
	if v, ok := metric(addr, "shake_reconcile_ok"+camp); !ok || v != 0 {
		t.Fatalf("shake_reconcile_ok = %v (present %v) for a ledger that does not exist", v, ok)
	}
	if _, err := os.Stat(db); err == nil {
		t.Fatal("the watch created the ledger")
	}
	fundLedger(t, "sqlite://"+db, man, ck)
	waitMetric(t, addr, "shake_reconcile_ok"+camp, 20*time.Second, func(v float64) bool { return v == 1 })
	if v, _ := metric(addr, missing); v != 0 {
		t.Fatalf("%s = %v once the ledger is funded", missing, v)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", err, logs.String())
	}
	if !strings.Contains(logs.String(), "ledger_missing") {
		t.Fatalf("the reason is not logged:\n%s", logs.String())
	}
}
