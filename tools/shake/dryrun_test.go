package main

import (
	"context"
	"database/sql"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"shake/internal/testpg"
	"shake/settler"
	"shake/settler/ledger"
	"shake/ticket"
)

// treeState describes every file and directory under roots (name, mode, size, mtime),
// so that a test can prove a dry run changed nothing.
func treeState(t *testing.T, roots ...string) string {
	t.Helper()
	var lines []string
	for _, root := range roots {
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			fi, err := d.Info()
			if err != nil {
				return err
			}
			lines = append(lines, fmt.Sprintf("%s %v %d %d", p, fi.Mode(), fi.Size(), fi.ModTime().UnixNano()))
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// dryRunCase is one configuration given to a server's --dry-run: the extra or replaced
// flags, and the exit code and message wanted.
type dryRunCase struct {
	name string
	args []string
	want string // a substring of the one error line (code 2)
}

// withFlags returns base with each --flag VALUE of over replacing base's (or added);
// a value "" removes the flag.
func withFlags(base []string, over ...string) []string {
	out := append([]string(nil), base...)
	for i := 0; i+1 < len(over); i += 2 {
		name, val := over[i], over[i+1]
		found := false
		for j := 0; j < len(out); j++ {
			if out[j] == name {
				found = true
				if j+1 < len(out) && !strings.HasPrefix(out[j+1], "--") {
					if val == "" {
						out = append(out[:j], out[j+2:]...)
					} else {
						out[j+1] = val
					}
				} else if val == "" {
					out = append(out[:j], out[j+1:]...)
				}
				break
			}
		}
		if !found && val != "" {
			if val == "true" {
				out = append(out, name)
			} else {
				out = append(out, name, val)
			}
		}
	}
	return out
}

// runDryRuns runs the good configuration (exit 0, nothing under roots changed, an ok
// line per check) and every bad one (exit 2, one line on stderr with the wanted text,
// nothing changed either).
func runDryRuns(t *testing.T, good []string, wantOK []string, cases []dryRunCase, roots ...string) {
	t.Helper()
	before := treeState(t, roots...)
	code, out, errOut := runBinary(t, append(good, "--dry-run")...)
	if code != 0 {
		t.Fatalf("good config: exit %d\nstdout:\n%s\nstderr:\n%s", code, out, errOut)
	}
	for _, w := range append(wantOK, "every check passed") {
		if !strings.Contains(out, w) {
			t.Errorf("good config: no %q in the output:\n%s", w, out)
		}
	}
	if after := treeState(t, roots...); after != before {
		t.Fatalf("the dry run changed the files:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			code, out, errOut := runBinary(t, append(c.args, "--dry-run")...)
			var errs []string
			for _, l := range strings.Split(strings.TrimSpace(errOut), "\n") {
				if strings.HasPrefix(l, "shake ") {
					errs = append(errs, l)
				}
			}
			if code != 2 || len(errs) != 1 || !strings.Contains(errs[0], c.want) {
				t.Fatalf("exit %d, want 2 with one line containing %q\nstdout:\n%s\nstderr:\n%s", code, c.want, out, errOut)
			}
			if strings.Contains(out, "every check passed") {
				t.Fatalf("a failed dry run says every check passed:\n%s", out)
			}
		})
	}
	t.Cleanup(func() {
		if after := treeState(t, roots...); after != before {
			t.Errorf("a bad-config dry run changed the files:\nbefore:\n%s\nafter:\n%s", before, after)
		}
	})
}

// holdPort binds a loopback port for the test's life: an address that cannot be bound.
func holdPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln.Addr().String()
}

// writeFile writes b to a new file under dir and returns its path.
func writeTestFile(t *testing.T, dir, name string, b []byte, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b, mode); err != nil {
		t.Fatal(err)
	}
	return p
}

// corruptCopy copies src to dir/name with one byte flipped in its middle.
func corruptCopy(t *testing.T, src, dir, name string) string {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 0x40
	return writeTestFile(t, dir, name, b, 0o600)
}

