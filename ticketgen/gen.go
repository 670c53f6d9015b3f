package ticketgen

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"shake/ticket"
)

// Defaults applied by Generate to zero Config fields.
const (
	// DefaultTTL is how long a won ticket stays openable unless Config.TTL says otherwise.
	DefaultTTL = 24 * time.Hour
	// DefaultMin is the smallest ticket amount unless Config.Min says otherwise.
	DefaultMin = 1
)

// ManifestFile is the name of the manifest inside OutDir.
const ManifestFile = "manifest.json"

// MaxShardCount bounds the tickets of one shard; ticket.ReadShard refuses larger shards.
const MaxShardCount = 1 << 40

// maxWeight bounds one shard weight so that the sum of 65536 weights fits easily in 64 bits.
const maxWeight = 1 << 32

// ErrInvalidConfig is wrapped by every *ConfigError: input no campaign can satisfy.
var ErrInvalidConfig = errors.New("invalid generator configuration")

// ConfigError reports impossible or malformed input. Field names the offending setting by
// its `shake gen` flag name (without dashes), so the CLI can name the flag.
type ConfigError struct {
	Field string
	Msg   string
}

// Error returns "--field: msg".
func (e *ConfigError) Error() string { return "--" + e.Field + ": " + e.Msg }

// Unwrap returns ErrInvalidConfig.
func (e *ConfigError) Unwrap() error { return ErrInvalidConfig }

func configErr(field, format string, args ...any) error {
	return &ConfigError{Field: field, Msg: fmt.Sprintf(format, args...)}
}

// Config is one generator run. Zero values take the documented defaults.
type Config struct {
	Campaign    string
	CampaignKey []byte // the 32-byte campaign.key
	Currency    string // default ticket.DefaultCurrency
	Budget      int64  // total in minor units
	Count       uint64 // tickets
	Edges       int    // shards, 1..Count
	Min         int64  // smallest ticket; 0 means DefaultMin
	Max         int64  // largest ticket; 0 means the largest feasible, capped at ticket.MaxTicketAmount
	Weights     []uint64
	Rounds      []ticket.RoundWindow // Index is assigned by Generate; empty means always open
	TTL         time.Duration        // how long a won ticket stays openable; 0 means DefaultTTL
	// SeedSecret is the 32-byte seed every amount is drawn from; written to OutDir/seed,
	// and only its SHA-256 to the manifest. Empty: derived from Seed (SeedFromUint64).
	SeedSecret []byte
	// Seed is a small reproducible seed for tests and rehearsals, used when SeedSecret is
	// empty. It can be guessed: real events leave it to `shake gen`'s random SeedSecret.
	Seed uint64
	// Prizes are fixed prizes (`--prize AMOUNTxCOUNT`), spread over shards and rounds;
	// the rest of Budget is split into lucky amounts in [Min, Max] among the other
	// tickets. Max may be below a prize.
	Prizes   []Prize
	OutDir   string
	Progress io.Writer // nil: quiet
	Now      time.Time // creation time; zero means time.Now()
	// PerUser is the campaign's rule, at most PerUser tickets opened per user per round
	// (0 = no limit). Unlike the other fields its zero value is not a default: `shake
	// gen` passes 1 unless told otherwise.
	PerUser int
	// Verifiers is the number of uid shards of the verifier fleet, recorded in the
	// manifest; 0 means 1.
	Verifiers int
	// PerDevice is the campaign's device rule, at most PerDevice wins per device per
	// round on each edge (0 = no rule); MaxRisk the highest session risk level that may
	// win (nil: ticket.MaxRisk, everyone).
	PerDevice int
	MaxRisk   *int
	// Generation is the campaign generation id; empty means a fresh random one
	// (ticket.NewGeneration), which is what every real run wants.
	Generation string
}

// plan is the exact split of a checked Config, before any amount is drawn.
type plan struct {
	cfg      Config
	min, max int64 // bounds of the lucky amounts
	seed     [SeedSize]byte
	// luckyCount and luckyBudget are what the prizes leave of Count and Budget.
	luckyCount  uint64
	luckyBudget int64
	alloc       [][][]uint64 // prize tickets per [shard][round][prize]; nil without prizes
	ttl         time.Duration
	rounds      []ticket.RoundWindow
	created     time.Time
	gen         string
	shards      []ticket.ManifestShard
}

