package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"shake/ticket"
)

// keysDir runs keys init into a fresh directory and returns it.
func keysDir(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "keys")
	if code, _, errOut := runCLI("keys", "init", "--out", dir); code != 0 {
		t.Fatalf("keys init: %d %s", code, errOut)
	}
	return dir
}

// wantUsage checks exit code 2, one line on stderr starting with prefix and naming want.
func wantUsage(t *testing.T, args []string, prefix, want string) {
	t.Helper()
	code, out, errOut := runCLI(args...)
	if code != 2 || out != "" || strings.Count(errOut, "\n") != 1 || !strings.HasPrefix(errOut, prefix) || !strings.Contains(errOut, want) {
		t.Errorf("%v: code %d stdout %q stderr %q (want %q)", args, code, out, errOut, want)
	}
}

func TestKeysInit(t *testing.T) {
	dir := keysDir(t)
	for _, n := range []string{"campaign.key", "session.key", "admin.key", "admin-edge.key", "admin-verifier.key", "admin-settler.key", "admin-query.key"} {
		st, err := os.Stat(filepath.Join(dir, n))
		if err != nil || st.Size() != ticket.KeySize || st.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v %v", n, err, st)
		}
	}
	// Each role key is admin.key's derivation for its role.
	op, _ := ticket.ReadKeyFile(filepath.Join(dir, "admin.key"))
	for _, role := range ticket.AdminRoles {
		got, _ := ticket.ReadKeyFile(filepath.Join(dir, ticket.AdminRoleKeyFile(role)))
		if want, err := ticket.RoleAdminKey(op, role); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("%s is not admin.key's %s key (%v)", ticket.AdminRoleKeyFile(role), role, err)
		}
	}
	a, _ := os.ReadFile(filepath.Join(dir, "campaign.key"))
	b, _ := os.ReadFile(filepath.Join(dir, "session.key"))
	if bytes.Equal(a, b) {
		t.Fatal("both keys are the same")
	}
	wantUsage(t, []string{"keys", "init", "--out", dir}, "shake keys init: --out: ", "already exists")
	after, _ := os.ReadFile(filepath.Join(dir, "campaign.key"))
	if !bytes.Equal(a, after) {
		t.Fatal("campaign.key overwritten")
	}
	// One existing key: neither is written.
	d2 := t.TempDir()
	os.WriteFile(filepath.Join(d2, "session.key"), []byte("x"), 0o600)
	wantUsage(t, []string{"keys", "init", "--out", d2}, "shake keys init: --out: ", "session.key already exists")
	if _, err := os.Stat(filepath.Join(d2, "campaign.key")); err == nil {
		t.Fatal("campaign.key written although session.key existed")
	}
	wantUsage(t, []string{"keys", "init"}, "shake keys init: ", "--out is required")
	wantUsage(t, []string{"keys"}, "shake keys: ", "init")
	wantUsage(t, []string{"keys", "rotate"}, "shake keys: ", `"rotate"`)
}

func TestSessionMint(t *testing.T) {
	dir := keysDir(t)
	kp := filepath.Join(dir, "session.key")
	code, out, errOut := runCLI("session", "mint", "--key", kp, "--uid", "1234", "--ttl", "2h")
	if code != 0 || errOut != "" || !strings.HasSuffix(out, "\n") || strings.Count(out, "\n") != 1 {
		t.Fatalf("code %d out %q err %q", code, out, errOut)
	}
	key, _ := os.ReadFile(kp)
	sk, _ := ticket.NewSessionKey(key)
	tok := []byte(strings.TrimSpace(out))
	uid, err := sk.Verify(tok, time.Now().Unix())
	if err != nil || uid != 1234 {
		t.Fatalf("minted token: %d %v", uid, err)
	}
	if _, err := sk.Verify(tok, time.Now().Add(2*time.Hour+time.Minute).Unix()); err == nil {
		t.Fatal("token outlives --ttl")
	}
	code, out, _ = runCLI("session", "mint", "--key", kp, "--uid", "1234", "--device", "phone_A-1", "--risk", "6")
	var sess ticket.Session
	if err := sk.VerifySession([]byte(strings.TrimSpace(out)), time.Now().Unix(), &sess); code != 0 || err != nil ||
		sess.UID != 1234 || string(sess.Device) != "phone_A-1" || sess.Risk != 6 {
		t.Fatalf("minted token with attributes: %d %q %+v %v", code, out, sess, err)
	}
	wantUsage(t, []string{"session", "mint", "--key", kp, "--uid", "1", "--device", "a.b"}, "shake session mint: --device", "A-Za-z0-9_-")
	wantUsage(t, []string{"session", "mint", "--key", kp, "--uid", "1", "--device", strings.Repeat("x", 65)}, "shake session mint: --device", "64")
	wantUsage(t, []string{"session", "mint", "--key", kp, "--uid", "1", "--risk", "10"}, "shake session mint: --risk", "0 and 9")
	wantUsage(t, []string{"session", "mint", "--key", kp, "--uid", "1", "--risk", "-1"}, "shake session mint: --risk", "0 and 9")
	wantUsage(t, []string{"session", "mint", "--key", kp, "--uid", "-1"}, "shake session mint: --uid", "decimal")
	wantUsage(t, []string{"session", "mint", "--key", kp, "--uid", "007"}, "shake session mint: --uid", "decimal")
	wantUsage(t, []string{"session", "mint", "--key", kp}, "shake session mint: ", "--uid is required")
	wantUsage(t, []string{"session", "mint", "--key", filepath.Join(dir, "nope"), "--uid", "1"}, "shake session mint: --key", "nope")
	wantUsage(t, []string{"session", "mint", "--key", kp, "--uid", "1", "--ttl", "0s"}, "shake session mint: --ttl", "1s")
	wantUsage(t, []string{"session"}, "shake session: ", "mint")
}

