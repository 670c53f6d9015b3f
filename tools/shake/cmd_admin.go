package main

import (
	"fmt"
	"io"
	"slices"

	"shake/ticket"
)

func init() {
	register(command{name: "admin", summary: "print the bearer token an admin key gives (admin token)", run: runAdmin})
}

const adminUsage = `
Usage: shake admin token --key admin-ROLE.key
       shake admin token --key admin.key --role edge|verifier|settler|query

Prints the bearer token a server accepts on its admin listener:

  base64url, no padding, of HMAC-SHA256(KEY, "shake-admin-v1")

where KEY is the role's admin key (admin-edge.key, ...). With the operator's admin.key,
--role names the role whose token to print (its key is derived first, as 'shake ctl'
does); without --role it prints admin.key's own token, which no server accepts, and says
so on stderr. An admin request carries it as Authorization: Bearer <token> (PUT
/admin/switches, /debug/pprof/). The token is static: whoever reads it off a server
can replay it to servers of that role, and of no other role.
`

func runAdmin(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		return usageError(stderr, "admin: expected a subcommand: token (see 'shake admin -h')")
	}
	switch args[0] {
	case "token":
	case "-h", "-help", "--help":
		newFlagSet("admin", adminUsage, stderr).Usage()
		return 0
	default:
		return usageError(stderr, "admin: unknown subcommand %q (want token)", args[0])
	}
	fs := newFlagSet("admin token", adminUsage, stderr)
	key := fs.String("key", "", "admin key `file`: a role's admin-ROLE.key, or admin.key with --role (required)")
	role := fs.String("role", "", "with the operator's admin.key: the `role` whose token to print")
	if ok, code := parseFlags(fs, args[1:]); !ok {
		return code
	}
	if err := requireFlag(fs, "key"); err != nil {
		return usageError(stderr, "admin token: %v", err)
	}
	k, err := ticket.ReadKeyFile(*key)
	if err != nil {
		return usageError(stderr, "admin token: --key: %v", err)
	}
	have := ticket.AdminKeyRole(k)
	switch {
	case *role == "" && have == "":
		// The token this key gives, as asked; but say that no server takes it.
		fmt.Fprintln(stdout, ticket.AdminToken(k))
		fmt.Fprintf(stderr, "shake admin token: note: %s is no role key (the operator's admin.key?): no server accepts this token; give --role %s for the token servers of that role accept\n", *key, roleList())
		return 0
	case *role == "":
		fmt.Fprintln(stdout, ticket.AdminToken(k))
		return 0
	case !slices.Contains(ticket.AdminRoles, *role):
		return usageError(stderr, "admin token: --role must be one of %s, not %q", roleList(), *role)
	}
	tok, err := ticket.TokenForRole(k, *role)
	if err != nil {
		return usageError(stderr, "admin token: --key: %s: %v", *key, err)
	}
	fmt.Fprintln(stdout, tok)
	return 0
}

// roleList is the roles with an admin key, for messages: "edge|verifier|settler|query".
func roleList() string {
	s := ""
	for i, r := range ticket.AdminRoles {
		if i > 0 {
			s += "|"
		}
		s += r
	}
	return s
}