func shardFile(i int) string { return fmt.Sprintf("edge-%03d.tickets", i) }
func keyFile(i int) string   { return fmt.Sprintf("edge-%03d.key", i) }

// check validates cfg, applies defaults and computes the per-shard and per-round split.
func check(cfg Config) (*plan, error) {
	p := &plan{cfg: cfg}
	if err := ticket.CheckCampaign(cfg.Campaign); err != nil {
		return nil, configErr("campaign", "%v", err)
	}
	if len(cfg.CampaignKey) != ticket.KeySize {
		return nil, configErr("key", "campaign key must be %d bytes, have %d", ticket.KeySize, len(cfg.CampaignKey))
	}
	if cfg.Currency == "" {
		p.cfg.Currency = ticket.DefaultCurrency
	} else if !ticket.ValidCurrency(cfg.Currency) {
		return nil, configErr("currency", "%q is not a three-letter upper-case currency code", cfg.Currency)
	}
	if cfg.OutDir == "" {
		return nil, configErr("out", "an output directory is required")
	}
	if err := checkRules(&cfg); err != nil {
		return nil, err
	}
	p.gen = cfg.Generation
	if p.gen == "" {
		p.gen = ticket.NewGeneration()
	} else if !ticket.ValidGeneration(p.gen) {
		return nil, configErr("generation", "%v", ticket.ErrBadGeneration)
	}
	if cfg.Count == 0 {
		return nil, configErr("count", "must be at least 1")
	}
	if cfg.Budget <= 0 {
		return nil, configErr("budget", "must be a positive integer amount in minor units, have %d", cfg.Budget)
	}
	if cfg.Edges <= 0 || cfg.Edges > ticket.MaxShards {
		return nil, configErr("edges", "must be between 1 and %d, have %d", ticket.MaxShards, cfg.Edges)
	}
	if uint64(cfg.Edges) > cfg.Count {
		return nil, configErr("edges", "%d edges for %d tickets: every edge needs at least one ticket", cfg.Edges, cfg.Count)
	}
	p.min = cfg.Min
	if p.min == 0 {
		p.min = DefaultMin
	}
	if p.min < 0 || p.min > ticket.MaxTicketAmount {
		return nil, configErr("min", "must be between 1 and %d, have %d", ticket.MaxTicketAmount, cfg.Min)
	}
	if err := p.checkSeed(); err != nil {
		return nil, err
	}
	if err := p.checkPrizes(); err != nil {
		return nil, err
	}
	// count*min <= budget, without overflow: count <= budget/min (of the lucky tickets,
	// what the prizes leave).
	if p.luckyCount > uint64(p.luckyBudget/p.min) {
		return nil, configErr(p.luckyBoundsFlag(), "%d is too small for %d tickets of at least %d (--min)", p.luckyBudget, p.luckyCount, p.min)
	}
	if cfg.Max == 0 {
		// The largest amount one ticket can take: the budget minus the minimum of all others.
		p.max = p.min
		if p.luckyCount > 0 {
			p.max = p.luckyBudget - int64(p.luckyCount-1)*p.min
		}
		if p.max > ticket.MaxTicketAmount {
			p.max = ticket.MaxTicketAmount
		}
	} else {
		p.max = cfg.Max
		if p.max < p.min || p.max > ticket.MaxTicketAmount {
			return nil, configErr("max", "must be between --min %d and %d, have %d", p.min, ticket.MaxTicketAmount, cfg.Max)
		}
	}
	if hi, lo := bits.Mul64(p.luckyCount, uint64(p.max)); hi == 0 && lo < uint64(p.luckyBudget) {
		return nil, configErr(p.luckyBoundsFlag(), "%d is too large for %d tickets of at most %d (--max)", p.luckyBudget, p.luckyCount, p.max)
	}
	p.ttl = cfg.TTL
	if p.ttl == 0 {
		p.ttl = DefaultTTL
	}
	if p.ttl < time.Second {
		return nil, configErr("ttl", "must be at least 1s, have %v", cfg.TTL)
	}
	p.ttl = p.ttl.Truncate(time.Second)

	weights := cfg.Weights
	if len(weights) == 0 {
		weights = make([]uint64, cfg.Edges)
		for i := range weights {
			weights[i] = 1
		}
	} else if len(weights) != cfg.Edges {
		return nil, configErr("weights", "%d weights for %d edges", len(weights), cfg.Edges)
	}
	for i, w := range weights {
		if w == 0 || w > maxWeight {
			return nil, configErr("weights", "weight %d is %d, must be between 1 and %d", i, w, uint64(maxWeight))
		}
	}

	p.created = cfg.Now
	if p.created.IsZero() {
		p.created = time.Now()
	}
	p.created = p.created.UTC().Truncate(time.Second)
	if err := p.checkRounds(); err != nil {
		return nil, err
	}
	if p.issueUntil().Add(p.ttl).Unix() > maxUnix {
		return nil, configErr("ttl", "tickets would expire after 2106, beyond the token's 32-bit clock")
	}

	// Counts: by weight; then a shard whose share rounded to zero takes one ticket from
	// the largest shard (which holds at least two, since Edges <= Count).
	counts := apportion(cfg.Count, weights)
	for i := range counts {
		if counts[i] == 0 {
			big := 0
			for j := range counts {
				if counts[j] > counts[big] {
					big = j
				}
			}
			counts[big]--
			counts[i]++
		}
	}
	for i := range counts {
		if counts[i] > MaxShardCount {
			return nil, configErr("count", "shard %d would hold %d tickets, more than %d: use more --edges", i, counts[i], uint64(MaxShardCount))
		}
	}
	if err := p.split(counts); err != nil {
		return nil, err
	}
	if err := p.checkChunks(); err != nil {
		return nil, err
	}
	return p, nil
}

