package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"shake/ticket"
	"shake/ticketgen"
)

func init() {
	register(command{name: "inspect", summary: "print and verify a shard file or a manifest", run: runInspect})
}

const inspectUsage = `
Usage: shake inspect [--key campaign.key] FILE
       shake inspect --reveal DIR/seed DIR/manifest.json

FILE is a shard file (edge-NNN.tickets) or a manifest (manifest.json); the kind is told by
the extension, else by the content.

For a shard it prints the header (campaign, shard, ticket id range, rounds, ttl) and the
totals, and verifies the header, block and trailer checksums, that every block
decompresses to its records, and that the amounts add up to the header's totals.

For a manifest it checks the manifest's own sums and ranges and then, for every shard it
lists (relative to the manifest's directory), the file's SHA-256 against the manifest, the
shard header against the manifest, every checksum and total as above, and that every
amount lies in the manifest's [min, max].

With --key it also verifies every ticket's MAC (under the ticket-MAC key derived from
campaign.key) and, for a manifest, its signature (a manifest changed after generation,
expires_at moved say, fails) and that each edge-NNN.key present is the derived shard key.

With --reveal SEED (after the event, once the operator publishes the seed) it checks that
the amounts were fixed before the event: that SEED is the seed the manifest committed to
(its SHA-256 is the manifest's seed_sha256, which 'sha256sum SEED' prints too), and that
every ticket of every shard file holds the amount the seed and the manifest's recorded
parameters give. It needs no key, and names the first ticket that differs.

Exit codes: 0 everything verified, 1 any mismatch or corruption, 2 bad usage or a file
that cannot be read.
`

func runInspect(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("inspect", inspectUsage, stderr)
	keyPath := fs.String("key", "", "campaign.key `file`: also verify the manifest's signature and every ticket MAC")
	revealSeed := fs.String("reveal", "", "seed `file` published after the event: recompute every ticket's amount from it and the manifest")
	if ok, code := parseFlagsArgs(fs, args, 1, 1); !ok {
		return code
	}
	path := fs.Arg(0)
	if *revealSeed != "" {
		if *keyPath != "" {
			return usageError(stderr, "inspect: --reveal: takes no --key (run inspect --key on its own for the signature and MACs)")
		}
		return runReveal(path, *revealSeed, stdout, stderr)
	}
	var key []byte
	if *keyPath != "" {
		k, err := ticket.ReadKeyFile(*keyPath)
		if err != nil {
			return usageError(stderr, "inspect: --key: %v", err)
		}
		key = k
	}
	w := bufio.NewWriter(stdout)
	defer w.Flush()
	var problems int
	if isManifest(path) {
		r, err := ticketgen.InspectManifest(path, key)
		if err != nil {
			return inspectError(stderr, err)
		}
		problems = printManifestReport(w, r, key != nil)
		if r.Manifest != nil && r.Distribution != nil && len(r.Shards) == len(r.Manifest.Shards) {
			printDistribution(w, r.Manifest, r.Distribution, true)
		}
	} else {
		r, err := ticketgen.InspectShard(path, key)
		if err != nil {
			return inspectError(stderr, err)
		}
		problems = printShardReport(w, r, key != nil)
	}
	if problems > 0 {
		fmt.Fprintf(w, "FAILED: %d problem(s)\n", problems)
		w.Flush()
		fmt.Fprintf(stderr, "shake inspect: %s: %d problem(s), see the report above\n", path, problems)
		return 1
	}
	fmt.Fprintln(w, "OK: every check passed")
	return 0
}

func inspectError(stderr io.Writer, err error) int {
	if errors.Is(err, ticketgen.ErrUnreadable) {
		return usageError(stderr, "inspect: %v", err)
	}
	fmt.Fprintf(stderr, "shake inspect: %v\n", err)
	return 1
}

// isManifest tells a manifest from a shard: by extension, else by a leading '{'.
func isManifest(path string) bool {
	switch strings.ToLower(filepath.Ext(path)) {
	case ".json":
		return true
	case ".tickets":
		return false
	}
	f, err := os.Open(path)
	if err != nil {
		return false // InspectShard reports the open error
	}
	defer f.Close()
	var b [64]byte
	n, _ := f.Read(b[:])
	s := strings.TrimSpace(string(b[:n]))
	return strings.HasPrefix(s, "{")
}

func fmtTime(t time.Time) string { return t.UTC().Format(time.RFC3339) }

func fmtWindow(w ticket.RoundWindow) string {
	if w.AlwaysOpen() {
		return "always open"
	}
	return fmtTime(w.Start) + " .. " + fmtTime(w.End)
}

func printShardReport(w io.Writer, r *ticketgen.ShardReport, withKey bool) int {
	h := &r.Header
	fmt.Fprintf(w, "shard file  %s (%d bytes)\n", r.Path, r.Size)
	fmt.Fprintf(w, "  sha256    %s\n", r.SHA256)
	if h.Version != 0 {
		fmt.Fprintf(w, "  campaign  %s (%s)\n", h.Campaign, h.Currency)
		fmt.Fprintf(w, "  shard     %d of %d\n", h.Shard, h.Shards)
		fmt.Fprintf(w, "  tickets   %d (ids %d..%d)\n", h.Count, h.FirstTicket, h.FirstTicket+h.Count-1)
		fmt.Fprintf(w, "  amount    %d\n", h.Amount)
		fmt.Fprintf(w, "  ttl       %v\n", time.Duration(h.TTLSeconds)*time.Second)
		fmt.Fprintf(w, "  created   %s\n", fmtTime(h.CreatedAt))
		for i, rr := range h.RoundRanges {
			win := "?"
			if i < len(h.Rounds) {
				win = fmtWindow(h.Rounds[i])
			}
			fmt.Fprintf(w, "  round %-3d %s: %d tickets from %d, amount %d\n", rr.Round, win, rr.Count, rr.FirstTicket, rr.Amount)
		}
	}
	if r.Loaded {
		fmt.Fprintf(w, "  records   %d tickets sum to %d, amounts %d..%d, all checksums ok\n", h.Count, r.Sum, r.MinAmount, r.MaxAmount)
	}
	switch {
	case withKey && r.Loaded:
		fmt.Fprintf(w, "  macs      %d checked, %d bad\n", r.MACsChecked, r.BadMACs)
	case !withKey:
		fmt.Fprintf(w, "  macs      not checked (no --key)\n")
	}
	for _, p := range r.Problems {
		fmt.Fprintf(w, "  PROBLEM   %s\n", p)
	}
	return len(r.Problems)
}

