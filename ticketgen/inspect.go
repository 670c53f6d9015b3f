package ticketgen

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"

	"shake/ticket"
)

// ErrUnreadable is wrapped by Inspect errors about a file that cannot be read at all
// (missing, a directory, no permission), as opposed to one whose contents fail a check.
var ErrUnreadable = errors.New("cannot read")

// ShardReport is what InspectShard found in one shard file. Problems lists every failed
// check; a shard is good when it is empty.
type ShardReport struct {
	Path        string
	Size        int64
	SHA256      string // hex SHA-256 of the whole file
	Header      ticket.ShardHeader
	Loaded      bool   // the file parsed and every block and checksum held
	MinAmount   uint32 // smallest and largest ticket amount, when Loaded
	MaxAmount   uint32
	Sum         int64  // sum of all ticket amounts, when Loaded
	MACsChecked uint64 // tickets whose MAC was verified (0 without a key)
	BadMACs     uint64
	Problems    []string
}

func (r *ShardReport) problem(format string, args ...any) {
	r.Problems = append(r.Problems, fmt.Sprintf(format, args...))
}

// InspectShard loads the shard file at path, checking its header, every block checksum,
// the trailer and the totals, and computes its SHA-256. With a non-nil campaignKey it also
// verifies every ticket's MAC under the ticket-MAC key derived for the header's campaign.
// The error is non-nil only when the file cannot be read (wrapping ErrUnreadable);
// corruption is reported in Problems.
func InspectShard(path string, campaignKey []byte) (*ShardReport, error) {
	return inspectShard(path, campaignKey, nil, nil)
}

// inspectShard is InspectShard; a non-nil tm (already keyed for the campaign) replaces
// the derivation from campaignKey, and a non-nil visit is handed every round's records
// of a shard that loaded.
func inspectShard(path string, campaignKey []byte, tm *ticket.TicketMAC, visit func(ticket.RoundRange, []ticket.Record)) (*ShardReport, error) {
	r := &ShardReport{Path: path}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%w shard %s: %v", ErrUnreadable, path, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%w shard %s: not a regular file", ErrUnreadable, path)
	}
	r.Size = st.Size()
	h := sha256.New()
	sh, err := ticket.ReadShard(bufio.NewReaderSize(io.TeeReader(f, h), 1<<20), path)
	// Hash whatever the reader left, so the checksum always covers the whole file.
	if _, cerr := io.Copy(h, f); cerr != nil {
		return nil, fmt.Errorf("%w shard %s: %v", ErrUnreadable, path, cerr)
	}
	r.SHA256 = hex.EncodeToString(h.Sum(nil))
	if err != nil {
		r.problem("%v", err)
		// Show what header there is, when the header itself is intact.
		if g, herr := os.Open(path); herr == nil {
			if hd, herr := ticket.ReadShardHeader(bufio.NewReader(g), path); herr == nil {
				r.Header = hd
			}
			g.Close()
		}
		return r, nil
	}
	r.Loaded = true
	r.Header = sh.Header
	r.MinAmount = ^uint32(0)
	for _, rec := range sh.Records {
		r.Sum += int64(rec.Amount)
		r.MinAmount = min(r.MinAmount, rec.Amount)
		r.MaxAmount = max(r.MaxAmount, rec.Amount)
	}
	if len(sh.Records) == 0 {
		r.MinAmount = 0
	}
	// Second check of the totals at the point of use (ReadShard checks them too).
	if r.Sum != sh.Header.Amount || uint64(len(sh.Records)) != sh.Header.Count {
		r.problem("records hold %d tickets / %d, header says %d / %d", len(sh.Records), r.Sum, sh.Header.Count, sh.Header.Amount)
	}
	r.checkRounds(sh, visit)
	if tm == nil && campaignKey != nil {
		mk, err := ticket.MACKey(campaignKey, sh.Header.Campaign, sh.Header.Generation)
		if err != nil {
			return nil, err
		}
		if tm, err = ticket.NewTicketMAC(mk, sh.Header.Campaign); err != nil {
			return nil, err
		}
	}
	if tm != nil {
		var firstBad uint64
		for _, rr := range sh.Header.RoundRanges {
			recs := sh.Records[rr.FirstTicket-sh.Header.FirstTicket:][:rr.Count]
			round := uint16(rr.Round)
			for i := range recs {
				id := rr.FirstTicket + uint64(i)
				if !tm.Verify(id, recs[i].Amount, round, recs[i].MAC) {
					if r.BadMACs == 0 {
						firstBad = id
					}
					r.BadMACs++
				}
			}
			r.MACsChecked += rr.Count
		}
		if r.BadMACs > 0 {
			r.problem("%d of %d ticket MACs do not verify (first: ticket %d): wrong key or forged tickets", r.BadMACs, r.MACsChecked, firstBad)
		}
	}
	return r, nil
}

// checkRounds checks that every round's tickets sum to the header's amount for it, and
// hands each round's records to visit (when not nil).
func (r *ShardReport) checkRounds(sh *ticket.Shard, visit func(ticket.RoundRange, []ticket.Record)) {
	for _, rr := range sh.Header.RoundRanges {
		recs := sh.Records[rr.FirstTicket-sh.Header.FirstTicket:][:rr.Count]
		var s int64
		for _, rec := range recs {
			s += int64(rec.Amount)
		}
		if s != rr.Amount {
			r.problem("round %d: tickets sum to %d, header says %d", rr.Round, s, rr.Amount)
		}
		if visit != nil {
			visit(rr, recs)
		}
	}
}

