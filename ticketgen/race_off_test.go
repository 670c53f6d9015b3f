//go:build !race

package ticketgen

// fairnessTickets is the size of each fairness campaign: 10^6 tickets, 10^5 windows.
const fairnessTickets = 1_000_000

const raceEnabled = false
