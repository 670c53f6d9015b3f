package main

import (
	"encoding/json"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"shake/ticket"
)

// TestAdminTokenPerRole: `shake admin token` prints the token of a role key, and of the
// operator's key only for a named role.
func TestAdminTokenPerRole(t *testing.T) {
	dir := keysDir(t)
	op, _ := ticket.ReadKeyFile(filepath.Join(dir, "admin.key"))
	for _, role := range ticket.AdminRoles {
		want, _ := ticket.TokenForRole(op, role)
		code, out, e := runCLI("admin", "token", "--key", filepath.Join(dir, ticket.AdminRoleKeyFile(role)))
		if code != 0 || strings.TrimSpace(out) != want {
			t.Errorf("admin token --key admin-%s.key: %d %q %s", role, code, out, e)
		}
		code, out, e = runCLI("admin", "token", "--key", filepath.Join(dir, "admin.key"), "--role", role)
		if code != 0 || strings.TrimSpace(out) != want {
			t.Errorf("admin token --key admin.key --role %s: %d %q %s", role, code, out, e)
		}
	}
	// The operator's key without --role: its own token, which no server accepts, said.
	code, out, e := runCLI("admin", "token", "--key", filepath.Join(dir, "admin.key"))
	if code != 0 || strings.TrimSpace(out) != ticket.AdminToken(op) || !strings.Contains(e, "no server accepts this token") ||
		!strings.HasSuffix(e, "for the token servers of that role accept\n") {
		t.Errorf("admin token --key admin.key: %d %q %q", code, out, e)
	}
	wantUsage(t, []string{"admin", "token", "--key", filepath.Join(dir, "admin-edge.key"), "--role", "verifier"}, "shake admin token: --key: ", "edge's admin key")
	wantUsage(t, []string{"admin", "token", "--key", filepath.Join(dir, "admin.key"), "--role", "boss"}, "shake admin token: ", "--role")
}

// TestServersRefuseAnotherRolesKey: a server given the operator's admin.key or another
// role's key does not start, and names the key to give it.
func TestServersRefuseAnotherRolesKey(t *testing.T) {
	f := newCampaign(t, 10, 1)
	man := filepath.Join(f.out, "manifest.json")
	verifier := []string{"verifier", "--manifest", man, "--key", f.key("campaign.key"), "--session-key", f.key("session.key"),
		"--brokers", "127.0.0.1:1", "--spool", t.TempDir(), "--listen", "127.0.0.1:0"}
	settler := []string{"settler", "--brokers", "127.0.0.1:1", "--ledger", "sqlite://" + filepath.Join(t.TempDir(), "l.db"),
		"--manifest", man, "--key", f.key("campaign.key"), "--listen", "127.0.0.1:0"}
	query := []string{"query", "--ledger", "sqlite://" + filepath.Join(t.TempDir(), "none.db"), "--session-key", f.key("session.key")}
	watch := []string{"reconcile", "--manifest", man, "--ledger", "sqlite://" + filepath.Join(t.TempDir(), "none.db"), "--watch", "1s"}
	cases := []struct {
		args      []string
		key, want string
	}{
		{query, "admin.key", "give the query admin-query.key"},
		{query, "admin-settler.key", "is the settler's admin key: give the query admin-query.key"},
		{watch, "admin.key", "give the query admin-query.key"},
		{f.edgeArgs(t, 0), "admin.key", "give the edge admin-edge.key"},
		{f.edgeArgs(t, 0), "admin-verifier.key", "is the verifier's admin key: give the edge admin-edge.key"},
		{verifier, "admin.key", "give the verifier admin-verifier.key"},
		{verifier, "admin-edge.key", "is the edge's admin key: give the verifier admin-verifier.key"},
		{settler, "admin.key", "give the settler admin-settler.key"},
		{settler, "admin-edge.key", "is the edge's admin key: give the settler admin-settler.key"},
	}
	for _, c := range cases {
		code, _, e := runCLI(append(append([]string{}, c.args...), "--admin-key", f.key(c.key))...)
		if code != 2 || !strings.Contains(e, "--admin-key") || !strings.Contains(e, c.want) || strings.Count(e, "\n") != 1 {
			t.Errorf("%s with %s: exit %d %q, want 2 naming %q", c.args[0], c.key, code, e, c.want)
		}
	}
}

