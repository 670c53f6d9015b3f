package ticket

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"sync/atomic"
)

// Token errors. ErrInvalidToken covers every malformed, tampered or unknown-key token:
// the verifier answers 422 and learns nothing more. ErrTokenExpired is distinct (410).
var (
	ErrInvalidToken = errors.New("ticket token is invalid")
	ErrTokenExpired = errors.New("ticket token has expired")
)

// The sealed user ticket token.
//
//	raw = version(1) | shard u16 BE (key id) | nonce(12) | AES-256-GCM(plaintext) | tag(16)
//	plaintext = ticket u64 | uid u64 | amount u32 | ticket MAC(12) | round u16 |
//	            issued_at u32 | expires_at u32          (all big endian, unix seconds)
//	token = base64url(raw), no padding
//
// The version and shard bytes are the AEAD's associated data, so the key id cannot be
// swapped. The uid is inside the authenticated plaintext: a token is bound to its user,
// and opening it under another user's session is told apart (403) from tampering (422).
const (
	tokenVersion   = 1
	tokenHeaderLen = 1 + 2
	tokenNonceLen  = 12
	tokenPlainLen  = 8 + 8 + 4 + MACSize + 2 + 4 + 4
	tokenTagLen    = 16
	// TokenRawLen is the size of a decoded token.
	TokenRawLen = tokenHeaderLen + tokenNonceLen + tokenPlainLen + tokenTagLen
	// TokenLen is the length of an encoded token (at most 160 characters per docs/api.md).
	TokenLen = (TokenRawLen*8 + 5) / 6
)

// tokenEncoding is strict: the unused low bits of the last character must be zero, so a
// token has exactly one spelling and a flipped last character cannot still open.
var tokenEncoding = base64.RawURLEncoding.Strict()

// MaxShards is the largest number of edge shards a campaign can have (the key id is u16).
const MaxShards = 1 << 16

// TicketToken is the content of a sealed token.
type TicketToken struct {
	Shard     uint16
	Ticket    uint64
	UID       uint64
	Amount    uint32
	MAC       [MACSize]byte
	Round     uint16
	IssuedAt  uint32 // unix seconds
	ExpiresAt uint32 // unix seconds
}

func newGCM(key []byte) (cipher.AEAD, error) {
	if len(key) != KeySize {
		return nil, ErrKeySize
	}
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(b)
}

// Sealer seals tokens for one shard. It is safe for concurrent use.
//
// A nonce is what the user sees of a token in the clear, so it must not count: a salt
// plus a counter would tell a user who wins twice how many tickets the edge handed out
// in between. Each nonce is instead the first 12 bytes of AES-128, under a random
// per-process key, of a 16-byte block holding a counter (a pseudo-random permutation
// of the counter): without the key the nonces of one process are indistinguishable
// from random, so they carry neither order nor distance. Distinct counters give
// distinct blocks; two 12-byte prefixes collide with probability below n^2/2^97 for n
// nonces under one shard key (all its runs together), the bound of the random-nonce
// construction in NIST SP 800-38D 8.2.2, which allows 2^32; a shard key seals at most
// its shard's tickets. It costs one AES block per token and no syscall.
type Sealer struct {
	shard uint16
	aead  cipher.AEAD
	nonce cipher.Block // per-process key: permutes the counter into the nonce
	ctr   atomic.Uint64
}

// NewSealer returns a Sealer for shard under its derived shard key.
func NewSealer(shardKey []byte, shard int) (*Sealer, error) {
	if shard < 0 || shard >= MaxShards {
		return nil, fmt.Errorf("shard index %d out of range", shard)
	}
	a, err := newGCM(shardKey)
	if err != nil {
		return nil, err
	}
	var nk [16]byte
	_, _ = rand.Read(nk[:]) // crypto/rand.Read never fails (it crashes the program instead)
	nb, err := aes.NewCipher(nk[:])
	if err != nil {
		return nil, err
	}
	return &Sealer{shard: uint16(shard), aead: a, nonce: nb}, nil
}