// maxUnix is the last second a token's u32 timestamps can express.
const maxUnix = 1<<32 - 1

func (p *plan) checkRounds() error {
	if len(p.cfg.Rounds) == 0 {
		p.rounds = []ticket.RoundWindow{{Index: 0}}
		return nil
	}
	if len(p.cfg.Rounds) > 1<<16 {
		return configErr("round", "at most %d rounds, have %d", 1<<16, len(p.cfg.Rounds))
	}
	p.rounds = make([]ticket.RoundWindow, len(p.cfg.Rounds))
	for i, w := range p.cfg.Rounds {
		w.Index, w.Start, w.End = i, w.Start.UTC(), w.End.UTC()
		if w.Start.IsZero() || w.End.IsZero() || !w.End.After(w.Start) {
			return configErr("round", "round %d: end must be after start", i)
		}
		if w.Start.Unix() < 0 || w.End.Unix()+int64(p.ttl/time.Second) > maxUnix {
			return configErr("round", "round %d: times out of range", i)
		}
		if i > 0 && w.Start.Before(p.rounds[i-1].End) {
			return configErr("round", "round %d starts before round %d ends: rounds must be in order and not overlap", i, i-1)
		}
		p.rounds[i] = w
	}
	return nil
}

// issueUntil is when edges stop issuing: the end of the last round, or created + ttl.
func (p *plan) issueUntil() time.Time {
	if last := p.rounds[len(p.rounds)-1]; !last.AlwaysOpen() {
		return last.End
	}
	return p.created.Add(p.ttl)
}

func (p *plan) manifest() *ticket.Manifest {
	iu := p.issueUntil()
	m := &ticket.Manifest{
		Version: ticket.ManifestVersion, Campaign: p.cfg.Campaign, Currency: p.cfg.Currency,
		Budget: p.cfg.Budget, Count: p.cfg.Count, Min: p.min, Max: p.max,
		TTL: p.ttl.String(), TTLSeconds: int64(p.ttl / time.Second), Rounds: p.rounds,
		IssueUntil: iu, ExpiresAt: iu.Add(p.ttl), SeedSHA256: SeedCommitment(&p.seed), CreatedAt: p.created,
		PerUser: p.cfg.PerUser, Verifiers: max(p.cfg.Verifiers, 1), Generation: p.gen, Shards: p.shards,
		PerDevice: p.cfg.PerDevice, MaxRisk: p.maxRisk(),
	}
	if len(p.cfg.Prizes) > 0 {
		// Min and Max bound every ticket, prizes included; the lucky bounds are apart.
		m.Prizes, m.LuckyMin, m.LuckyMax = p.cfg.Prizes, p.min, p.max
		for _, pr := range p.cfg.Prizes {
			m.Min, m.Max = min(m.Min, pr.Amount), max(m.Max, pr.Amount)
		}
	}
	return m
}

// Plan checks cfg and returns the manifest Generate would write, without the shard
// checksums and without writing anything: a dry run.
func Plan(cfg Config) (*ticket.Manifest, error) {
	p, err := check(cfg)
	if err != nil {
		return nil, err
	}
	m := p.manifest()
	if err := m.Validate(); err != nil {
		return nil, fmt.Errorf("BUG: planned manifest does not validate: %w", err)
	}
	return m, nil
}

