package main

import (
	"fmt"
	"io"

	"shake/ticket"
)

func init() {
	register(command{name: "admin", summary: "print the admin token of admin.key (admin token)", run: runAdmin})
}

const adminUsage = `
Usage: shake admin token --key admin.key

Prints the bearer token of the servers' admin listeners:

  base64url, no padding, of HMAC-SHA256(admin.key, "shake-admin-v1")

An admin request carries it as Authorization: Bearer <token> (PUT /admin/switches, and
/debug/pprof/ on a server started with --admin-key). 'shake ctl --admin-key admin.key'
computes it itself.
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
	key := fs.String("key", "", "admin.key `file` (required)")
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
	fmt.Fprintln(stdout, ticket.AdminToken(k))
	return 0
}
