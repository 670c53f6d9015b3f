//go:build race

package ticketgen

// fairnessTickets is the size of each fairness campaign. The race detector slows the
// generator about tenfold, so under it the campaigns are a fifth of the full size and
// the fairness tolerances widen by √5 (the same number of standard errors); CI also runs
// the fairness tests without -race at the full 10^6 tickets and the stated tolerances.
const fairnessTickets = 200_000

// raceEnabled: property tests run fewer cases under the race detector.
const raceEnabled = true