// ManifestReport is what InspectManifest found: the manifest and every shard it lists.
type ManifestReport struct {
	Path     string
	Manifest *ticket.Manifest // nil when the manifest itself is corrupt
	Shards   []*ShardReport
	KeyFiles int // shard key files checked against the campaign key
	// Distribution is how the amounts in the files are spread: every amount, the largest
	// per shard-round, and the tickets holding each prize's amount.
	Distribution *Distribution
	Problems     []string
}

func (r *ManifestReport) problem(format string, args ...any) {
	r.Problems = append(r.Problems, fmt.Sprintf(format, args...))
}

// OK reports whether the manifest and every shard passed every check.
func (r *ManifestReport) OK() bool {
	if len(r.Problems) > 0 || r.Manifest == nil {
		return false
	}
	for _, s := range r.Shards {
		if len(s.Problems) > 0 {
			return false
		}
	}
	return true
}

// InspectManifest validates the manifest at path and inspects every shard file it lists
// (relative to the manifest's directory): each file's SHA-256 against the manifest, its
// header against the manifest, its totals, and every amount inside [min, max]. With a
// non-nil campaignKey it also verifies every ticket MAC and that each shard key file
// present holds the key derived for its shard. The error is non-nil only when the
// manifest cannot be read at all.
func InspectManifest(path string, campaignKey []byte) (*ManifestReport, error) {
	r := &ManifestReport{Path: path}
	if err := checkRegular("manifest", path); err != nil {
		return nil, err
	}
	m, err := ticket.LoadManifest(path)
	if err != nil {
		r.problem("%v", err)
		return r, nil
	}
	r.Manifest = m
	var tm *ticket.TicketMAC
	if campaignKey != nil {
		// With the key, the manifest's signature is checked first: a manifest changed
		// after generation (expires_at moved, say) is a failure however consistent it is.
		if err := m.VerifySignature(campaignKey); err != nil {
			r.problem("%v", err)
		}
		if tm, err = m.TicketMAC(campaignKey); err != nil {
			return nil, err
		}
	}
	dir := filepath.Dir(path)
	r.Distribution = newDistribution(m.Prizes, m.Shards)
	for i := range m.Shards {
		ms := &m.Shards[i]
		sp := filepath.Join(dir, ms.File)
		sr, err := inspectShard(sp, nil, tm, r.Distribution.visitor(i))
		if err != nil {
			r.problem("shard %d: %v", i, err)
			continue
		}
		r.Shards = append(r.Shards, sr)
		if sr.SHA256 != ms.SHA256 {
			sr.problem("SHA-256 %s, manifest says %s", sr.SHA256, ms.SHA256)
		}
		if !sr.Loaded {
			continue
		}
		h := &sr.Header
		if h.Shard != i {
			sr.problem("file holds shard %d, manifest lists it as shard %d", h.Shard, i)
		} else if err := m.CheckHeader(h); err != nil {
			sr.problem("%v", err)
		}
		if h.Currency != m.Currency {
			sr.problem("currency %s, manifest says %s", h.Currency, m.Currency)
		}
		if !sameRounds(h.Rounds, m.Rounds) {
			sr.problem("round windows differ from the manifest's")
		}
		if !slices.Equal(h.RoundRanges, ms.Rounds) {
			sr.problem("round ranges differ from the manifest's")
		}
		if h.Count > 0 && (int64(sr.MinAmount) < m.Min || int64(sr.MaxAmount) > m.Max) {
			sr.problem("amounts %d..%d outside the manifest's [%d, %d]", sr.MinAmount, sr.MaxAmount, m.Min, m.Max)
		}
		if campaignKey != nil && ms.KeyFile != "" {
			kp := filepath.Join(dir, ms.KeyFile)
			got, err := os.ReadFile(kp)
			switch {
			case errors.Is(err, fs.ErrNotExist):
				// Key files are handed to their edges and may have been moved away.
			case err != nil:
				sr.problem("shard key %s: %v", kp, err)
			default:
				want, err := m.ShardKey(campaignKey, i)
				if err != nil {
					return nil, err
				}
				r.KeyFiles++
				if string(got) != string(want) {
					sr.problem("shard key %s is not the key derived for shard %d", kp, i)
				}
			}
		}
	}
	r.checkPrizes(m)
	return r, nil
}

// checkPrizes compares the prize tickets found in the files with the plan's spread. A
// prize above the lucky amounts' largest must be found exactly as planned in every
// shard-round; one a lucky amount can equal, at least as planned.
func (r *ManifestReport) checkPrizes(m *ticket.Manifest) {
	if len(m.Prizes) == 0 || len(r.Shards) != len(m.Shards) {
		return
	}
	plan, err := allocatePrizes(m.Prizes, m.Shards, m.Count)
	if err != nil {
		r.problem("the manifest's prizes cannot be spread over its shards: %v", err)
		return
	}
	for i := range plan {
		if !r.Shards[i].Loaded {
			continue
		}
		for j := range plan[i] {
			for k, pr := range m.Prizes {
				got, want := r.Distribution.PrizeTickets[i][j][k], plan[i][j][k]
				if got < want || (pr.Amount > m.LuckyMax && got != want) {
					r.problem("shard %d round %d: %d tickets of prize %d, the manifest's plan gives %d", i, j, got, pr.Amount, want)
				}
			}
		}
	}
}

// checkRegular returns an error wrapping ErrUnreadable unless path is a regular file.
func checkRegular(kind, path string) error {
	st, err := os.Stat(path)
	if err == nil && !st.Mode().IsRegular() {
		err = errors.New("not a regular file")
	}
	if err != nil {
		return fmt.Errorf("%w %s %s: %v", ErrUnreadable, kind, path, err)
	}
	return nil
}

func sameRounds(a, b []ticket.RoundWindow) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Index != b[i].Index || !a[i].Start.Equal(b[i].Start) || !a[i].End.Equal(b[i].End) {
			return false
		}
	}
	return true
}
