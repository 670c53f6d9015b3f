//go:build race

package verifier

// raceEnabled: the race detector makes some calls allocate, so alloc guards skip.
const raceEnabled = true
