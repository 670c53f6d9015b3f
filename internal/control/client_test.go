package control

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/valyala/fasthttp"

	"shake/internal/obs"
	"shake/ticket"
)

// roleServer is a real admin listener of one role with its switches store, recording
// the Authorization header of every request it is sent.
type roleServer struct {
	url   string
	store *Store
	mu    sync.Mutex
	auth  map[string][]string // method -> Authorization headers seen on /admin/switches
}

func startRoleServer(t *testing.T, role string, key []byte, file string) *roleServer {
	t.Helper()
	st, err := New(Config{Role: role, Options: Options{AdminKey: key, File: file},
		Apply: func(context.Context, *ticket.Switches) error { return nil }})
	if err != nil {
		t.Fatal(err)
	}
	rs := &roleServer{store: st, auth: map[string][]string{}}
	c := st.Wire(obs.Common{})
	inner := c.Admin
	c.Admin = func(ctx *fasthttp.RequestCtx) {
		rs.mu.Lock()
		m := string(ctx.Method())
		rs.auth[m] = append(rs.auth[m], string(ctx.Request.Header.Peek("Authorization")))
		rs.mu.Unlock()
		inner(ctx)
	}
	srv, err := obs.Listen(obs.ServerConfig{Name: role, Listen: "127.0.0.1:0", AdminOnly: true, Common: c}, obs.NotFound)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	t.Cleanup(func() { cancel(); <-done; st.Close() })
	rs.url = "http://" + srv.Addr()
	return rs
}

// fleet starts an edge, a verifier and a settler, each holding its role's key derived
// from op.
func fleet(t *testing.T, op []byte) (edge, verifier, settler *roleServer) {
	t.Helper()
	mk := func(role string) *roleServer {
		k, err := ticket.RoleAdminKey(op, role)
		if err != nil {
			t.Fatal(err)
		}
		return startRoleServer(t, role, k, "")
	}
	return mk("edge"), mk("verifier"), mk("settler")
}

func pause(d *ticket.Switches) error { d.Edge.Paused = true; return nil }

// TestClientSendsEachServerItsRoleToken: with the operator's key the client learns each
// server's role and reaches all three; each PUT carries that role's token, each read
// none.
func TestClientSendsEachServerItsRoleToken(t *testing.T) {
	op := ticket.NewKey()
	e, v, s := fleet(t, op)
	c := &Client{Key: op}
	res := c.Change([]string{e.url, v.url, s.url}, pause)
	for i, want := range []string{"edge", "verifier", "settler"} {
		r := res[i]
		if r.Err != nil || r.Role != want || r.Doc.Version != 1 || !r.Doc.Edge.Paused {
			t.Fatalf("%s: role %q err %v doc %v", want, r.Role, r.Err, r.Doc)
		}
	}
	for _, rs := range []*roleServer{e, v, s} {
		role := rs.store.cfg.Role
		want, _ := ticket.TokenForRole(op, role)
		if got := rs.auth["PUT"]; len(got) != 1 || got[0] != "Bearer "+want {
			t.Errorf("%s was sent %q, want only its role's token", role, got)
		}
		for _, h := range rs.auth["GET"] {
			if h != "" {
				t.Errorf("%s: a read carried a token: %q", role, h)
			}
		}
	}
	show := (&Client{}).Show([]string{e.url, v.url, s.url})
	for _, r := range show {
		if r.Err != nil || r.Doc.Version != 1 {
			t.Errorf("show without a key: %s %v", r.Server, r.Err)
		}
	}
}

