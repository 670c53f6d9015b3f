package ticket

import (
	"bytes"
	"strings"
	"testing"
)

// TestRoleAdminKeys: each role key is derived from the operator's key, names its role in
// its own bytes, gives a token of its own, and the operator's key is no role key.
func TestRoleAdminKeys(t *testing.T) {
	op := NewKey()
	if r := AdminKeyRole(op); r != "" {
		t.Fatalf("a random operator key is recognised as the %s's key", r)
	}
	tokens := map[string]bool{AdminToken(op): true}
	for _, role := range AdminRoles {
		k, err := RoleAdminKey(op, role)
		if err != nil {
			t.Fatal(err)
		}
		if len(k) != KeySize {
			t.Fatalf("%s key: %d bytes", role, len(k))
		}
		again, _ := RoleAdminKey(op, role)
		if !bytes.Equal(k, again) {
			t.Fatalf("%s key: derivation is not deterministic", role)
		}
		if got := AdminKeyRole(k); got != role {
			t.Fatalf("%s key recognised as %q", role, got)
		}
		tok := AdminToken(k)
		if tokens[tok] {
			t.Fatalf("%s key gives a token another key gives", role)
		}
		tokens[tok] = true
		viaOp, err := TokenForRole(op, role)
		if err != nil || viaOp != tok {
			t.Fatalf("TokenForRole(operator, %s) = %q, %v; want the role key's token", role, viaOp, err)
		}
		if own, err := TokenForRole(k, role); err != nil || own != tok {
			t.Fatalf("TokenForRole(%s key, %s) = %q, %v", role, role, own, err)
		}
		if _, err := RoleAdminKey(k, RoleEdge); err == nil {
			t.Fatalf("a %s key derived another role's key", role)
		}
	}
	edge, _ := RoleAdminKey(op, RoleEdge)
	if _, err := TokenForRole(edge, RoleVerifier); err == nil || !strings.Contains(err.Error(), "edge") {
		t.Fatalf("the edge's key gave a verifier token: %v", err)
	}
	if _, err := RoleAdminKey(op, "reconcile"); err == nil {
		t.Fatal("a key for an unknown role was derived")
	}
	// A key differing from a role key in one bit is no role key.
	bad := append([]byte(nil), edge...)
	bad[KeySize-1] ^= 1
	if r := AdminKeyRole(bad); r != "" {
		t.Fatalf("a corrupted edge key is recognised as the %s's", r)
	}
}

// TestSwitchesCheckAgainstCampaign: a round or shard the campaign does not have is a
// FieldError naming the field; unknown counts are not checked.
func TestSwitchesCheckAgainstCampaign(t *testing.T) {
	d := DefaultSwitches()
	d.Edge.ClosedRounds, d.Verifier.RevokedShards = []int{0, 2}, []int{3}
	if err := d.CheckAgainst(3, 4); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		rounds, shards int
		field          string
	}{{2, 4, "edge.closed_rounds"}, {0, 4, "edge.closed_rounds"}, {3, 3, "verifier.revoked_shards"}, {-1, 3, "verifier.revoked_shards"}} {
		err := d.CheckAgainst(c.rounds, c.shards)
		fe, ok := err.(*FieldError)
		if !ok || fe.Field != c.field {
			t.Errorf("rounds %d shards %d: %v, want a FieldError naming %s", c.rounds, c.shards, err, c.field)
		}
	}
	if err := d.CheckAgainst(-1, -1); err != nil {
		t.Errorf("nothing known: %v", err)
	}
}
