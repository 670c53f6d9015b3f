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
Usage: shake session mint --key session.key --uid N [--ttl 1h] [--device ID] [--risk N]

Prints one session token for user N, valid for --ttl from now:

  <uid>.<expires_unix>.<sig>   sig = base64url, no padding, of
                               HMAC-SHA256(session.key, "shake-session-v1|<uid>|<expires_unix>")

With --device (1..64 characters of [A-Za-z0-9_-]) or a --risk level above 0 (0..9), the
token carries them, signed with the same key:

  <uid>.<expires_unix>.<device>~<risk>.<sig>   sig of
      "shake-session-v2|<uid>|<expires_unix>|<device>|<risk>" (device may be empty)

Edges enforce --per-device per device and refuse sessions above the campaign's max_risk.

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
	device := fs.String("device", "", "device `ID` signed into the token, 1..64 characters of [A-Za-z0-9_-] (default none)")
	risk := fs.Int("risk", 0, fmt.Sprintf("risk level `N` signed into the token, 0..%d", ticket.MaxRisk))
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
	if *device != "" && !ticket.ValidDevice([]byte(*device)) {
		return usageError(stderr, "session mint: --device: %q is not 1..%d characters of [A-Za-z0-9_-]", *device, ticket.MaxDeviceLen)
	}
	if *risk < 0 || *risk > ticket.MaxRisk {
		return usageError(stderr, "session mint: --risk: must be between 0 and %d, have %d", ticket.MaxRisk, *risk)
	}
	key, err := ticket.ReadKeyFile(*keyPath)
	if err != nil {
		return usageError(stderr, "session mint: --key: %v", err)
	}
	sk, err := ticket.NewSessionKey(key)
	if err != nil {
		return usageError(stderr, "session mint: --key: %v", err)
	}
	var dev []byte
	if *device != "" {
		dev = []byte(*device)
	}
	tok := sk.MintAttrs(nil, uid, sessionNow().Add(*ttl).Unix(), dev, uint8(*risk))
	fmt.Fprintf(stdout, "%s\n", tok)
	return 0
}
