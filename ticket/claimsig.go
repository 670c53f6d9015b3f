package ticket

import (
	"crypto/subtle"
	"encoding/binary"
)

// ClaimSigSize is the size of a claim signature: HMAC-SHA256 truncated to 128 bits.
const ClaimSigSize = 16

// claimSigLabel starts every signed claim encoding, so a claim signature can never be
// confused with another HMAC made under a key derived from the same campaign.key.
const claimSigLabel = "shake-claim-v1"

// maxClaimSigMsg is the longest claim encoding: label, version, campaign (length-prefixed,
// at most MaxCampaignLen), ticket, shard, round, amount, currency (length-prefixed, 3),
// uid, issued_at, opened_at, ticket MAC.
const maxClaimSigMsg = len(claimSigLabel) + 1 + 1 + MaxCampaignLen + 8 + 4 + 4 + 8 + 1 + 3 + 8 + 8 + 8 + MACSize

// The pooled HMAC scratch buffer must hold the longest encoding.
var _ = [1]struct{}{}[len(hmacState{}.msg)/maxClaimSigMsg-1]

// ClaimSigner signs and checks the verifier's signature on claims. The signature covers
// every field of the claim (version, campaign, ticket, shard, round, amount, currency,
// uid, issued_at and opened_at in Unix milliseconds as the wire carries them, and the
// ticket MAC), so a claim cannot be forged or altered on the topic by anyone who lacks
// the key, which only verifiers and the settler derive from campaign.key (ClaimKey).
type ClaimSigner struct {
	pool *hmacPool
}

// NewClaimSigner returns a ClaimSigner under claimKey (see ClaimKey).
func NewClaimSigner(claimKey []byte) (*ClaimSigner, error) {
	if len(claimKey) != KeySize {
		return nil, ErrKeySize
	}
	return &ClaimSigner{pool: newHMACPool(claimKey)}, nil
}

// encode writes the claim's fixed binary encoding into s.msg and returns its length, or
// -1 when the campaign or currency cannot be part of a well-formed claim.
func encodeClaim(s *hmacState, c *Claim) int {
	if len(c.Campaign) == 0 || len(c.Campaign) > MaxCampaignLen || len(c.Currency) != 3 {
		return -1
	}
	b := s.msg[:0]
	b = append(b, claimSigLabel...)
	b = append(b, ClaimVersion, byte(len(c.Campaign)))
	b = append(b, c.Campaign...)
	b = binary.BigEndian.AppendUint64(b, c.Ticket)
	b = binary.BigEndian.AppendUint32(b, uint32(int32(c.Shard)))
	b = binary.BigEndian.AppendUint32(b, uint32(int32(c.Round)))
	b = binary.BigEndian.AppendUint64(b, uint64(c.Amount))
	b = append(b, byte(len(c.Currency)))
	b = append(b, c.Currency...)
	b = binary.BigEndian.AppendUint64(b, c.UID)
	b = binary.BigEndian.AppendUint64(b, uint64(c.IssuedAt.UnixMilli()))
	b = binary.BigEndian.AppendUint64(b, uint64(c.OpenedAt.UnixMilli()))
	b = append(b, c.MAC[:]...)
	return len(b)
}

// sum returns the signature of c and whether c could be encoded at all.
func (cs *ClaimSigner) sum(c *Claim) ([ClaimSigSize]byte, bool) {
	var out [ClaimSigSize]byte
	s := cs.pool.get()
	n := encodeClaim(s, c)
	if n < 0 {
		cs.pool.put(s)
		return out, false
	}
	copy(out[:], s.compute(n))
	cs.pool.put(s)
	return out, true
}

// Sign sets c.Sig to the signature over every other field of c. A claim whose campaign or
// currency is not well formed gets a zero Sig, which Verify never accepts. It allocates
// nothing.
func (cs *ClaimSigner) Sign(c *Claim) {
	sig, _ := cs.sum(c)
	c.Sig = sig
}

// Verify reports, in constant time in the signature, whether c.Sig is the signature over
// every other field of c. It allocates nothing.
func (cs *ClaimSigner) Verify(c *Claim) bool {
	want, ok := cs.sum(c)
	return ok && subtle.ConstantTimeCompare(want[:], c.Sig[:]) == 1
}