func printManifestReport(w io.Writer, r *ticketgen.ManifestReport, withKey bool) int {
	fmt.Fprintf(w, "manifest    %s\n", r.Path)
	problems := len(r.Problems)
	for _, p := range r.Problems {
		fmt.Fprintf(w, "  PROBLEM   %s\n", p)
	}
	m := r.Manifest
	if m == nil {
		return max(problems, 1)
	}
	fmt.Fprintf(w, "  campaign  %s (%s)\n", m.Campaign, m.Currency)
	fmt.Fprintf(w, "  budget    %d in %d tickets, each %d..%d\n", m.Budget, m.Count, m.Min, m.Max)
	fmt.Fprintf(w, "  ttl       %s\n", m.TTL)
	fmt.Fprintf(w, "  rules     per_user %d, per_device %d, max_risk %d\n", m.PerUser, m.PerDevice, ticket.RiskLimit(m.MaxRisk))
	for _, rw := range m.Rounds {
		fmt.Fprintf(w, "  round %-3d %s\n", rw.Index, fmtWindow(rw))
	}
	fmt.Fprintf(w, "  issue     until %s, tickets expire by %s\n", fmtTime(m.IssueUntil), fmtTime(m.ExpiresAt))
	fmt.Fprintf(w, "  created   %s, %s\n", fmtTime(m.CreatedAt), seedLine(m))
	fmt.Fprintf(w, "  shards    %d\n", len(m.Shards))
	var count uint64
	var amount int64
	for _, s := range r.Shards {
		status := "ok"
		if len(s.Problems) > 0 {
			status = "FAILED"
		}
		macs := ""
		if withKey {
			macs = fmt.Sprintf(", %d MACs checked", s.MACsChecked)
		}
		fmt.Fprintf(w, "  shard %-4d %s: %d tickets from %d, amount %d%s: %s\n",
			s.Header.Shard, filepath.Base(s.Path), s.Header.Count, s.Header.FirstTicket, s.Sum, macs, status)
		for _, p := range s.Problems {
			fmt.Fprintf(w, "    PROBLEM %s\n", p)
		}
		problems += len(s.Problems)
		count += s.Header.Count
		amount += s.Sum
	}
	if len(r.Shards) == len(m.Shards) && (count != m.Count || amount != m.Budget) {
		fmt.Fprintf(w, "  PROBLEM   shard files hold %d tickets / %d, manifest says %d / %d\n", count, amount, m.Count, m.Budget)
		problems++
	}
	fmt.Fprintf(w, "  totals    %d tickets, amount %d in the shard files\n", count, amount)
	if withKey {
		fmt.Fprintf(w, "  keys      %d shard key files match the campaign key\n", r.KeyFiles)
	} else {
		fmt.Fprintf(w, "  macs      not checked (no --key)\n")
	}
	return problems
}

// seedLine says what the manifest holds of the seed: the commitment (seed_sha256) of a
// current manifest, or the plain seed of one written before commit and reveal.
func seedLine(m *ticket.Manifest) string {
	switch {
	case m.SeedSHA256 != "":
		return "seed_sha256 " + m.SeedSHA256
	case m.Seed != nil:
		return fmt.Sprintf("seed %d (plain: written before commit and reveal)", *m.Seed)
	}
	return "no seed recorded"
}

// runReveal is `shake inspect --reveal SEED MANIFEST`.
func runReveal(manifest, seed string, stdout, stderr io.Writer) int {
	r, err := ticketgen.Reveal(manifest, seed)
	if err != nil {
		return inspectError(stderr, err)
	}
	w := bufio.NewWriter(stdout)
	defer w.Flush()
	fmt.Fprintf(w, "reveal      %s with seed %s\n", manifest, seed)
	if r.SeedSHA256 != "" {
		fmt.Fprintf(w, "  seed      sha256 %s\n", r.SeedSHA256)
	}
	if m := r.Manifest; m != nil {
		fmt.Fprintf(w, "  manifest  campaign %s, seed_sha256 %s\n", m.Campaign, m.SeedSHA256)
	}
	if r.Committed {
		fmt.Fprintf(w, "  commit    the seed is the one the manifest committed to\n")
	}
	fmt.Fprintf(w, "  checked   %d shard files, %d tickets equal to what the seed gives\n", r.Shards, r.Tickets)
	for _, p := range r.Problems {
		fmt.Fprintf(w, "  PROBLEM   %s\n", p)
	}
	if !r.OK() {
		fmt.Fprintln(w, "FAILED: the amounts are not the committed ones")
		w.Flush()
		msg := "the reveal does not hold"
		if len(r.Problems) > 0 {
			msg = r.Problems[0]
		}
		fmt.Fprintf(stderr, "shake inspect: --reveal: %s\n", msg)
		return 1
	}
	fmt.Fprintln(w, "OK: every amount is the one the committed seed gives")
	return 0
}
