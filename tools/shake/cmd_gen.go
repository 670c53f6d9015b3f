package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"shake/ticket"
	"shake/ticketgen"
)

func init() {
	register(command{name: "gen", summary: "split a budget into precomputed tickets, one shard file per edge", run: runGen})
}

const genUsage = `
Usage: shake gen --campaign ID --key campaign.key --budget AMOUNT --count N --edges E --out DIR
                 [--min AMOUNT] [--max AMOUNT] [--weights w1,w2,...] [--round START/END]...
                 [--ttl 24h] [--seed S] [--currency CNY] [--per-user N]
                 [--prize AMOUNTxCOUNT]... [--per-device N] [--max-risk N] [--dry-run]

Splits AMOUNT (an integer in minor units, e.g. fen) into exactly N tickets whose amounts
sum exactly to AMOUNT, each between --min and --max, and writes them as one shard per edge:

  DIR/edge-NNN.tickets   the shard's tickets (zstd blocks, CRC-32C checksums, every
                         ticket MAC'd with the ticket-MAC key derived from campaign.key;
                         mode 0600)
  DIR/edge-NNN.key       the shard's AEAD key (mode 0600): give it to edge NNN only
  DIR/manifest.json      the campaign: budget, count, rounds, per_user, verifiers, prizes, every
                         shard's id range, amount and SHA-256, and seed_sha256 (the
                         commitment to the seed), signed with a key derived from
                         campaign.key (verifier, settler, inspect --key check it)
  DIR/seed               the seed every amount was drawn from (mode 0600): keep it
                         private until the event is over, then publish it so anyone can
                         check the amounts with 'shake inspect --reveal DIR/seed
                         DIR/manifest.json' (sha256sum DIR/seed = seed_sha256)

--verifiers V (default 1) is the size of the verifier fleet: V uid shards, each verifier
started with --uid-shard I/V. It is signed into the manifest, and a verifier whose V
differs refuses to start, so no single verifier can widen the per-user rule.

--per-user N (default 1; 0 = no limit) is the campaign's rule: at most N tickets opened
per user per round, across every edge. It is written into the manifest and into every
shard header (the edges' default --per-user).

Every run picks a new random generation id (manifest "generation", in every shard
header) that every derived key includes: generating the same campaign id again, even
with the same campaign.key, gives new keys, so tokens of the old generation never open
in the new one, and a ledger refuses to mix the two.

--per-device N (default 0 = no rule) is the campaign's device rule: at most N wins per
device (as the session token names it) per round on each edge. --max-risk N (default 9 =
everyone) refuses sessions whose risk level is above N (they get "miss"). Both are
written into the manifest and every shard header (the edges' defaults).

--prize AMOUNTxCOUNT (repeatable) sets aside exactly COUNT tickets of exactly AMOUNT,
spread over the shards in proportion to their tickets and over each shard's rounds, so
no shard or round gets more than its share plus one. --max may be below a prize.

The other tickets share what the prizes leave of the budget as WeChat-style "lucky"
amounts in [--min, --max], drawn with the double-mean method: each ticket is uniform
between the smallest amount that keeps the rest feasible and the smallest of --max and
twice the remaining mean, so the last ticket takes exactly what is left.

The amount a shaker gets does not depend on when they shake: an edge hands its tickets
out in id order, and within each shard and round the amounts (prizes included) are
shuffled into a uniformly random order with the seed (Fisher-Yates), so every position
of a round has the same distribution of amounts.

Tickets are split across edges by --weights (default equal; every edge gets at least one
ticket, so E <= N), the budget in proportion to each edge's tickets, and each edge's
tickets into equal parts per --round. The same --seed with the same flags and key gives
the same tickets; without --seed a random 256-bit seed is used. Either way the seed is
written to DIR/seed and only its SHA-256 to the manifest. A --seed number can be guessed,
and with it every amount from a published manifest: use it for tests and rehearsals only.

Generation streams on all cores with bounded memory and shows progress on a terminal.
Nothing is written unless everything succeeds; existing files are never overwritten.
Impossible input (budget < N*min, budget > N*max, E > N, bad rounds or weights) is
refused with exit code 2 and a one-line message naming the flag.
`

