package edge

import (
	"crypto/rand"
	"encoding/binary"
	"sync/atomic"
)

// perUser counts wins per (user, round) in a fixed-size, lock-free open-addressing
// table: one 8-byte word per entry, claimed and updated with compare-and-swap, never
// resized and never deleted from.
//
//	word = fingerprint (36 bits) | round (16 bits) | wins (12 bits); 0 = empty
//
// The key is a 64-bit keyed hash of (uid, round): its low bits pick the home slot and
// its high 36 bits are the fingerprint, so two users share an entry only if their
// fingerprints match and they probe into each other's slots (about one in 2^36 per
// probe). That error can only deny a win, never grant one. When a probe sequence runs
// longer than maxProbe without finding the key or an empty slot, the table counts as
// full for that user and the answer is a miss: refusing is safe for money, growing is
// not bounded.
type perUser struct {
	slots []atomic.Uint64
	limit uint64
	seed  uint64
	used  atomic.Uint64
	full  atomic.Uint64 // refusals because the probe found no room
}

const (
	puCountBits = 12
	puRoundBits = 16
	puFPBits    = 64 - puCountBits - puRoundBits
	// MaxPerUser is the largest --per-user limit the table can count.
	MaxPerUser = 1<<puCountBits - 1
	// PerUserEntryBytes is the memory of one table entry.
	PerUserEntryBytes = 8
	maxProbe          = 512
)

// newPerUser returns a table of capacity entries that allows limit wins per user per
// round (1 <= limit <= MaxPerUser).
func newPerUser(capacity int, limit int) *perUser {
	var seed [8]byte
	_, _ = rand.Read(seed[:])
	return &perUser{
		slots: make([]atomic.Uint64, max(capacity, 1)),
		limit: uint64(limit),
		seed:  binary.LittleEndian.Uint64(seed[:]) | 1,
	}
}

// mix is the splitmix64 finaliser: a cheap, well-distributed 64-bit mix.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

const keyMask = ^uint64(1<<puCountBits - 1)

// locate returns the entry key (count bits zero) of (uid, round) and its home slot.
func (p *perUser) locate(uid uint64, round int) (key, home uint64) {
	h := mix(uid*p.seed ^ mix(uint64(round)+p.seed))
	fp := h >> (64 - puFPBits)
	if fp == 0 {
		fp = 1 // 0 marks an empty slot
	}
	key = fp<<(puRoundBits+puCountBits) | uint64(round&(1<<puRoundBits-1))<<puCountBits
	// Lemire's multiply-shift maps the low 32 bits of the hash onto [0, n) for any
	// n, so the table need not be a power of two. The low bits are disjoint from the
	// fingerprint's: two keys with one fingerprint do not also share a home slot.
	home = (h & (1<<32 - 1)) * uint64(len(p.slots)) >> 32
	return key, home
}

// acquire counts one more win for (uid, round) if the limit allows it and reports
// whether it did. A win that then fails to materialise is handed back with release.
func (p *perUser) acquire(uid uint64, round int) bool {
	key, i := p.locate(uid, round)
	n := uint64(len(p.slots))
	for probe := 0; probe < maxProbe && probe < len(p.slots); probe++ {
		s := &p.slots[i]
		for {
			w := s.Load()
			if w == 0 {
				if s.CompareAndSwap(0, key|1) {
					p.used.Add(1)
					return true
				}
				continue // someone claimed it: look at what they wrote
			}
			if w&keyMask != key {
				break
			}
			if w&(1<<puCountBits-1) >= p.limit {
				return false
			}
			if s.CompareAndSwap(w, w+1) {
				return true
			}
		}
		i++
		if i == n {
			i = 0
		}
	}
	p.full.Add(1)
	return false
}

// release undoes one acquire of (uid, round).
func (p *perUser) release(uid uint64, round int) {
	key, i := p.locate(uid, round)
	n := uint64(len(p.slots))
	for probe := 0; probe < maxProbe && probe < len(p.slots); probe++ {
		s := &p.slots[i]
		for {
			w := s.Load()
			if w == 0 || w&keyMask != key {
				break
			}
			if w&(1<<puCountBits-1) == 0 {
				return // never wrap below zero (a release without an acquire)
			}
			if s.CompareAndSwap(w, w-1) {
				return
			}
		}
		if s.Load() == 0 {
			return
		}
		i++
		if i == n {
			i = 0
		}
	}
}