// Generate checks cfg, writes every shard file, shard key and the manifest into
// cfg.OutDir, and returns the manifest. On any error nothing is left in OutDir.
// Errors about the input wrap ErrInvalidConfig (as a *ConfigError).
func Generate(ctx context.Context, cfg Config) (*ticket.Manifest, error) {
	p, err := check(cfg)
	if err != nil {
		return nil, err
	}
	m := p.manifest()
	if err := os.MkdirAll(cfg.OutDir, 0o755); err != nil {
		return nil, configErr("out", "cannot create %s: %v", cfg.OutDir, err)
	}
	names := []string{ManifestFile, SeedFile}
	for i := range p.shards {
		names = append(names, shardFile(i), keyFile(i))
	}
	for _, n := range names {
		if _, err := os.Lstat(filepath.Join(cfg.OutDir, n)); err == nil {
			return nil, configErr("out", "%s already exists: refusing to overwrite a campaign", filepath.Join(cfg.OutDir, n))
		}
	}
	tmp, err := os.MkdirTemp(cfg.OutDir, ".shake-gen-")
	if err != nil {
		return nil, configErr("out", "cannot write into %s: %v", cfg.OutDir, err)
	}
	defer os.RemoveAll(tmp)

	tm, err := m.TicketMAC(cfg.CampaignKey)
	if err != nil {
		return nil, err
	}
	// The seed, 0600: the operator keeps it until the reveal.
	if err := os.WriteFile(filepath.Join(tmp, SeedFile), seedFileBytes(&p.seed), 0o600); err != nil {
		return nil, fmt.Errorf("cannot write the seed: %w", err)
	}
	if err := p.writeShards(ctx, tmp, tm); err != nil {
		return nil, err
	}
	// Second check, at the point of use: the manifest as a whole.
	if err := m.Validate(); err != nil {
		return nil, fmt.Errorf("BUG: generated manifest does not validate: %w", err)
	}
	if err := m.Sign(cfg.CampaignKey); err != nil {
		return nil, err
	}
	mj, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, err
	}
	// Move shards and keys into place, then write the manifest last.
	var moved []string
	undo := func() {
		for _, n := range moved {
			os.Remove(n)
		}
	}
	for _, n := range names[1:] {
		dst := filepath.Join(cfg.OutDir, n)
		if err := os.Rename(filepath.Join(tmp, n), dst); err != nil {
			undo()
			return nil, fmt.Errorf("cannot move %s into place: %w", n, err)
		}
		moved = append(moved, dst)
	}
	if err := ticket.WriteFileAtomic(filepath.Join(cfg.OutDir, ManifestFile), append(mj, '\n'), 0o644); err != nil {
		undo()
		return nil, err
	}
	return m, nil
}

// writeShards generates every shard into dir on GOMAXPROCS workers and fills each
// manifest shard's SHA256.
func (p *plan) writeShards(ctx context.Context, dir string, tm *ticket.TicketMAC) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var done atomic.Uint64
	stopProgress := p.startProgress(&done)
	defer stopProgress()

	jobs := make(chan int)
	var (
		wg      sync.WaitGroup
		errOnce sync.Once
		first   error
	)
	fail := func(err error) {
		errOnce.Do(func() { first = err; cancel() })
	}
	workers := runtime.GOMAXPROCS(0)
	if workers > len(p.shards) {
		workers = len(p.shards)
	}
	// Finished shard files are fsynced and closed off the generating goroutines, so a
	// worker does not sit idle in fsync; the queue is bounded, so at most a few files
	// wait open.
	toSync := make(chan *os.File, 2*workers)
	var syncWG sync.WaitGroup
	syncWG.Add(1)
	go func() {
		defer syncWG.Done()
		for f := range toSync {
			err := f.Sync()
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				fail(fmt.Errorf("cannot sync shard %s: %w", f.Name(), err))
			}
		}
	}()
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				if err := p.writeShard(ctx, dir, i, tm, &done, toSync); err != nil {
					fail(err)
				}
			}
		}()
	}
