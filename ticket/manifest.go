package ticket

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/bits"
	"os"
	"path/filepath"
	"sort"
	"time"
)

// ManifestVersion is the version of manifest.json written by this code.
const ManifestVersion = 1

// ManifestShard is one shard's entry in the manifest.
type ManifestShard struct {
	Index       int          `json:"index"`
	File        string       `json:"file"`
	KeyFile     string       `json:"key_file"`
	FirstTicket uint64       `json:"first_ticket"`
	Count       uint64       `json:"count"`
	Amount      int64        `json:"amount"`
	SHA256      string       `json:"sha256"`
	Rounds      []RoundRange `json:"rounds"`
	// KeyCheck is the shard key's KeyCheck: the verifier refuses a campaign.key whose
	// derived shard keys do not match it.
	KeyCheck string `json:"key_check,omitempty"`
}

// Manifest describes a whole campaign: its budget, its rounds and every shard.
type Manifest struct {
	Version    int           `json:"version"`
	Campaign   string        `json:"campaign"`
	Currency   string        `json:"currency"`
	Budget     int64         `json:"budget"`
	Count      uint64        `json:"count"`
	Min        int64         `json:"min"`
	Max        int64         `json:"max"`
	TTL        string        `json:"ttl"` // Go duration: how long a won ticket stays openable
	TTLSeconds int64         `json:"ttl_seconds"`
	Rounds     []RoundWindow `json:"rounds"`
	// IssueUntil is when edges stop handing out tickets: the end of the last round, or
	// created_at + ttl for a campaign without rounds.
	IssueUntil time.Time `json:"issue_until"`
	// ExpiresAt is when every ticket ever issued has expired: IssueUntil + ttl. Refunds
	// of the unopened remainder are allowed only after it.
	ExpiresAt time.Time `json:"expires_at"`
	// Seed is the plain seed of a manifest written before commit and reveal; new
	// manifests leave it out (nil) and carry SeedSHA256 instead. A pointer, so an old
	// manifest's "seed": 0 re-encodes exactly and its signature still verifies.
	Seed *uint64 `json:"seed,omitempty"`
	// SeedSHA256 is the commitment to the seed: the hex SHA-256 of the seed file's exact
	// bytes (`sha256sum DIR/seed`). The seed itself stays with the operator until the
	// reveal (`shake inspect --reveal`).
	SeedSHA256 string    `json:"seed_sha256,omitempty"`
	CreatedAt  time.Time `json:"created_at"`
	// Prizes are the campaign's fixed prizes: exactly Count tickets of exactly Amount
	// each. Min and Max bound every ticket, prizes included; LuckyMin and LuckyMax (set
	// when there are prizes) bound the lucky amounts of the other tickets.
	Prizes   []Prize `json:"prizes,omitempty"`
	LuckyMin int64   `json:"lucky_min,omitempty"`
	LuckyMax int64   `json:"lucky_max,omitempty"`
	// PerUser is the campaign's rule: at most PerUser tickets opened per user per round,
	// across every edge (0 = no limit).
	PerUser int `json:"per_user"`
	// Verifiers is the number of uid shards of the verifier fleet (--uid-shard I/V must
	// name V = Verifiers), signed with the rest so that no single verifier started
	// without --uid-shard can widen the per-user rule. 0, in a manifest made before the
	// field, means 1 (see VerifierCount).
	Verifiers int `json:"verifiers,omitempty"`
	// PerDevice is the campaign's device rule: at most PerDevice wins per device (as the
	// session token names it) per round on each edge (0 = no rule). MaxRisk is the
	// highest session risk level that may win (nil, as in manifests written before the
	// rule: MaxRisk, everyone).
	PerDevice int  `json:"per_device,omitempty"`
	MaxRisk   *int `json:"max_risk,omitempty"`
	// Generation is 128 random bits (hex) chosen at every `shake gen`. Every derived key
	// but the manifest's own includes it, so a campaign id generated twice under the same
	// campaign.key never shares keys, and the ledger tells the two apart.
	Generation string          `json:"generation"`
	Shards     []ManifestShard `json:"shards"`
	// Signature is base64url HMAC-SHA256, under a key derived from campaign.key, over the
	// manifest's canonical encoding (see Sign). Empty in an unsigned manifest.
	Signature string `json:"signature,omitempty"`
}

// Prize is a fixed prize of a campaign: exactly Count tickets of exactly Amount.
type Prize struct {
	Amount int64  `json:"amount"`
	Count  uint64 `json:"count"`
}

