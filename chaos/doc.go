// Package chaos holds shake's whole-chain fault tests. It has no code of its own: the
// tests build the real binary, start the real processes (edges, verifier, settler,
// broker, with a PostgreSQL ledger reached through a proxy the test controls), drive
// load with the bench engine and, at moments drawn from a seeded schedule, kill, stop
// and cut off the components, then check that no money was lost, doubled or invented.
//
// The long test is behind the "chaos" build tag (go test -tags chaos ./chaos/); the
// malformed-request test runs in every `go test ./...`. See README.md.
package chaos
