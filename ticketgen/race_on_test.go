//go:build race

package ticketgen

// fairnessTickets is the size of each fairness campaign. The race detector slows the
// generator about tenfold, so under it the campaigns are half the full size; CI
// also runs the fairness tests without -race at the full 10^6 tickets.
const fairnessTickets = 500_000