// RiskLimit is the highest risk level a campaign lets win: *maxRisk, or MaxRisk (every
// session) when the manifest or header predates the rule.
func RiskLimit(maxRisk *int) int {
	if maxRisk == nil {
		return MaxRisk
	}
	return *maxRisk
}

// checkRules checks per_user and per_device (0..MaxPerUser) and max_risk (0..MaxRisk).
func checkRules(perUser, perDevice int, maxRisk *int) error {
	if perUser < 0 || perUser > MaxPerUser {
		return fmt.Errorf("bad per_user %d (0..%d)", perUser, MaxPerUser)
	}
	if perDevice < 0 || perDevice > MaxPerUser {
		return fmt.Errorf("bad per_device %d (0..%d)", perDevice, MaxPerUser)
	}
	if r := RiskLimit(maxRisk); r < 0 || r > MaxRisk {
		return fmt.Errorf("bad max_risk %d (0..%d)", r, MaxRisk)
	}
	return nil
}

// MaxPrizes bounds the number of distinct prizes of one campaign.
const MaxPrizes = 64

// validatePrizes checks the prize list and the lucky bounds against the campaign's.
func (m *Manifest) validatePrizes() error {
	if m.SeedSHA256 != "" && !isLowerHex(m.SeedSHA256, 64) {
		return fmt.Errorf("bad seed_sha256 %q", m.SeedSHA256)
	}
	if len(m.Prizes) == 0 {
		if m.LuckyMin != 0 || m.LuckyMax != 0 {
			return errors.New("lucky_min / lucky_max without prizes")
		}
		return nil
	}
	if len(m.Prizes) > MaxPrizes {
		return fmt.Errorf("%d prizes, at most %d", len(m.Prizes), MaxPrizes)
	}
	var n uint64
	var money int64
	for i, p := range m.Prizes {
		if p.Amount < m.Min || p.Amount > m.Max || p.Count == 0 || p.Count > m.Count-n {
			return fmt.Errorf("prize %d: %d x %d outside the campaign's amounts or count", i, p.Amount, p.Count)
		}
		if !mulAtMost(p.Count, p.Amount, m.Budget-money) {
			return fmt.Errorf("prize %d: %d x %d exceeds the budget", i, p.Amount, p.Count)
		}
		n += p.Count
		money += int64(p.Count) * p.Amount
	}
	if m.LuckyMin < m.Min || m.LuckyMax < m.LuckyMin || m.LuckyMax > m.Max {
		return fmt.Errorf("lucky amounts [%d, %d] outside [%d, %d]", m.LuckyMin, m.LuckyMax, m.Min, m.Max)
	}
	return nil
}

func isLowerHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// Limits Validate enforces, so that no sum, product or id range derived from a manifest
// can overflow.
const (
	// MaxTickets bounds a campaign's ticket count (2^40, about 10^12).
	MaxTickets = 1 << 40
	// MaxPerUser bounds the per-user rule.
	MaxPerUser = 1<<16 - 1
	// MaxVerifiers bounds the verifier fleet's uid shards.
	MaxVerifiers = 1 << 16
	// MaxTTLSeconds bounds the ticket time-to-live (100 years), far inside time.Duration.
	MaxTTLSeconds = 100 * 366 * 24 * 3600
)

// ErrBadSignature reports a manifest whose signature is missing or is not the one
// campaign.key makes.
var ErrBadSignature = errors.New("manifest signature does not verify")

// canonical returns the manifest's canonical encoding: its JSON as encoding/json writes
// it, with Signature empty (and so omitted). It is deterministic for a given value, so
// whitespace, key order or duplicate keys in the file do not matter: what is signed is
// exactly what a reader decoded and will use.
func (m *Manifest) canonical() ([]byte, error) {
	c := *m
	c.Signature = ""
	return json.Marshal(&c)
}

func (m *Manifest) mac(campaignKey []byte) ([]byte, error) {
	k, err := manifestKey(campaignKey, m.Campaign)
	if err != nil {
		return nil, err
	}
	b, err := m.canonical()
	if err != nil {
		return nil, err
	}
	h := hmac.New(sha256.New, k)
	h.Write(b)
	return h.Sum(nil), nil
}

// Sign sets m.Signature under campaignKey.
func (m *Manifest) Sign(campaignKey []byte) error {
	sum, err := m.mac(campaignKey)
	if err != nil {
		return err
	}
	m.Signature = base64.RawURLEncoding.EncodeToString(sum)
	return nil
}