// roundsFlag collects repeated --round START/END values.
type roundsFlag []ticket.RoundWindow

func (r *roundsFlag) String() string { return fmt.Sprintf("%d rounds", len(*r)) }

func (r *roundsFlag) Set(v string) error {
	a, b, ok := strings.Cut(v, "/")
	if !ok {
		return fmt.Errorf("want START/END in RFC 3339, got %q", v)
	}
	start, err := time.Parse(time.RFC3339, a)
	if err != nil {
		return fmt.Errorf("bad start %q: want RFC 3339", a)
	}
	end, err := time.Parse(time.RFC3339, b)
	if err != nil {
		return fmt.Errorf("bad end %q: want RFC 3339", b)
	}
	if !end.After(start) {
		return fmt.Errorf("end %s is not after start %s", b, a)
	}
	*r = append(*r, ticket.RoundWindow{Index: len(*r), Start: start.UTC(), End: end.UTC()})
	return nil
}

// prizesFlag collects repeated --prize AMOUNTxCOUNT values.
type prizesFlag []ticketgen.Prize

func (p *prizesFlag) String() string { return fmt.Sprintf("%d prizes", len(*p)) }

func (p *prizesFlag) Set(v string) error {
	pr, err := ticketgen.ParsePrize(v)
	if err != nil {
		return err
	}
	*p = append(*p, pr)
	return nil
}

// parseWeights parses "w1,w2,..." into positive integers.
func parseWeights(s string) ([]uint64, error) {
	parts := strings.Split(s, ",")
	ws := make([]uint64, len(parts))
	for i, p := range parts {
		w, err := strconv.ParseUint(strings.TrimSpace(p), 10, 64)
		if err != nil || w == 0 {
			return nil, fmt.Errorf("weight %d (%q) is not a positive integer", i+1, p)
		}
		ws[i] = w
	}
	return ws, nil
}