func TestDryRunEdge(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("whole-process test")
	}
	f := newCampaign(t, 200, 2)
	work := t.TempDir()
	// A state file that exists: a real first start with --init-state, stopped cleanly.
	state := filepath.Join(work, "edge.state")
	first := withFlags(f.edgeArgs(t, 0), "--state", state)
	p := startServer(t, 0, first...)
	p.waitLine(t, edgeReadyRE, 20*time.Second)
	// While it runs, its state file is locked: a dry run says so.
	resume := withFlags(first, "--init-state", "", "--listen", "127.0.0.1:0")
	code, _, errOut := runBinary(t, append(resume, "--dry-run")...)
	if code != 2 || !strings.Contains(errOut, "an edge is running on it") {
		t.Fatalf("dry run on a running edge's state: exit %d %s", code, errOut)
	}
	if c := p.stop(t, syscall.SIGTERM); c != 0 {
		t.Fatalf("edge exit %d", c)
	}
	badSwitches := writeTestFile(t, work, "bad-switches.json", []byte(`{"version":1,"edge":{"shed_ratio":7}}`), 0o600)
	fresh := filepath.Join(work, "fresh.state")
	cases := []dryRunCase{
		{"state missing", withFlags(resume, "--state", fresh), "does not exist"},
		{"state exists with init-state", withFlags(resume, "--init-state", "true"), "already exists"},
		{"state of another shard", withFlags(f.edgeArgs(t, 1), "--state", state, "--init-state", ""), "another shard"},
		{"key of another shard", withFlags(resume, "--key", filepath.Join(f.out, "edge-001.key")), "--key"},
		{"corrupt shard", withFlags(resume, "--tickets", corruptCopy(t, filepath.Join(f.out, "edge-000.tickets"), work, "edge-000.tickets")), "--tickets"},
		{"bad session key", withFlags(resume, "--session-key", writeTestFile(t, work, "short.key", []byte("short"), 0o600)), "--session-key"},
		{"bad switches", withFlags(resume, "--switches", badSwitches), "--switches"},
		{"listen busy", withFlags(resume, "--listen", holdPort(t)), "--listen"},
		{"admin listen busy", withFlags(resume, "--admin-listen", holdPort(t)), "--admin-listen"},
	}
	good := withFlags(resume, "--switches", filepath.Join(work, "switches.json"))
	runDryRuns(t, good, []string{"ok    shard", "seals and opens", "stopped cleanly", "does not exist yet", "can be bound"}, cases, f.dir, work)
	// With --init-state on a fresh path: nothing is created.
	code, out, errOut := runBinary(t, append(withFlags(resume, "--state", fresh, "--init-state", "true"), "--dry-run")...)
	if code != 0 || !strings.Contains(out, "--init-state creates it") {
		t.Fatalf("dry run with --init-state: exit %d\n%s%s", code, out, errOut)
	}
	if _, err := os.Stat(fresh); err == nil {
		t.Fatal("the dry run created the state file")
	}
}

// dryRunBroker is a one-broker embedded Kafka with the claims topic and its .dlq.
func dryRunBroker(t *testing.T) string {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(2, "shake.claims", "shake.claims.dlq"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c.ListenAddrs()[0]
}

func TestDryRunVerifier(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("whole-process test")
	}
	f := newCampaign(t, 200, 2)
	other := newCampaign(t, 10, 1)
	broker := dryRunBroker(t)
	work := t.TempDir()
	spool := filepath.Join(work, "spool")
	good := []string{"verifier", "--manifest", filepath.Join(f.out, "manifest.json"), "--key", f.key("campaign.key"),
		"--session-key", f.key("session.key"), "--brokers", broker, "--min-replication", "1", "--spool", spool,
		"--listen", "127.0.0.1:0", "--admin-key", f.key("admin-verifier.key")}
	notDir := writeTestFile(t, work, "a-file", []byte("x"), 0o600)
	cases := []dryRunCase{
		// The manifest's signature does not hold under another campaign's key: the
		// manifest is named, as in the settler's dry run.
		{"campaign key of another campaign", withFlags(good, "--key", other.key("campaign.key")), "--manifest: "},
		{"campaign key missing", withFlags(good, "--key", filepath.Join(work, "no.key")), "--key: "},
		{"bad session key", withFlags(good, "--session-key", writeTestFile(t, work, "short.key", []byte("short"), 0o600)), "--session-key: "},
		{"tampered manifest", withFlags(good, "--manifest", corruptCopy(t, filepath.Join(f.out, "manifest.json"), work, "manifest.json")), "--manifest"},
		{"spool not a directory", withFlags(good, "--spool", filepath.Join(notDir, "spool")), "--spool"},
		{"topic missing", withFlags(good, "--topic", "shake.other"), "shake.other"},
		{"kafka unreachable", withFlags(good, "--brokers", freePort(t)), "--brokers: Kafka unreachable"},
		{"replication too low", withFlags(good, "--min-replication", "3"), "--min-replication"},
		{"admin listen busy", withFlags(good, "--admin-listen", holdPort(t)), "--admin-listen"},
	}
	runDryRuns(t, good, []string{"ok    manifest", "signature valid", "does not exist: a start creates it", "ok    topics"}, cases, f.dir, work)
	if _, err := os.Stat(spool); err == nil {
		t.Fatal("the dry run created the spool")
	}
}