feed:
	for i := range p.shards {
		select {
		case jobs <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(jobs)
	wg.Wait()
	close(toSync)
	syncWG.Wait()
	if first != nil {
		return first
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := ticket.SyncDir(dir); err != nil {
		return fmt.Errorf("cannot sync %s: %w", dir, err)
	}
	if got := done.Load(); got != p.cfg.Count {
		return fmt.Errorf("BUG: generated %d tickets, want %d", got, p.cfg.Count)
	}
	return nil
}

// progressEvery is how many tickets a worker draws between progress and cancellation checks.
const progressEvery = 4096

// writeShard generates shard i into dir and hands the finished file to toSync, which
// fsyncs and closes it.
func (p *plan) writeShard(ctx context.Context, dir string, i int, tm *ticket.TicketMAC, done *atomic.Uint64, toSync chan<- *os.File) error {
	s := &p.shards[i]
	shardKey, err := ticket.ShardKey(p.cfg.CampaignKey, p.cfg.Campaign, p.gen, i)
	if err != nil {
		return err
	}
	if err := ticket.WriteKeyFile(filepath.Join(dir, keyFile(i)), shardKey); err != nil {
		return err
	}
	s.KeyCheck = ticket.KeyCheck(shardKey, p.cfg.Campaign, i)
	path := filepath.Join(dir, shardFile(i))
	// 0600: a shard file lists every ticket's amount and MAC; only the edge that serves
	// it (and the settler's host) should read it.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("cannot create shard %s: %w", path, err)
	}
	handedOff := false
	defer func() {
		if !handedOff {
			f.Close()
		}
	}()
	sum := sha256.New()
	h := ticket.ShardHeader{
		Version: ticket.ShardVersion, Campaign: p.cfg.Campaign, Currency: p.cfg.Currency,
		Shard: i, Shards: len(p.shards), FirstTicket: s.FirstTicket, Count: s.Count, Amount: s.Amount,
		TTLSeconds: int64(p.ttl / time.Second), Rounds: p.rounds, RoundRanges: s.Rounds, CreatedAt: p.created,
		KeyCheck: s.KeyCheck, PerUser: p.cfg.PerUser, Generation: p.gen,
		PerDevice: p.cfg.PerDevice, MaxRisk: p.maxRisk(),
	}
	sw, err := ticket.NewShardWriter(io.MultiWriter(f, sum), h)
	if err != nil {
		return fmt.Errorf("shard %d: %w", i, err)
	}
	rng := shardRand(&p.seed, i)
	amounts := prizeAmounts(p.cfg.Prizes)
	var buf []uint32
	var pending uint64
	for j, rr := range s.Rounds {
		round, id := uint16(rr.Round), rr.FirstTicket
		seg := p.segment(i, j, rr.Amount-p.prizeMoney(p.segment(i, j, 0).prizes))
		buf, err = drawSegment(rng, seg, amounts, p.min, p.max, buf, func(a uint32) error {
			if err := sw.Append(a, tm.Sum(id, a, round)); err != nil {
				return fmt.Errorf("cannot write shard %s: %w", path, err)
			}
			id++
			if pending++; pending == progressEvery {
				done.Add(pending)
				pending = 0
				return ctx.Err()
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("shard %d round %d: %w", i, rr.Round, err)
		}
	}
	done.Add(pending)
	// Close checks that the records add up to the header's count and amount.
	if err := sw.Close(); err != nil {
		return fmt.Errorf("cannot write shard %s: %w", path, err)
	}
	s.SHA256 = hex.EncodeToString(sum.Sum(nil))
	handedOff = true
	toSync <- f
	return nil
}

// progressInterval keeps the progress line to about four updates a second.
const progressInterval = 250 * time.Millisecond

// startProgress prints "tickets done / total, rate" to cfg.Progress until the returned
// function is called, which prints the final line.
func (p *plan) startProgress(done *atomic.Uint64) (stop func()) {
	w := p.cfg.Progress
	if w == nil {
		return func() {}
	}
	start := time.Now()
	print := func(end string) {
		n := done.Load()
		el := time.Since(start).Seconds()
		rate := 0.0
		if el > 0 {
			rate = float64(n) / el
		}
		fmt.Fprintf(w, "\rshake gen: %d / %d tickets (%5.1f%%), %.2fM tickets/s, %.1fs%s",
			n, p.cfg.Count, 100*float64(n)/float64(p.cfg.Count), rate/1e6, el, end)
	}
	quit := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(progressInterval)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				print("")
			case <-quit:
				print("\n")
				return
			}
		}
	}()
	return func() { close(quit); <-finished }
}