// TestCtlTellsTheTruthPerRole runs an edge, a verifier and a settler, each with its own
// role key: every admin /healthz names its role; the edge's token changes neither the
// verifier nor the settler; `ctl pause` sent to the verifier and the settler only exits
// 1, each line naming the role, and says edge.paused reached no edge; show needs no key.
func TestCtlTellsTheTruthPerRole(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("whole-process test")
	}
	c := startChain(t, 200, 1)
	f, roles := c.f, map[string]string{c.edgeAdmins[0]: "edge", c.verAdm: "verifier", c.settlerAdm: "settler"}
	for adm, role := range roles {
		if code, body := get(t, "http://"+adm+"/healthz"); code != 200 || body != `{"status":"ok","role":"`+role+`"}` {
			t.Errorf("%s /healthz: %d %s", role, code, body)
		}
	}

	// The attacker's steps: the token printed from the edge's key, PUT to the others.
	edgeTok := strings.TrimSpace(must(runCLI("admin", "token", "--key", f.key("admin-edge.key"))))
	for _, adm := range []string{c.verAdm, c.settlerAdm} {
		code, body := adminDo(t, "PUT", "http://"+adm+"/admin/switches", edgeTok,
			`{"version":99,"verifier":{"open_paused":true},"settler":{"paused":true}}`)
		if code != 401 {
			t.Errorf("%s: PUT with the edge's token: %d %s, want 401", roles[adm], code, body)
		}
		if d := switchesOf(t, adm); d.Version != 0 || d.Verifier.OpenPaused || d.Settler.Paused {
			t.Errorf("%s changed by the edge's key: %s", roles[adm], d.JSON())
		}
	}
	servers := "http://" + c.verAdm + ",http://" + c.settlerAdm
	code, out, e := runCLI("ctl", "--admin-key", f.key("admin-edge.key"), "--servers", servers, "set", "verifier.open_paused=true")
	if code != 1 || switchesOf(t, c.verAdm).Verifier.OpenPaused {
		t.Errorf("ctl with the edge's key on a verifier: exit %d\n%s%s", code, out, e)
	}

	// ctl pause to servers none of which is an edge: exit 1, each line naming its role.
	code, out, e = runCLI("ctl", "--admin-key", f.key("admin.key"), "--servers", servers, "pause")
	if code != 1 {
		t.Errorf("ctl pause on a verifier and a settler: exit %d, want 1\n%s%s", code, out, e)
	}
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`(?m)^http://` + regexp.QuoteMeta(c.verAdm) + ` verifier ok version 1 applies: nothing`),
		regexp.MustCompile(`(?m)^http://` + regexp.QuoteMeta(c.settlerAdm) + ` settler ok version 1 applies: nothing`),
		regexp.MustCompile(`(?m)^edge\.paused reached 0 edges$`),
	} {
		if !want.MatchString(out) {
			t.Errorf("ctl pause output lacks %s:\n%s", want, out)
		}
	}
	// With the edge among them it reaches one edge and exits 0.
	all := []string{c.edgeAdmins[0], c.verAdm, c.settlerAdm}
	out = ctl(t, f.keys, all, "resume")
	if !strings.Contains(out, " edge ok version 2 applies: edge.paused") || !strings.Contains(out, "edge.paused reached 1 edge\n") {
		t.Errorf("ctl resume:\n%s", out)
	}

	switchesCheckedAgainstCampaign(t, c)

	// show: no key needed; a table by default, JSON with --json.
	code, out, e = runCLI("ctl", "--servers", strings.Join(all, ","), "show")
	if code != 0 || !regexp.MustCompile(`(?m)^SERVER +ROLE +VERSION +SWITCHES$`).MatchString(out) ||
		!regexp.MustCompile(`(?m)^http://\S+ +verifier +2 +open_paused=false`).MatchString(out) {
		t.Errorf("ctl show: exit %d\n%s%s", code, out, e)
	}
	code, out, e = runCLI("ctl", "--servers", strings.Join(all, ","), "show", "--json")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != 3 {
		t.Fatalf("ctl show --json: exit %d\n%s%s", code, out, e)
	}
	for i, l := range lines {
		var row struct {
			Server, Role string
			Version      uint64
			Switches     ticket.Switches
		}
		if err := json.Unmarshal([]byte(l), &row); err != nil || row.Role != roles[all[i]] || row.Version != 2 || row.Switches.Version != 2 {
			t.Errorf("ctl show --json line %q: %+v %v", l, row, err)
		}
	}
}

// must returns the stdout of a runCLI call (for a command the test expects to work).
func must(code int, stdout, stderr string) string {
	if code != 0 {
		return "exit " + stderr
	}
	return stdout
}

// switchesCheckedAgainstCampaign: on the chain's campaign (one shard, no timed rounds) a
// shard or a round it does not have is 400 naming the field, ctl says the change
// failed, and nothing is recorded.
func switchesCheckedAgainstCampaign(t *testing.T, c *chain) {
	t.Helper()
	f := c.f
	verTok := strings.TrimSpace(must(runCLI("admin", "token", "--key", f.key("admin-verifier.key"))))
	code, body := adminDo(t, "PUT", "http://"+c.verAdm+"/admin/switches", verTok, `{"version":3,"verifier":{"revoked_shards":[1]}}`)
	if code != 400 || !strings.Contains(body, `"field":"verifier.revoked_shards"`) {
		t.Errorf("PUT revoking unknown shard 1: %d %s, want 400 naming verifier.revoked_shards", code, body)
	}
	edgeTok := strings.TrimSpace(must(runCLI("admin", "token", "--key", f.key("admin-edge.key"))))
	for doc, field := range map[string]string{`{"version":3,"edge":{"closed_rounds":[1]}}`: "edge.closed_rounds",
		`{"version":3,"verifier":{"revoked_shards":[1]}}`: "verifier.revoked_shards"} {
		if code, body = adminDo(t, "PUT", "http://"+c.edgeAdmins[0]+"/admin/switches", edgeTok, doc); code != 400 || !strings.Contains(body, `"field":"`+field+`"`) {
			t.Errorf("edge: PUT %s: %d %s, want 400 naming %s", doc, code, body, field)
		}
	}
	code, out, e := runCLI("ctl", "--admin-key", f.key("admin.key"), "--servers", c.verAdm, "set", "verifier.revoked_shards=1")
	if code != 1 || !strings.Contains(out, "verifier.revoked_shards") || !strings.Contains(out, "verifier.revoked_shards reached 0 verifiers") {
		t.Errorf("ctl revoking unknown shard 1: exit %d\n%s%s", code, out, e)
	}
	if d := switchesOf(t, c.verAdm); d.Version != 2 || len(d.Verifier.RevokedShards) != 0 {
		t.Errorf("a refused document was recorded: %s", d.JSON())
	}

}
