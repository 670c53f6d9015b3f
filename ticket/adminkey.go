package ticket

import (
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"fmt"
	"slices"
)

// Per-role admin keys. admin.key is the operator's key: `shake ctl` holds it and derives
// from it the key of each role, so one key reaches the whole fleet while a key taken
// from one server (an edge) changes the switches of its role only.
//
// A role key is 32 bytes like every other key file, and it carries its role in its own
// bytes: the first 16 are HKDF-SHA256(admin.key, "shake/v1/admin-role|<role>"), the last
// 16 are HMAC-SHA256(first 16, "shake/v1/admin-role-mark|<role>") cut to 16 bytes. A
// server therefore recognises the key of its role, another role's key and a key that is
// no role key at all (the operator's admin.key, or an old fleet-wide key) without being
// told anything else: a random 32-byte key passes a role's mark with probability 2^-128.

// The roles that have an admin key of their own.
const (
	RoleEdge     = "edge"
	RoleVerifier = "verifier"
	RoleSettler  = "settler"
	RoleQuery    = "query"
)

// AdminRoles lists the roles with an admin key, in the order keys init writes them.
var AdminRoles = []string{RoleEdge, RoleVerifier, RoleSettler, RoleQuery}

const (
	labelAdminRole     = "shake/v1/admin-role|"
	labelAdminRoleMark = "shake/v1/admin-role-mark|"
	roleSecretLen      = 16
)

// AdminRoleKeyFile is the file name keys init gives a role's admin key.
func AdminRoleKeyFile(role string) string { return "admin-" + role + ".key" }

// RoleAdminKey derives the admin key of role from the operator's admin.key. It refuses
// an unknown role and a key that is already a role key (a role key derives nothing).
func RoleAdminKey(operatorKey []byte, role string) ([]byte, error) {
	if len(operatorKey) != KeySize {
		return nil, ErrKeySize
	}
	if !slices.Contains(AdminRoles, role) {
		return nil, fmt.Errorf("no admin key for role %q (want one of %v)", role, AdminRoles)
	}
	if r := AdminKeyRole(operatorKey); r != "" {
		return nil, fmt.Errorf("this is the %s's admin key, not the operator's admin.key: it derives no other key", r)
	}
	secret, err := hkdf.Key(sha256.New, operatorKey, nil, labelAdminRole+role, roleSecretLen)
	if err != nil {
		return nil, err
	}
	return append(secret, roleMark(secret, role)...), nil
}

// roleMark is the second half of a role key.
func roleMark(secret []byte, role string) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(labelAdminRoleMark + role))
	return m.Sum(nil)[:KeySize-roleSecretLen]
}

// AdminKeyRole returns the role whose admin key key is, or "" when it is none (the
// operator's admin.key, or any other 32 bytes).
func AdminKeyRole(key []byte) string {
	if len(key) != KeySize {
		return ""
	}
	for _, r := range AdminRoles {
		if hmac.Equal(key[roleSecretLen:], roleMark(key[:roleSecretLen], r)) {
			return r
		}
	}
	return ""
}

// TokenForRole returns the bearer token a server of role accepts, given either the
// operator's admin.key (the role's key is derived) or that role's own key. Another
// role's key is an error: it reaches only its own role.
func TokenForRole(key []byte, role string) (string, error) {
	switch have := AdminKeyRole(key); have {
	case role:
		return AdminToken(key), nil
	case "":
		rk, err := RoleAdminKey(key, role)
		if err != nil {
			return "", err
		}
		return AdminToken(rk), nil
	default:
		return "", fmt.Errorf("the key is the %s's admin key: it changes %ss only, not a %s", have, have, role)
	}
}
