//go:build race

package ticket

// raceEnabled: the race detector makes sync.Pool drop items at random, so the pooled
// HMAC states are re-allocated and allocation counts are meaningless.
const raceEnabled = true