// VerifySignature returns nil only when m carries the signature campaignKey makes over
// its current content, and an error wrapping ErrBadSignature otherwise.
func (m *Manifest) VerifySignature(campaignKey []byte) error {
	if m.Signature == "" {
		return fmt.Errorf("%w: the manifest is not signed", ErrBadSignature)
	}
	got, err := base64.RawURLEncoding.DecodeString(m.Signature)
	if err != nil {
		return fmt.Errorf("%w: malformed signature", ErrBadSignature)
	}
	want, err := m.mac(campaignKey)
	if err != nil {
		return err
	}
	if !hmac.Equal(got, want) {
		return fmt.Errorf("%w: the manifest was changed after generation, or campaign.key is not its key", ErrBadSignature)
	}
	return nil
}

// Digest returns the hex SHA-256 of the manifest's canonical encoding (signature
// excluded). The ledger records it when a campaign is funded, so a tool without the key
// (reconcile) can still refuse a manifest that differs from the funded one.
func (m *Manifest) Digest() (string, error) {
	b, err := m.canonical()
	if err != nil {
		return "", err
	}
	d := sha256.Sum256(b)
	return hex.EncodeToString(d[:]), nil
}

// ShardKey derives shard i's AEAD key for this manifest's campaign and generation.
func (m *Manifest) ShardKey(campaignKey []byte, shard int) ([]byte, error) {
	return ShardKey(campaignKey, m.Campaign, m.Generation, shard)
}

// TicketMAC returns the ticket-MAC checker of this manifest's campaign and generation.
func (m *Manifest) TicketMAC(campaignKey []byte) (*TicketMAC, error) {
	k, err := MACKey(campaignKey, m.Campaign, m.Generation)
	if err != nil {
		return nil, err
	}
	return NewTicketMAC(k, m.Campaign)
}

// ClaimSigner returns the claim signer of this manifest's campaign and generation.
func (m *Manifest) ClaimSigner(campaignKey []byte) (*ClaimSigner, error) {
	k, err := ClaimKey(campaignKey, m.Campaign, m.Generation)
	if err != nil {
		return nil, err
	}
	return NewClaimSigner(k)
}

// TTLDuration returns the ticket time-to-live.
func (m *Manifest) TTLDuration() time.Duration { return time.Duration(m.TTLSeconds) * time.Second }

// Validate checks the manifest's internal consistency: sums, contiguous shard ranges,
// rounds. It is the second check of the generator's invariants, at the point of use.
func (m *Manifest) Validate() error {
	if m.Version != ManifestVersion {
		return fmt.Errorf("unsupported manifest version %d", m.Version)
	}
	if err := CheckCampaign(m.Campaign); err != nil {
		return err
	}
	if !ValidCurrency(m.Currency) {
		return fmt.Errorf("bad currency %q", m.Currency)
	}
	if !ValidGeneration(m.Generation) {
		return fmt.Errorf("%w: %q", ErrBadGeneration, m.Generation)
	}
	if m.Count == 0 || m.Count > MaxTickets || m.Budget <= 0 || m.Min < 0 || m.Max < m.Min || m.Max > MaxTicketAmount {
		return fmt.Errorf("bad budget %d / count %d / min %d / max %d", m.Budget, m.Count, m.Min, m.Max)
	}
	if m.TTLSeconds <= 0 || m.TTLSeconds > MaxTTLSeconds {
		return fmt.Errorf("bad ttl_seconds %d", m.TTLSeconds)
	}
	if err := checkRules(m.PerUser, m.PerDevice, m.MaxRisk); err != nil {
		return err
	}
	if m.Verifiers < 0 || m.Verifiers > MaxVerifiers {
		return fmt.Errorf("bad verifiers %d (1..%d)", m.Verifiers, MaxVerifiers)
	}
	if m.ExpiresAt.Before(m.IssueUntil) {
		return fmt.Errorf("expires_at %s before issue_until %s", m.ExpiresAt, m.IssueUntil)
	}
	if err := validateWindows(m.Rounds); err != nil {
		return err
	}
	if err := m.validatePrizes(); err != nil {
		return err
	}
	if len(m.Shards) == 0 || len(m.Shards) > MaxShards {
		return fmt.Errorf("need 1..%d shards, have %d", MaxShards, len(m.Shards))
	}
	next, count, amount := uint64(1), uint64(0), int64(0)
	for i, s := range m.Shards {
		if s.Index != i || s.FirstTicket != next {
			return fmt.Errorf("shard %d: index or first_ticket %d not contiguous (want %d)", i, s.FirstTicket, next)
		}
		if s.File == "" || filepath.Base(s.File) != s.File || s.Amount < 0 {
			return fmt.Errorf("shard %d: bad file %q or amount %d", i, s.File, s.Amount)
		}
		if len(s.Rounds) != len(m.Rounds) {
			return fmt.Errorf("shard %d: %d round ranges for %d rounds", i, len(s.Rounds), len(m.Rounds))
		}
		if s.Count > m.Count-count || s.Amount < 0 || s.Amount > m.Budget-amount {
			return fmt.Errorf("shard %d: count or amount exceeds the campaign's", i)
		}
		rn, rc, ra := s.FirstTicket, uint64(0), int64(0)
		for j, r := range s.Rounds {
			if r.Round != j || r.FirstTicket != rn || r.Amount < 0 {
				return fmt.Errorf("shard %d: round range %d not contiguous", i, j)
			}
			if r.Count > s.Count-rc || r.Amount > s.Amount-ra {
				return fmt.Errorf("shard %d: round range %d exceeds the shard's count or amount", i, j)
			}
			rn += r.Count
			rc += r.Count
			ra += r.Amount
		}
		if rc != s.Count || ra != s.Amount {
			return fmt.Errorf("shard %d: rounds sum to %d / %d, shard says %d / %d", i, rc, ra, s.Count, s.Amount)
		}
		// In 128 bits: count*max can exceed int64 in a genuine manifest, and a crafted
		// count must not wrap either product into range.
		if !mulAtMost(s.Count, m.Min, s.Amount) || mulAtMost(s.Count, m.Max, s.Amount-1) {
			return fmt.Errorf("shard %d: amount %d impossible for %d tickets in [%d, %d]", i, s.Amount, s.Count, m.Min, m.Max)
		}
		next += s.Count
		count += s.Count
		amount += s.Amount
	}
	if count != m.Count || amount != m.Budget {
		return fmt.Errorf("shards sum to %d tickets / %d, manifest says %d / %d", count, amount, m.Count, m.Budget)
	}
	return nil
}

