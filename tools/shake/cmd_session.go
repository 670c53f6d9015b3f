package main

import (
	"fmt"
	"io"
	"time"

	"shake/ticket"
)

func init() {
	register(command{name: "session", summary: "mint a session token for a user (session mint)", run: runSession})
}

const sessionUsage = `
Usage: shake session mint --key session.key --uid N [--ttl 1h]

Prints one session token for user N, valid for --ttl from now:

  <uid>.<expires_unix>.<sig>   sig = base64url, no padding, of
                               HMAC-SHA256(session.key, "shake-session-v1|<uid>|<expires_unix>")

This is what the app's login system hands its users; edges and the verifier check it with
the same session.key. Useful for tests and demos.
`

func runSession(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		return usageError(stderr, "session: expected a subcommand: mint (see 'shake session -h')")
	}
	switch args[0] {
	case "mint":
		return runSessionMint(args[1:], stdout, stderr)
	case "-h", "-help", "--help":
		newFlagSet("session", sessionUsage, stderr).Usage()
		return 0
	}
	return usageError(stderr, "session: unknown subcommand %q (want mint)", args[0])
}

// sessionNow is the clock of session mint; tests replace it.
var sessionNow = time.Now

func runSessionMint(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("session mint", sessionUsage, stderr)
	keyPath := fs.String("key", "", "session.key `file` (required)")
	uidS := fs.String("uid", "", "user id `N`, a decimal uint64 (required)")
	ttl := fs.Duration("ttl", time.Hour, "how long the token stays valid")
	if ok, code := parseFlags(fs, args); !ok {
		return code
	}
	if err := requireFlag(fs, "key", "uid"); err != nil {
		return usageError(stderr, "session mint: %v", err)
	}
	uid, ok := ticket.ParseUintString(*uidS)
	if !ok {
		return usageError(stderr, "session mint: --uid: %q is not a decimal uint64", *uidS)
	}
	if *ttl < time.Second {
		return usageError(stderr, "session mint: --ttl: must be at least 1s, have %v", *ttl)
	}
	key, err := ticket.ReadKeyFile(*keyPath)
	if err != nil {
		return usageError(stderr, "session mint: --key: %v", err)
	}
	sk, err := ticket.NewSessionKey(key)
	if err != nil {
		return usageError(stderr, "session mint: --key: %v", err)
	}
	tok := sk.Mint(nil, uid, sessionNow().Add(*ttl).Unix())
	fmt.Fprintf(stdout, "%s\n", tok)
	return 0
}