func genArgs(keys, out string, extra ...string) []string {
	return append([]string{"gen", "--campaign", "cny-2030", "--key", filepath.Join(keys, "campaign.key"),
		"--budget", "100000", "--count", "1000", "--edges", "4", "--out", out}, extra...)
}

func TestGenAndInspect(t *testing.T) {
	t.Parallel()
	keys := keysDir(t)
	out := filepath.Join(t.TempDir(), "camp")
	code, stdout, errOut := runCLI(genArgs(keys, out, "--seed", "9", "--weights", "1,2,3,4",
		"--round", "2030-01-28T12:00:00Z/2030-01-28T12:05:00Z", "--round", "2030-01-28T13:00:00+08:00/2030-01-28T13:05:00+08:00"[0:0]+"2030-01-28T13:00:00Z/2030-01-28T13:05:00Z",
		"--min", "10", "--max", "500", "--ttl", "48h", "--currency", "USD")...)
	if code != 0 || errOut != "" || !strings.Contains(stdout, "1000 tickets") {
		t.Fatalf("gen: %d %q %q", code, stdout, errOut)
	}
	m, err := ticket.LoadManifest(filepath.Join(out, "manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	if m.Currency != "USD" || m.Min != 10 || m.Max != 500 || m.TTL != "48h0m0s" || len(m.Rounds) != 2 || m.Seed != nil || len(m.SeedSHA256) != 64 ||
		m.Shards[3].Count != 400 || m.Shards[0].Count != 100 {
		t.Fatalf("manifest %+v", m)
	}
	code, stdout, errOut = runCLI("inspect", "--key", filepath.Join(keys, "campaign.key"), filepath.Join(out, "manifest.json"))
	if code != 0 || errOut != "" || !strings.Contains(stdout, "OK: every check passed") || !strings.Contains(stdout, "4 shard key files match") {
		t.Fatalf("inspect manifest: %d\n%s\n%s", code, stdout, errOut)
	}
	shard := filepath.Join(out, "edge-002.tickets")
	code, stdout, _ = runCLI("inspect", shard, "--key", filepath.Join(keys, "campaign.key"))
	if code != 0 || !strings.Contains(stdout, "300 checked, 0 bad") || !strings.Contains(stdout, "shard     2 of 4") {
		t.Fatalf("inspect shard: %d\n%s", code, stdout)
	}

	// Wrong key: every MAC fails, exit 1.
	other := keysDir(t)
	code, stdout, errOut = runCLI("inspect", "--key", filepath.Join(other, "campaign.key"), shard)
	if code != 1 || !strings.Contains(stdout, "FAILED") || !strings.Contains(errOut, "problem") {
		t.Fatalf("wrong key: %d\n%s\n%s", code, stdout, errOut)
	}
	// One flipped byte: exit 1 for the shard and for the manifest.
	orig, _ := os.ReadFile(shard)
	bad := bytes.Clone(orig)
	bad[len(bad)/2] ^= 1
	os.WriteFile(shard, bad, 0o644)
	if code, _, _ := runCLI("inspect", shard); code != 1 {
		t.Fatalf("flipped shard: exit %d", code)
	}
	if code, _, _ := runCLI("inspect", filepath.Join(out, "manifest.json")); code != 1 {
		t.Fatalf("manifest with a flipped shard: exit %d", code)
	}
	os.WriteFile(shard, orig, 0o644)

	wantUsage(t, []string{"inspect"}, "shake inspect: ", "expected 1 argument")
	wantUsage(t, []string{"inspect", filepath.Join(out, "nope.tickets")}, "shake inspect: ", "nope.tickets")
	wantUsage(t, []string{"inspect", "--key", filepath.Join(out, "nope.key"), shard}, "shake inspect: --key", "nope.key")
	// gen refuses to overwrite a campaign.
	wantUsage(t, genArgs(keys, out), "shake gen: --out", "already exists")
}

func TestGenReproducibleWithSeed(t *testing.T) {
	t.Parallel()
	keys := keysDir(t)
	load := func(seed string) []ticket.Record {
		out := t.TempDir()
		if code, _, errOut := runCLI(genArgs(keys, out, "--seed", seed)...); code != 0 {
			t.Fatal(errOut)
		}
		var all []ticket.Record
		for i := 0; i < 4; i++ {
			sh, err := ticket.LoadShard(filepath.Join(out, "edge-00"+string(rune('0'+i))+".tickets"))
			if err != nil {
				t.Fatal(err)
			}
			all = append(all, sh.Records...)
		}
		return all
	}
	a, b, c := load("77"), load("77"), load("78")
	eq := func(x, y []ticket.Record) bool {
		if len(x) != len(y) {
			return false
		}
		// The seed fixes the amounts; MACs differ because every run is a new generation.
		for i := range x {
			if x[i].Amount != y[i].Amount {
				return false
			}
		}
		return true
	}
	if !eq(a, b) || eq(a, c) {
		t.Fatal("--seed does not make runs reproducible")
	}
}

func TestGenBadInput(t *testing.T) {
	keys := keysDir(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--budget", "999"}, "--budget"},
		{[]string{"--max", "10", "--budget", "10001"}, "--budget"},
		{[]string{"--budget", "-5"}, "--budget"},
		{[]string{"--count", "0"}, "--count"},
		{[]string{"--edges", "0"}, "--edges"},
		{[]string{"--edges", "1001"}, "--edges"},
		{[]string{"--min", "0"}, "--min"},
		{[]string{"--min", "20", "--max", "10"}, "--max"},
		{[]string{"--weights", "1,2,x,4"}, "--weights"},
		{[]string{"--weights", "1,2,3"}, "--weights"},
		{[]string{"--weights", "1,0,1,1"}, "--weights"},
		{[]string{"--round", "2030-01-01T00:00:00Z"}, "-round"},
		{[]string{"--round", "yesterday/today"}, "-round"},
		{[]string{"--round", "2030-01-01T01:00:00Z/2030-01-01T00:00:00Z"}, "-round"},
		{[]string{"--round", "2030-01-01T00:00:00Z/2030-01-01T02:00:00Z", "--round", "2030-01-01T01:00:00Z/2030-01-01T03:00:00Z"}, "--round"},
		{[]string{"--ttl", "0s"}, "--ttl"},
		{[]string{"--ttl", "soon"}, "-ttl"},
		{[]string{"--campaign", "Big_Party"}, "--campaign"},
		{[]string{"--currency", "rmb"}, "--currency"},
		{[]string{"--key", filepath.Join(keys, "missing.key")}, "--key"},
		{[]string{"--count", "ten"}, "-count"},
		{[]string{"stray"}, "stray"},
		{[]string{"--per-device", "-1"}, "--per-device"},
		{[]string{"--per-device", "65536"}, "--per-device"},
		{[]string{"--max-risk", "10"}, "--max-risk"},
		{[]string{"--max-risk", "-1"}, "--max-risk"},
		{[]string{"--prize", "888"}, "-prize"},
		{[]string{"--prize", "0x8"}, "-prize"},
		{[]string{"--prize", "888x0"}, "-prize"},
		{[]string{"--prize", "88xx8"}, "-prize"},
		{[]string{"--prize", "100001x1"}, "--prize"},                       // more than the budget
		{[]string{"--prize", "1x1001"}, "--prize"},                         // more than the count
		{[]string{"--prize", "50000x2"}, "--prize"},                        // nothing left for the other 998
		{[]string{"--prize", "100x1000", "--budget", "100001"}, "--prize"}, // every ticket, money left over
	} {
		out := filepath.Join(t.TempDir(), "out")
		wantUsage(t, genArgs(keys, out, tc.args...), "shake gen: ", tc.want)
		if _, err := os.Stat(out); err == nil {
			ents, _ := os.ReadDir(out)
			if len(ents) != 0 {
				t.Errorf("%v: wrote %v", tc.args, ents)
			}
		}
	}
	wantUsage(t, []string{"gen", "--campaign", "c1"}, "shake gen: ", "--key is required")
	if code, _, errOut := runCLI("gen", "-h"); code != 0 || !strings.Contains(errOut, "double-mean") {
		t.Fatalf("gen -h: %d", code)
	}
}

// TestBinary runs the real binary once: exit codes and streams as a user sees them.
func TestBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	dir := t.TempDir()
	if c, _, e := runBinary(t, "keys", "init", "--out", dir); c != 0 {
		t.Fatal(e)
	}
	c, _, e := runBinary(t, genArgs(dir, filepath.Join(dir, "camp"), "--count", "20000")...)
	// Not a terminal: no progress line.
	if c != 0 || e != "" {
		t.Fatalf("gen: %d %q", c, e)
	}
	if c, _, _ := runBinary(t, "inspect", filepath.Join(dir, "camp", "manifest.json")); c != 0 {
		t.Fatalf("inspect exit %d", c)
	}
	if c, _, e := runBinary(t, genArgs(dir, filepath.Join(dir, "x"), "--budget", "1")...); c != 2 || !strings.Contains(e, "--budget") {
		t.Fatalf("bad budget: %d %q", c, e)
	}
}
