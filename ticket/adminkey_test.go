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
