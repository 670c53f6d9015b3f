package ticket

import (
	"encoding/json"
	"fmt"
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
	ExpiresAt time.Time       `json:"expires_at"`
	Seed      uint64          `json:"seed"`
	CreatedAt time.Time       `json:"created_at"`
	Shards    []ManifestShard `json:"shards"`
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
	if m.Count == 0 || m.Budget <= 0 || m.Min < 0 || m.Max < m.Min || m.Max > MaxTicketAmount {
		return fmt.Errorf("bad budget %d / count %d / min %d / max %d", m.Budget, m.Count, m.Min, m.Max)
	}
	if m.TTLSeconds <= 0 {
		return fmt.Errorf("bad ttl_seconds %d", m.TTLSeconds)
	}
	if err := validateWindows(m.Rounds); err != nil {
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
		if int64(s.Count)*m.Min > s.Amount || int64(s.Count)*m.Max < s.Amount {
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
	if h.Campaign != m.Campaign || h.Shards != len(m.Shards) || h.FirstTicket != s.FirstTicket ||
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