func runGen(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("gen", genUsage, stderr)
	campaign := fs.String("campaign", "", "campaign `id`, [a-z0-9][a-z0-9-]{0,31} (required)")
	keyPath := fs.String("key", "", "campaign.key `file` from 'shake keys init' (required)")
	budget := fs.Int64("budget", 0, "total `amount` in minor units (required)")
	count := fs.Uint64("count", 0, "number of tickets `N` (required)")
	edges := fs.Int("edges", 0, "number of edge shards `E`, 1..N (required)")
	out := fs.String("out", "", "output `dir`ectory, created if missing (required)")
	minA := fs.Int64("min", ticketgen.DefaultMin, "smallest ticket `amount`")
	maxA := fs.Int64("max", 0, "largest ticket `amount` (default: the largest feasible)")
	weights := fs.String("weights", "", "comma-separated positive shard `weights`, one per edge (default equal)")
	var rounds roundsFlag
	fs.Var(&rounds, "round", "a timed round `START/END` in RFC 3339, repeatable (default: always open)")
	ttl := fs.Duration("ttl", ticketgen.DefaultTTL, "how long a won ticket stays openable")
	seed := fs.Uint64("seed", 0, "random `seed` for a reproducible split (default random, recorded in the manifest)")
	currency := fs.String("currency", ticket.DefaultCurrency, "ISO 4217 currency `code`")
	perUser := fs.Int("per-user", 1, fmt.Sprintf("at most `N` tickets opened per user per round, across every edge (0 = no limit, at most %d)", ticket.MaxPerUser))
	perDevice := fs.Int("per-device", 0, fmt.Sprintf("at most `N` wins per device per round on each edge (0 = no rule, at most %d)", ticket.MaxPerUser))
	maxRisk := fs.Int("max-risk", ticket.MaxRisk, "the highest session risk `level` that may win, 0..9 (9 = everyone)")
	var prizes prizesFlag
	fs.Var(&prizes, "prize", "a fixed prize `AMOUNTxCOUNT` (e.g. 88800x8): exactly COUNT tickets of exactly AMOUNT, repeatable")
	verifiers := fs.Int("verifiers", 1, fmt.Sprintf("the number `V` of uid shards of the verifier fleet (1..%d): each verifier must run --uid-shard I/V with this V", ticket.MaxVerifiers))
	dryRun := fs.Bool("dry-run", false, "check everything and print the plan (shards, rounds, amounts, files); write nothing")
	if ok, code := parseFlags(fs, args); !ok {
		return code
	}
	if err := requireFlag(fs, "campaign", "key", "budget", "count", "edges", "out"); err != nil {
		return usageError(stderr, "gen: %v", err)
	}
	if *minA < 1 {
		return usageError(stderr, "gen: --min: must be at least 1, have %d", *minA)
	}
	if *maxA < 0 {
		return usageError(stderr, "gen: --max: must be positive, have %d", *maxA)
	}
	if *verifiers < 1 || *verifiers > ticket.MaxVerifiers {
		return usageError(stderr, "gen: --verifiers: must be between 1 and %d, have %d", ticket.MaxVerifiers, *verifiers)
	}
	if *ttl < time.Second {
		return usageError(stderr, "gen: --ttl: must be at least 1s, have %v", *ttl)
	}
	cfg := ticketgen.Config{
		Campaign: *campaign, Currency: *currency, Budget: *budget, Count: *count, Edges: *edges,
		Min: *minA, Max: *maxA, Rounds: rounds, TTL: *ttl, Seed: *seed, OutDir: *out, PerUser: *perUser,
		Prizes: prizes, Verifiers: *verifiers, PerDevice: *perDevice, MaxRisk: maxRisk,
	}
	if *weights != "" {
		ws, err := parseWeights(*weights)
		if err != nil {
			return usageError(stderr, "gen: --weights: %v", err)
		}
		cfg.Weights = ws
	}
	seedSet := false
	fs.Visit(func(f *flag.Flag) { seedSet = seedSet || f.Name == "seed" })
	if !seedSet {
		cfg.SeedSecret = ticketgen.NewSeed()
	}
	// Check everything that needs no key first, so a missing key is not the first complaint
	// about an impossible budget; then read the key.
	if _, err := ticketgen.Plan(withDummyKey(cfg)); err != nil {
		return genError(stderr, err)
	}
	key, err := ticket.ReadKeyFile(*keyPath)
	if err != nil {
		return usageError(stderr, "gen: --key: %v", err)
	}
	cfg.CampaignKey = key
	if *dryRun {
		return genDryRun(cfg, stdout, stderr)
	}
	if isTerminal(stderr) {
		cfg.Progress = stderr
	}
	m, err := ticketgen.Generate(context.Background(), cfg)
	if err != nil {
		return genError(stderr, err)
	}
	fmt.Fprintf(stdout, "campaign %s: %d tickets, budget %d (minor units, %s), %d shards, written to %s\n",
		m.Campaign, m.Count, m.Budget, m.Currency, len(m.Shards), *out)
	fmt.Fprintf(stdout, "seed in %s (keep it private until the event is over), seed_sha256 %s in the manifest\n",
		filepath.Join(*out, ticketgen.SeedFile), m.SeedSHA256)
	return 0
}

// genDryRun is `shake gen --dry-run`: the plan and the amounts' spread, nothing written.
func genDryRun(cfg ticketgen.Config, stdout, stderr io.Writer) int {
	m, d, err := ticketgen.Preview(context.Background(), cfg)
	if err != nil {
		return genError(stderr, err)
	}
	printGenPlan(stdout, m, cfg.OutDir)
	printDistribution(stdout, m, d, false)
	return 0
}

func withDummyKey(cfg ticketgen.Config) ticketgen.Config {
	cfg.CampaignKey = make([]byte, ticket.KeySize)
	return cfg
}

// genError maps a generator error to the exit code: 2 for bad input (naming the flag),
// 1 for a failure while writing.
func genError(stderr io.Writer, err error) int {
	var ce *ticketgen.ConfigError
	if errors.As(err, &ce) {
		return usageError(stderr, "gen: %v", ce)
	}
	fmt.Fprintf(stderr, "shake gen: %s\n", strings.ReplaceAll(err.Error(), "\n", " "))
	return 1
}