// Seal appends the encoded token for t (t.Shard is ignored: the sealer's shard is used) to
// dst. It allocates nothing when dst has TokenLen+TokenRawLen bytes of spare capacity; the
// raw token is built in that spare space behind the encoded output.
func (s *Sealer) Seal(dst []byte, t *TicketToken) []byte {
	start := len(dst)
	need := TokenLen + TokenRawLen
	if cap(dst)-start < need {
		nd := make([]byte, start, start+need)
		copy(nd, dst)
		dst = nd
	}
	buf := dst[start : start+need]
	raw := buf[TokenLen:]
	raw[0] = tokenVersion
	binary.BigEndian.PutUint16(raw[1:], s.shard)
	// The counter block is built and encrypted in place in the output buffer (a local
	// array would escape through the cipher.Block interface and allocate); its last 4
	// bytes spill into the plaintext area, which is written next.
	blk := raw[tokenHeaderLen : tokenHeaderLen+aes.BlockSize]
	binary.BigEndian.PutUint64(blk[0:], s.ctr.Add(1))
	binary.BigEndian.PutUint64(blk[8:], 0)
	s.nonce.Encrypt(blk, blk)
	nonce := raw[tokenHeaderLen : tokenHeaderLen+tokenNonceLen]
	p := raw[tokenHeaderLen+tokenNonceLen:]
	binary.BigEndian.PutUint64(p[0:], t.Ticket)
	binary.BigEndian.PutUint64(p[8:], t.UID)
	binary.BigEndian.PutUint32(p[16:], t.Amount)
	copy(p[20:20+MACSize], t.MAC[:])
	binary.BigEndian.PutUint16(p[32:], t.Round)
	binary.BigEndian.PutUint32(p[34:], t.IssuedAt)
	binary.BigEndian.PutUint32(p[38:], t.ExpiresAt)
	s.aead.Seal(p[:0], nonce, p[:tokenPlainLen], raw[:tokenHeaderLen])
	tokenEncoding.Encode(buf[:TokenLen], raw)
	return dst[:start+TokenLen]
}

// TokenShard returns the shard (key id) named by an encoded token without opening it.
func TokenShard(tok []byte) (uint16, error) {
	if len(tok) != TokenLen {
		return 0, ErrInvalidToken
	}
	var head [4]byte // 4 chars decode to 3 bytes: version + shard
	if _, err := tokenEncoding.Decode(head[:], tok[:4]); err != nil || head[0] != tokenVersion {
		return 0, ErrInvalidToken
	}
	return binary.BigEndian.Uint16(head[1:]), nil
}

// Opener opens tokens sealed by any shard of one campaign. It is safe for concurrent use.
type Opener struct {
	aeads []cipher.AEAD
}

// NewOpener returns an Opener from the per-shard keys, indexed by shard.
func NewOpener(shardKeys [][]byte) (*Opener, error) {
	if len(shardKeys) == 0 || len(shardKeys) > MaxShards {
		return nil, fmt.Errorf("need 1..%d shard keys, have %d", MaxShards, len(shardKeys))
	}
	o := &Opener{aeads: make([]cipher.AEAD, len(shardKeys))}
	for i, k := range shardKeys {
		a, err := newGCM(k)
		if err != nil {
			return nil, fmt.Errorf("shard %d: %w", i, err)
		}
		o.aeads[i] = a
	}
	return o, nil
}

// Open decodes and authenticates tok into t. scratch must have at least TokenRawLen bytes
// of capacity; Open allocates nothing. It does not check the uid or the expiry: the
// caller compares t.UID with the session and t.ExpiresAt with its clock.
func (o *Opener) Open(t *TicketToken, tok []byte, scratch []byte) error {
	if len(tok) != TokenLen || cap(scratch) < TokenRawLen {
		return ErrInvalidToken
	}
	raw := scratch[:TokenRawLen]
	n, err := tokenEncoding.Decode(raw, tok)
	if err != nil || n != TokenRawLen || raw[0] != tokenVersion {
		return ErrInvalidToken
	}
	shard := binary.BigEndian.Uint16(raw[1:])
	if int(shard) >= len(o.aeads) {
		return ErrInvalidToken
	}
	nonce := raw[tokenHeaderLen : tokenHeaderLen+tokenNonceLen]
	ct := raw[tokenHeaderLen+tokenNonceLen:]
	p, err := o.aeads[shard].Open(ct[:0], nonce, ct, raw[:tokenHeaderLen])
	if err != nil {
		return ErrInvalidToken
	}
	t.Shard = shard
	t.Ticket = binary.BigEndian.Uint64(p[0:])
	t.UID = binary.BigEndian.Uint64(p[8:])
	t.Amount = binary.BigEndian.Uint32(p[16:])
	copy(t.MAC[:], p[20:20+MACSize])
	t.Round = binary.BigEndian.Uint16(p[32:])
	t.IssuedAt = binary.BigEndian.Uint32(p[34:])
	t.ExpiresAt = binary.BigEndian.Uint32(p[38:])
	return nil
}
