package ticket

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"hash"
	"sync"
)

// MACSize is the size of a ticket MAC: HMAC-SHA256 truncated to 96 bits, as in
// HMAC-SHA-256-96 (RFC 4868 style truncation). An attacker who wants to mint a ticket
// must guess 96 bits per attempt, and every attempt costs an online request.
const MACSize = 12

// hmacState is one reusable HMAC with its scratch buffers. Buffers live inside the pooled
// struct (not on the caller's stack) because passing a stack slice through the hash.Hash
// interface would make it escape and allocate on every call.
type hmacState struct {
	h   hash.Hash
	msg [128]byte
	sum [sha256.Size]byte
}

// hmacPool hands out HMAC-SHA256 states keyed with one key. crypto/hmac caches the
// inner and outer pad states after the first use, so a reused state costs two SHA-256
// compressions for a short message.
type hmacPool struct{ p sync.Pool }

func newHMACPool(key []byte) *hmacPool {
	k := append([]byte(nil), key...)
	hp := &hmacPool{}
	hp.p.New = func() any { return &hmacState{h: hmac.New(sha256.New, k)} }
	return hp
}

func (hp *hmacPool) get() *hmacState  { return hp.p.Get().(*hmacState) }
func (hp *hmacPool) put(s *hmacState) { hp.p.Put(s) }

// sum computes HMAC over s.msg[:n] into s.sum.
func (s *hmacState) compute(n int) []byte {
	s.h.Reset()
	s.h.Write(s.msg[:n])
	return s.h.Sum(s.sum[:0])
}

// TicketMAC signs and checks precomputed tickets of one campaign. The MAC covers the
// campaign, the ticket id, its amount and its round, so a ticket cannot be moved to
// another campaign, id, amount or round without the generator's key.
type TicketMAC struct {
	pool   *hmacPool
	prefix [1 + MaxCampaignLen + 16]byte
	plen   int
}

const ticketMACLabel = "shake-ticket-v1"

// NewTicketMAC returns a TicketMAC for campaign under macKey (see MACKey).
func NewTicketMAC(macKey []byte, campaign string) (*TicketMAC, error) {
	if len(macKey) != KeySize {
		return nil, ErrKeySize
	}
	if err := CheckCampaign(campaign); err != nil {
		return nil, err
	}
	m := &TicketMAC{pool: newHMACPool(macKey)}
	n := copy(m.prefix[:], ticketMACLabel)
	m.prefix[n] = byte(len(campaign))
	n++
	n += copy(m.prefix[n:], campaign)
	m.plen = n
	return m, nil
}

// Sum returns the MAC of ticket id with amount and round. It allocates nothing.
func (m *TicketMAC) Sum(id uint64, amount uint32, round uint16) [MACSize]byte {
	s := m.pool.get()
	n := copy(s.msg[:], m.prefix[:m.plen])
	binary.BigEndian.PutUint64(s.msg[n:], id)
	binary.BigEndian.PutUint32(s.msg[n+8:], amount)
	binary.BigEndian.PutUint16(s.msg[n+12:], round)
	full := s.compute(n + 14)
	var out [MACSize]byte
	copy(out[:], full)
	m.pool.put(s)
	return out
}

// Verify reports, in constant time, whether mac is the MAC of (id, amount, round).
func (m *TicketMAC) Verify(id uint64, amount uint32, round uint16, mac [MACSize]byte) bool {
	want := m.Sum(id, amount, round)
	return subtle.ConstantTimeCompare(want[:], mac[:]) == 1
}
