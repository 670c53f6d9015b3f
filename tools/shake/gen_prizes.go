package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"shake/ticket"
	"shake/ticketgen"
)

// maxDistributionRows bounds the per shard-round table of printDistribution.
const maxDistributionRows = 64

// printDistribution prints how a campaign's amounts are spread: each prize per shard
// and per round, percentiles and the largest of the amounts (the lucky amounts of a
// dry run, or every amount in the files for inspect), and the largest amount and the
// prize tickets of each shard-round. fromFiles says which.
func printDistribution(w io.Writer, m *ticket.Manifest, d *ticketgen.Distribution, fromFiles bool) {
	if len(m.Prizes) > 0 {
		var lucky uint64 = m.Count
		for _, pr := range m.Prizes {
			lucky -= pr.Count
		}
		fmt.Fprintf(w, "prizes: %s; lucky amounts in [%d, %d] for the other %d tickets\n", prizeList(m.Prizes), m.LuckyMin, m.LuckyMax, lucky)
		for k, pr := range m.Prizes {
			verb := "planned"
			if fromFiles {
				verb = "found"
			}
			fmt.Fprintf(w, "  prize %d x %d %s: per shard %s; per round %s\n", pr.Amount, pr.Count, verb,
				joinCounts(d.PerShard(k)), joinCounts(d.PerRound(k)))
		}
	} else {
		fmt.Fprintf(w, "prizes: none\n")
	}
	a := &d.Amounts
	what := "lucky amounts"
	if fromFiles {
		what = "amounts in the files"
	}
	sample := ""
	if !a.Exact() {
		sample = " (percentiles from a uniform sample of 65536)"
	}
	if a.Count > 0 {
		fmt.Fprintf(w, "%s: %d tickets, mean %.2f, smallest %d, p50 %d, p90 %d, p99 %d, p99.9 %d, largest %d%s\n", what, a.Count,
			float64(a.Sum)/float64(a.Count), a.Smallest, a.Percentile(50), a.Percentile(90), a.Percentile(99), a.Percentile(99.9), a.Largest, sample)
	}
	tw := tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "shard\tround\ttickets\tprize tickets\tlargest")
	rows := 0
	for i, s := range m.Shards {
		for j, rr := range s.Rounds {
			if rows++; rows > maxDistributionRows {
				continue
			}
			var prizes uint64
			for _, c := range d.PrizeTickets[i][j] {
				prizes += c
			}
			fmt.Fprintf(tw, "%d\t%d\t%d\t%d\t%d\n", i, j, rr.Count, prizes, d.Largest[i][j])
		}
	}
	tw.Flush()
	if rows > maxDistributionRows {
		fmt.Fprintf(w, "(%d more shard-rounds not shown)\n", rows-maxDistributionRows)
	}
}

func prizeList(ps []ticket.Prize) string {
	parts := make([]string, len(ps))
	for i, p := range ps {
		parts[i] = fmt.Sprintf("%d x %d", p.Amount, p.Count)
	}
	return strings.Join(parts, ", ")
}

// joinCounts prints counts space-separated, eliding the middle of a long list.
func joinCounts(cs []uint64) string {
	var b strings.Builder
	for i, c := range cs {
		if len(cs) > 16 && i == 8 {
			fmt.Fprintf(&b, " ... (%d more)", len(cs)-12)
		}
		if len(cs) > 16 && i >= 8 && i < len(cs)-4 {
			continue
		}
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%d", c)
	}
	return b.String()
}