// TestClientEdgeKeyChangesNoOtherRole: a key taken from an edge changes edges, and no
// verifier or settler.
func TestClientEdgeKeyChangesNoOtherRole(t *testing.T) {
	op := ticket.NewKey()
	e, v, s := fleet(t, op)
	edgeKey, _ := ticket.RoleAdminKey(op, "edge")
	res := (&Client{Key: edgeKey}).Change([]string{e.url, v.url, s.url}, func(d *ticket.Switches) error {
		d.Verifier.OpenPaused, d.Settler.Paused = true, true
		return nil
	})
	if res[0].Err != nil {
		t.Errorf("edge key on the edge: %v", res[0].Err)
	}
	for _, r := range res[1:] {
		if r.Err == nil || !strings.Contains(r.Err.Error(), "edge's admin key") {
			t.Errorf("edge key on the %s: %v, want refused", r.Role, r.Err)
		}
	}
	// The raw request, as an attacker would send it, is refused too.
	tok := ticket.AdminToken(edgeKey)
	for _, rs := range []*roleServer{v, s} {
		status, _, err := (&Client{}).do("PUT", rs.url+SwitchesPath, tok, []byte(`{"version":7,"verifier":{"open_paused":true},"settler":{"paused":true}}`))
		if err != nil || status != 401 {
			t.Errorf("%s: PUT with the edge's token: %d %v, want 401", rs.store.cfg.Role, status, err)
		}
		if d := rs.store.Current(); d.Version != 0 || d.Verifier.OpenPaused || d.Settler.Paused {
			t.Errorf("%s changed by the edge's key: %s", rs.store.cfg.Role, d.JSON())
		}
	}
}

// TestHostileVersionCannotOutlastOperator: an attacker holding the edge's key pushes the
// edge's version up as far as the server lets it; the operator's ctl still pauses and
// resumes every server. A document at the highest version (only a file can hold one)
// is the one thing ctl cannot follow, and --switches-reset gets out of it.
func TestHostileVersionCannotOutlastOperator(t *testing.T) {
	op := ticket.NewKey()
	e, v, s := fleet(t, op)
	edgeKey, _ := ticket.RoleAdminKey(op, "edge")
	tok := ticket.AdminToken(edgeKey)
	hostile := func(version uint64) int {
		status, _, err := (&Client{}).do("PUT", e.url+SwitchesPath, tok, fmt.Appendf(nil, `{"version":%d,"edge":{"paused":true}}`, version))
		if err != nil {
			t.Fatal(err)
		}
		return status
	}
	for _, version := range []uint64{1<<64 - 1, 1 << 53, ticket.MaxSwitchesVersion, ticket.MaxSwitchesVersionStep + 1} {
		if status := hostile(version); status != 400 && status != 409 {
			t.Errorf("hostile version %d: %d, want 400 or 409", version, status)
		}
	}
	// Twenty of the largest steps a server allows: more than ctl walks another server up.
	for i := uint64(1); i <= 20; i++ {
		if status := hostile(i * ticket.MaxSwitchesVersionStep); status != 200 {
			t.Fatalf("step %d: %d", i, status)
		}
	}
	c := &Client{Key: op}
	servers := []string{e.url, v.url, s.url}
	for _, paused := range []bool{false, true, false} {
		res := c.Change(servers, func(d *ticket.Switches) error { d.Edge.Paused = paused; return nil })
		for _, r := range res {
			if r.Err != nil || r.Doc.Edge.Paused != paused {
				t.Fatalf("paused=%v on the %s after the attack: %v", paused, r.Role, r.Err)
			}
		}
	}
	if d := e.store.Current(); d.Edge.Paused {
		t.Fatalf("the edge is still paused: %s", d.JSON())
	}

	// A file at the highest version: ctl refuses to wrap on that server only, and a
	// restart with Reset makes it reachable again.
	file := filepath.Join(t.TempDir(), "edge.json")
	os.WriteFile(file, fmt.Appendf(nil, `{"version":%d,"edge":{"paused":true}}`, uint64(ticket.MaxSwitchesVersion)), 0o600)
	top := startRoleServer(t, "edge", edgeKey, file)
	res := c.Change([]string{top.url, v.url}, pause)
	if res[0].Err == nil || !strings.Contains(res[0].Err.Error(), "--switches-reset") {
		t.Errorf("server at the highest version: %v, want a refusal naming --switches-reset", res[0].Err)
	}
	if res[1].Err != nil || res[1].Note == "" {
		t.Errorf("the other server: %v (note %q), want changed with a note", res[1].Err, res[1].Note)
	}
	st, err := New(Config{Role: "edge", Options: Options{AdminKey: edgeKey, File: file, Reset: true},
		Apply: func(context.Context, *ticket.Switches) error { return nil }})
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
	if d, err := ReadFile(file); err != nil || d.Version != 0 || d.Edge.Paused {
		t.Fatalf("after --switches-reset the file holds %v %v", d, err)
	}
}
