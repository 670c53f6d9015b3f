package main

import (
	"fmt"
	"io"
	"path/filepath"
	"text/tabwriter"

	"shake/ticket"
)

// bytesPerTicketEstimate is about what a shard file takes per ticket (zstd-compressed
// amounts plus a 12-byte MAC; 1.3 GB for 100M tickets in the README's measurement).
const bytesPerTicketEstimate = 13

// printGenPlan prints what `shake gen` would do for m, without writing anything: the
// campaign, the amount range and mean, every shard and round with its ticket ids and
// amount, and the files it would write into outDir with their estimated sizes.
func printGenPlan(w io.Writer, m *ticket.Manifest, outDir string) {
	fmt.Fprintf(w, "dry run: nothing written\n")
	fmt.Fprintf(w, "campaign %s: %d tickets, budget %d (minor units, %s), amounts in [%d, %d], mean %.2f, per_user %d, ttl %s, seed_sha256 %s\n",
		m.Campaign, m.Count, m.Budget, m.Currency, m.Min, m.Max, float64(m.Budget)/float64(max(m.Count, 1)), m.PerUser, m.TTL, m.SeedSHA256)
	fmt.Fprintf(w, "rules: per_user %d, per_device %d, max_risk %d\n", m.PerUser, m.PerDevice, ticket.RiskLimit(m.MaxRisk))
	if len(m.Rounds) == 0 || len(m.Rounds) == 1 && m.Rounds[0].AlwaysOpen() {
		fmt.Fprintf(w, "rounds: none, always open until %s\n", m.IssueUntil.UTC().Format("2006-01-02T15:04:05Z07:00"))
	} else {
		for _, r := range m.Rounds {
			fmt.Fprintf(w, "round %d: %s to %s\n", r.Index, r.Start.UTC().Format("2006-01-02T15:04:05Z07:00"), r.End.UTC().Format("2006-01-02T15:04:05Z07:00"))
		}
	}
	fmt.Fprintf(w, "tickets expire by %s (refunds allowed after it)\n", m.ExpiresAt.UTC().Format("2006-01-02T15:04:05Z07:00"))
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "shard\tfile\ttickets\tids\tamount\tmean\trounds")
	var total uint64
	for _, s := range m.Shards {
		rounds := ""
		for i, r := range s.Rounds {
			if i > 0 {
				rounds += " "
			}
			rounds += fmt.Sprintf("%d:%d", r.Round, r.Count)
		}
		fmt.Fprintf(tw, "%d\t%s\t%d\t%d..%d\t%d\t%.2f\t%s\n", s.Index, s.File, s.Count, s.FirstTicket, s.FirstTicket+s.Count-1,
			s.Amount, float64(s.Amount)/float64(max(s.Count, 1)), rounds)
		total += s.Count
	}
	tw.Flush()
	fmt.Fprintf(w, "would write into %s: manifest.json, %d shard files (%s to %s, about %d MB in all) and %d shard keys (0600)\n",
		filepath.Clean(outDir), len(m.Shards), m.Shards[0].File, m.Shards[len(m.Shards)-1].File,
		(total*bytesPerTicketEstimate+(1<<20)-1)>>20, len(m.Shards))
}