// mulAtMost reports whether count*amount <= bound, computed without overflow (amount >= 0;
// a negative bound is below every product).
func mulAtMost(count uint64, amount, bound int64) bool {
	if bound < 0 {
		return false
	}
	hi, lo := bits.Mul64(count, uint64(amount))
	return hi == 0 && lo <= uint64(bound)
}

// ShardOf returns the index of the shard that owns ticket id.
func (m *Manifest) ShardOf(id uint64) (int, bool) {
	i := sort.Search(len(m.Shards), func(i int) bool {
		s := &m.Shards[i]
		return s.FirstTicket+s.Count > id
	})
	if i == len(m.Shards) || id < m.Shards[i].FirstTicket {
		return 0, false
	}
	return i, true
}

// InShard reports whether ticket id lies inside shard's range.
func (m *Manifest) InShard(shard int, id uint64) bool {
	if shard < 0 || shard >= len(m.Shards) {
		return false
	}
	s := &m.Shards[shard]
	return id >= s.FirstTicket && id < s.FirstTicket+s.Count
}

// RoundOf returns the round of ticket id in shard (which must contain it).
func (m *Manifest) RoundOf(shard int, id uint64) int {
	for _, r := range m.Shards[shard].Rounds {
		if id < r.FirstTicket+r.Count {
			return r.Round
		}
	}
	return len(m.Rounds) - 1
}

// CheckHeader reports whether a shard file's header agrees with this manifest.
func (m *Manifest) CheckHeader(h *ShardHeader) error {
	if h.Shard < 0 || h.Shard >= len(m.Shards) {
		return fmt.Errorf("shard index %d not in manifest", h.Shard)
	}
	s := &m.Shards[h.Shard]
	if h.Campaign != m.Campaign || h.Generation != m.Generation || h.PerUser != m.PerUser ||
		h.PerDevice != m.PerDevice || RiskLimit(h.MaxRisk) != RiskLimit(m.MaxRisk) ||
		h.Shards != len(m.Shards) || h.FirstTicket != s.FirstTicket ||
		h.Count != s.Count || h.Amount != s.Amount || h.TTLSeconds != m.TTLSeconds {
		return fmt.Errorf("shard %d header disagrees with the manifest", h.Shard)
	}
	return nil
}