func TestDryRunSettler(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("whole-process test")
	}
	f := newCampaign(t, 200, 2)
	broker := dryRunBroker(t)
	work := t.TempDir()
	good := []string{"settler", "--manifest", filepath.Join(f.out, "manifest.json"), "--key", f.key("campaign.key"),
		"--brokers", broker, "--min-replication", "1", "--ledger", "sqlite://" + filepath.Join(work, "ledger.db"),
		"--listen", "127.0.0.1:0"}
	// A ledger that settles another generation of the same campaign id.
	regen := filepath.Join(work, "regen")
	if code, _, e := runCLI("gen", "--campaign", "ctl", "--key", f.key("campaign.key"), "--budget", "20000", "--count", "200",
		"--edges", "2", "--out", regen, "--seed", "99"); code != 0 {
		t.Fatalf("gen: %s", e)
	}
	otherGen := filepath.Join(work, "other-gen.db")
	registerLedger(t, "sqlite://"+otherGen, filepath.Join(regen, "manifest.json"), f.key("campaign.key"))
	current := filepath.Join(work, "current.db")
	registerLedger(t, "sqlite://"+current, filepath.Join(f.out, "manifest.json"), f.key("campaign.key"))
	newer := filepath.Join(work, "newer.db")
	registerLedger(t, "sqlite://"+newer, filepath.Join(f.out, "manifest.json"), f.key("campaign.key"))
	execSQLite(t, newer, `INSERT INTO schema_migrations VALUES (99, '0099_future.sql', 0)`)
	cases := []dryRunCase{
		{"other generation", withFlags(good, "--ledger", "sqlite://"+otherGen), "--manifest: the ledger settles another generation"},
		{"newer schema", withFlags(good, "--ledger", "sqlite://"+newer), "newer than this shake knows"},
		{"postgres unreachable", withFlags(good, "--ledger", closedPortLedger(t)), "--ledger: unreachable"},
		{"ledger dir missing", withFlags(good, "--ledger", "sqlite://"+filepath.Join(work, "no", "such", "ledger.db")), "--ledger"},
		{"manifest with another key", withFlags(good, "--key", newCampaign(t, 10, 1).key("campaign.key")), "--manifest"},
		{"kafka unreachable", withFlags(good, "--brokers", freePort(t)), "--brokers: Kafka unreachable"},
		{"listen busy", withFlags(good, "--listen", holdPort(t)), "--listen"},
	}
	runDryRuns(t, good, []string{"ok    manifest", "headers match the manifest", "does not exist yet: a start creates it", "not registered", "ok    topics"}, cases, f.dir, work)
	if _, err := os.Stat(filepath.Join(work, "ledger.db")); err == nil {
		t.Fatal("the dry run created the ledger")
	}
	code, out, errOut := runBinary(t, append(withFlags(good, "--ledger", "sqlite://"+current), "--dry-run")...)
	if code != 0 || !strings.Contains(out, "schema version") || !strings.Contains(out, "settles campaign ctl generation") {
		t.Fatalf("dry run on a registered ledger: exit %d\n%s%s", code, out, errOut)
	}
	if pg := testpg.URL(t); pg != "" {
		before := treeState(t, work)
		code, out, errOut := runBinary(t, append(withFlags(good, "--ledger", pg), "--dry-run")...)
		if code != 0 || !strings.Contains(out, "a start migrates it") {
			t.Fatalf("dry run on an empty PostgreSQL schema: exit %d\n%s%s", code, out, errOut)
		}
		registerLedger(t, pg, filepath.Join(f.out, "manifest.json"), f.key("campaign.key"))
		code, out, errOut = runBinary(t, append(withFlags(good, "--ledger", pg), "--dry-run")...)
		if code != 0 || !strings.Contains(out, "(current)") || !strings.Contains(out, "settles campaign ctl") {
			t.Fatalf("dry run on a registered PostgreSQL ledger: exit %d\n%s%s", code, out, errOut)
		}
		if treeState(t, work) != before {
			t.Fatal("the PostgreSQL dry runs changed local files")
		}
	}
}

