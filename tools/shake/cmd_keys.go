package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"shake/ticket"
)

func init() {
	register(command{name: "keys", summary: "create a campaign's secret keys (keys init)", run: runKeys})
}

const keysUsage = `
Usage: shake keys init --out DIR

Writes three fresh keys of 32 random bytes each, and the four admin keys of the roles
derived from admin.key, all mode 0600, into DIR (created if missing):

  DIR/campaign.key   the campaign's root secret: 'shake gen' derives every shard's AEAD
                     key and the ticket-MAC key from it (HKDF-SHA256). Keep it on the
                     generator and the verifier only; edges get their shard key alone.
  DIR/session.key    the HMAC key of session tokens, shared with the app's login system.
  DIR/admin.key      the operator's key, for 'shake ctl' only: it derives the admin key of
                     every role, so ctl reaches the whole fleet with it. No server accepts
                     it (a server given it refuses to start and names its role's key).
  DIR/admin-edge.key, admin-verifier.key, admin-settler.key, admin-query.key
                     one admin key per role (--admin-key of that role's servers; the query
                     server's also guards 'shake reconcile --watch'), derived from admin.key
                     with HKDF-SHA256 and a label naming the role. A key taken from one
                     server changes the switches of its role only. 'shake admin token --key
                     FILE' prints the bearer token a key gives.

It refuses to overwrite any of them if it exists (and then writes none).
`

func runKeys(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		return usageError(stderr, "keys: expected a subcommand: init (see 'shake keys -h')")
	}
	switch args[0] {
	case "init":
		return runKeysInit(args[1:], stdout, stderr)
	case "-h", "-help", "--help":
		fs := newFlagSet("keys", keysUsage, stderr)
		fs.Usage()
		return 0
	}
	return usageError(stderr, "keys: unknown subcommand %q (want init)", args[0])
}

func runKeysInit(args []string, stdout, stderr io.Writer) int {
	fset := newFlagSet("keys init", keysUsage, stderr)
	out := fset.String("out", "", "`dir`ectory to write campaign.key, session.key, admin.key and the role admin keys into (required)")
	if ok, code := parseFlags(fset, args); !ok {
		return code
	}
	if err := requireFlag(fset, "out"); err != nil {
		return usageError(stderr, "keys init: %v", err)
	}
	if err := os.MkdirAll(*out, 0o700); err != nil {
		return usageError(stderr, "keys init: --out: cannot create %s: %v", *out, err)
	}
	names := keySetNames()
	// Check them all first so that a refusal leaves no half-initialised directory.
	for _, n := range names {
		p := filepath.Join(*out, n)
		if _, err := os.Lstat(p); err == nil {
			return usageError(stderr, "keys init: --out: %s already exists, refusing to overwrite it", p)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return usageError(stderr, "keys init: --out: %v", err)
		}
	}
	written, _, err := writeKeySet(*out, names)
	if err != nil {
		return usageError(stderr, "keys init: --out: %v", err)
	}
	if err := ticket.SyncDir(*out); err != nil {
		fmt.Fprintf(stderr, "shake keys init: cannot sync %s: %v\n", *out, err)
		return 1
	}
	for _, p := range written {
		fmt.Fprintln(stdout, p)
	}
	return 0
}

// writeKeySet writes a fresh key set (newKeySet) into dir as the files names, mode
// 0600, none over an existing file; on failure it removes what it wrote. It returns the
// paths written and the keys by file name.
func writeKeySet(dir string, names []string) ([]string, map[string][]byte, error) {
	keys, err := newKeySet()
	if err != nil {
		return nil, nil, err
	}
	var written []string
	for _, n := range names {
		p := filepath.Join(dir, n)
		if err := ticket.WriteKeyFile(p, keys[n]); err != nil {
			for _, w := range written {
				os.Remove(w)
			}
			return nil, nil, err
		}
		written = append(written, p)
	}
	return written, keys, nil
}

// keySetNames are the files keys init writes: the three keys and the role admin keys.
func keySetNames() []string {
	names := []string{"campaign.key", "session.key", "admin.key"}
	for _, r := range ticket.AdminRoles {
		names = append(names, ticket.AdminRoleKeyFile(r))
	}
	return names
}

// newKeySet returns the keys keys init writes, by file name: three random keys and the
// admin key of every role, derived from admin.key.
func newKeySet() (map[string][]byte, error) {
	admin := ticket.NewKey()
	keys := map[string][]byte{"campaign.key": ticket.NewKey(), "session.key": ticket.NewKey(), "admin.key": admin}
	for _, r := range ticket.AdminRoles {
		k, err := ticket.RoleAdminKey(admin, r)
		if err != nil {
			return nil, err
		}
		keys[ticket.AdminRoleKeyFile(r)] = k
	}
	return keys, nil
}