// LoadManifest reads and validates a manifest file.
func LoadManifest(path string) (*Manifest, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read manifest %s: %w", path, err)
	}
	if len(b) > 64<<20 {
		return nil, fmt.Errorf("manifest %s: %w: larger than 64 MiB", path, ErrCorrupt)
	}
	m, err := ParseManifest(b)
	if err != nil {
		return nil, fmt.Errorf("manifest %s: %w", path, err)
	}
	return m, nil
}

// LoadManifestKey reads and validates a manifest file and verifies its signature under
// campaignKey. Everything that holds campaign.key reads the manifest through it.
func LoadManifestKey(path string, campaignKey []byte) (*Manifest, error) {
	m, err := LoadManifest(path)
	if err != nil {
		return nil, err
	}
	// A wrong campaign.key is the likelier mistake than a tampered manifest: say so when
	// the shard key checks tell them apart.
	if k, err := m.ShardKey(campaignKey, 0); err != nil {
		return nil, err
	} else if err := CheckShardKey(k, m.Campaign, 0, m.Shards[0].KeyCheck); err != nil {
		return nil, fmt.Errorf("manifest %s: campaign key is not the key it was generated with: %w", path, err)
	}
	if err := m.VerifySignature(campaignKey); err != nil {
		return nil, fmt.Errorf("manifest %s: %w", path, err)
	}
	return m, nil
}

// ParseManifest decodes and validates manifest JSON.
func ParseManifest(b []byte) (*Manifest, error) {
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	if err := m.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	return &m, nil
}

// WriteFileAtomic writes data to path through a temporary file, fsync and rename, so a
// reader sees either the old file or the whole new one.
func WriteFileAtomic(path string, data []byte, perm os.FileMode) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, perm)
	if err != nil {
		return fmt.Errorf("cannot create %s: %w", tmp, err)
	}
	if _, err := f.Write(data); err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("cannot write %s: %w", path, err)
	}
	return SyncDir(filepath.Dir(path))
}

// SyncDir fsyncs a directory so that renames and creations in it are durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// ClockSkew is how far apart the clocks of the generator's host, the edges, the
// verifiers and the settler may be. Time-window checks of issue and open times allow
// this much on either side, so a correct ticket is never refused for a second of drift,
// while a token minted for a round in 2030, or opened after the campaign expired, is.
const ClockSkew = 5 * time.Second

// Errors of CheckTimes.
var (
	// ErrIssuedOutsideRound reports an issue time outside the ticket's round window.
	ErrIssuedOutsideRound = errors.New("issued outside its round's window")
	// ErrOpenedAfterExpiry reports an open after the ticket's expiry (issue time + ttl,
	// and at most the manifest's expires_at), or before its issue.
	ErrOpenedAfterExpiry = errors.New("opened after the ticket expired")
)

// CheckTimes checks a ticket's issue and open times against the campaign: issuedAt
// inside round's window (for an always-open campaign: between created_at and
// issue_until), openedAt not before issuedAt and not after min(issuedAt + ttl,
// expires_at), each with ClockSkew of slack. round must be a valid index. Times are
// compared to the millisecond, the precision the wire carries. It allocates nothing.
func (m *Manifest) CheckTimes(round int, issuedAt, openedAt time.Time) error {
	return m.CheckTimesMilli(round, issuedAt.UnixMilli(), openedAt.UnixMilli())
}

// CheckTimesMilli is CheckTimes on Unix milliseconds, for callers that hold integer
// times (the verifier's open path): integer comparisons, no time.Time arithmetic.
func (m *Manifest) CheckTimesMilli(round int, issuedMs, openedMs int64) error {
	if round < 0 || round >= len(m.Rounds) {
		return ErrIssuedOutsideRound
	}
	const skew = int64(ClockSkew / time.Millisecond)
	start, end := m.CreatedAt, m.IssueUntil
	if w := &m.Rounds[round]; !w.AlwaysOpen() {
		start, end = w.Start, w.End
	}
	if issuedMs < start.UnixMilli()-skew || issuedMs > end.UnixMilli()+skew {
		return ErrIssuedOutsideRound
	}
	// TTLSeconds is bounded by Validate (MaxTTLSeconds), so the product cannot wrap.
	expiry := min(issuedMs+m.TTLSeconds*1000, m.ExpiresAt.UnixMilli())
	if openedMs < issuedMs-skew || openedMs > expiry+skew {
		return ErrOpenedAfterExpiry
	}
	return nil
}

// VerifierCount is the number of uid shards of the verifier fleet: Verifiers, or 1 for a
// manifest made before the field.
func (m *Manifest) VerifierCount() int { return max(m.Verifiers, 1) }