// registerLedger opens (migrates) the ledger at url and registers the manifest's
// campaign in it, as a settler's start does.
func registerLedger(t *testing.T, url, manifest, keyFile string) {
	t.Helper()
	key, err := ticket.ReadKeyFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	m, err := ticket.LoadManifestKey(manifest, key)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	l, err := ledger.Open(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if err := settler.Register(ctx, m, l); err != nil {
		t.Fatal(err)
	}
}

func execSQLite(t *testing.T, path, stmt string) {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(stmt); err != nil {
		t.Fatal(err)
	}
}

func TestDryRunQuery(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("whole-process test")
	}
	f := newCampaign(t, 20, 1)
	work := t.TempDir()
	db := filepath.Join(work, "ledger.db")
	registerLedger(t, "sqlite://"+db, filepath.Join(f.out, "manifest.json"), f.key("campaign.key"))
	empty := writeTestFile(t, work, "empty.db", nil, 0o600)
	good := []string{"query", "--ledger", "sqlite://" + db, "--session-key", f.key("session.key"), "--listen", "127.0.0.1:0"}
	cases := []dryRunCase{
		{"ledger missing", withFlags(good, "--ledger", "sqlite://"+filepath.Join(work, "none.db")), "--ledger"},
		{"ledger not migrated", withFlags(good, "--ledger", "sqlite://"+empty), "--ledger"},
		{"postgres unreachable", withFlags(good, "--ledger", closedPortLedger(t)), "--ledger"},
		{"bad session key", withFlags(good, "--session-key", writeTestFile(t, work, "short.key", []byte("x"), 0o600)), "--session-key"},
		{"listen busy", withFlags(good, "--listen", holdPort(t)), "--listen"},
	}
	runDryRuns(t, good, []string{"ok    ledger", "ok    listen", "ok    admin-listen"}, cases, f.dir, work)
}

func TestDryRunReconcile(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("whole-process test")
	}
	f := newCampaign(t, 50, 2)
	work := t.TempDir()
	manifest := filepath.Join(f.out, "manifest.json")
	db := filepath.Join(work, "ledger.db")
	registerLedger(t, "sqlite://"+db, manifest, f.key("campaign.key"))
	newer := filepath.Join(work, "newer.db")
	registerLedger(t, "sqlite://"+newer, manifest, f.key("campaign.key"))
	execSQLite(t, newer, `INSERT INTO schema_migrations VALUES (99, '0099_future.sql', 0)`)
	alone := filepath.Join(work, "alone")
	if err := os.MkdirAll(alone, 0o755); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(manifest)
	if err != nil {
		t.Fatal(err)
	}
	lonely := writeTestFile(t, alone, "manifest.json", b, 0o644)
	good := []string{"reconcile", "--manifest", manifest, "--key", f.key("campaign.key"), "--ledger", "sqlite://" + db,
		"--watch", "1s", "--listen", "127.0.0.1:0"}
	cases := []dryRunCase{
		{"shard files missing", withFlags(good, "--manifest", lonely), "--manifest"},
		{"newer schema", withFlags(good, "--ledger", "sqlite://"+newer), "newer than this shake knows"},
		{"postgres unreachable", withFlags(good, "--ledger", closedPortLedger(t)), "--ledger: unreachable"},
		{"listen busy", withFlags(good, "--listen", holdPort(t)), "--listen"},
	}
	runDryRuns(t, good, []string{"signature valid", "ok    shards", "(current)", "settles campaign ctl", "ok    listen"}, cases, f.dir, work)
}
