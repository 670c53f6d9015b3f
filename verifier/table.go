package verifier

import (
	"sync/atomic"
)

// claimTable remembers, for every ticket of the campaign, whether it has been opened, by
// whom, and whether that open is durable yet. It is the per-shard "bitmap" of the design,
// widened from 1 to 32 bits per ticket so that it can also tell the same user's retry
// (answered with the same 200) from another user's open of the same ticket (409):
//
//	0                      free
//	slotClaimed | own | fp an open is in flight (its durable write has not finished)
//	slotClaimed | slotDurable | own | fp
//	                       opened and durable
//
// fp is a 29-bit keyed fingerprint of the opener's uid, and own (slotOwn) says whether
// that uid belongs to this verifier's uid shard. Every open this verifier makes is its
// own; a claim of another shard's user, found in the claims topic at start, marks its
// ticket as opened without own, so that the same ticket is 409 here too, but it yields
// to a claim of one of our own users for the same ticket (only possible for a ticket
// handed out twice): the answer this verifier gave before a restart is the one it gives
// after it. Why not 1 bit plus a map of
// openers: a Go map costs 40-50 bytes per opened ticket and allocates on the hot path,
// while most won tickets are opened, so 4 fixed bytes per ticket is both smaller and
// allocation-free (CAS on one word, no lock). The table is sized from the manifest at
// start, so its memory is bounded and known up front (4 bytes x tickets).
//
// A fingerprint collision (2^-29 for a given pair of uids; the key is per process and
// never leaves it, so it cannot be searched offline) can only matter when two users hold
// a token for the same ticket, which needs a leaked shard key; then the second user gets
// the first user's 200 without a second claim being made, so no money moves twice.
type claimTable struct {
	shards []shardSlots
	key    uint64
}

type shardSlots struct {
	first uint64
	slots []atomic.Uint32
}

const (
	slotOwn     = 1 << 29
	slotClaimed = 1 << 30
	slotDurable = 1 << 31
	fpMask      = slotOwn - 1
)

// claimResult is the outcome of claimTable.claim.
type claimResult uint8

const (
	claimNew      claimResult = iota // the caller now owns the in-flight open
	claimDurable                     // same user, already durable: answer the same 200
	claimInFlight                    // same user, the first open is still being written
	claimOther                       // another user opened this ticket: 409
)

func newClaimTable(firsts, counts []uint64, key uint64) *claimTable {
	t := &claimTable{shards: make([]shardSlots, len(firsts)), key: key}
	for i := range firsts {
		t.shards[i] = shardSlots{first: firsts[i], slots: make([]atomic.Uint32, counts[i])}
	}
	return t
}

// fingerprint returns the keyed 29-bit fingerprint of uid (a splitmix64 finaliser over
// uid xor the per-process key).
func (t *claimTable) fingerprint(uid uint64) uint32 {
	z := uid ^ t.key
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	z ^= z >> 31
	return uint32(z) & fpMask
}

// slot returns the slot of ticket id in shard; the caller has checked the range.
func (t *claimTable) slot(shard int, id uint64) *atomic.Uint32 {
	s := &t.shards[shard]
	return &s.slots[id-s.first]
}

// claim tries to take ticket id of shard for the user with fingerprint fp.
func (t *claimTable) claim(shard int, id uint64, fp uint32) claimResult {
	sl := t.slot(shard, id)
	for {
		v := sl.Load()
		if v == 0 {
			if sl.CompareAndSwap(0, slotClaimed|slotOwn|fp) {
				return claimNew
			}
			continue
		}
		switch {
		case v&fpMask != fp:
			return claimOther
		case v&slotDurable != 0:
			return claimDurable
		default:
			return claimInFlight
		}
	}
}

// state reads the slot: whether it is free, and whether it is durable.
func (t *claimTable) state(shard int, id uint64) (free, durable bool) {
	v := t.slot(shard, id).Load()
	return v == 0, v&slotDurable != 0
}

// heldBy reports whether the user with fingerprint fp holds the claim on ticket id
// (durable or still being written).
func (t *claimTable) heldBy(shard int, id uint64, fp uint32) bool {
	v := t.slot(shard, id).Load()
	return v != 0 && v&fpMask == fp
}

// markDurable records that the owner's open is durable.
func (t *claimTable) markDurable(shard int, id uint64, fp uint32) {
	t.slot(shard, id).Store(slotClaimed | slotDurable | slotOwn | fp)
}

// release frees a claim whose durable write failed, so that the user's retry can
// claim it again.
func (t *claimTable) release(shard int, id uint64) { t.slot(shard, id).Store(0) }

// restore marks a ticket found durable at start (in the claims topic or the spool) as
// opened by uid, own telling whether uid is of this verifier's uid shard. It reports
// whether the ticket now counts for uid where it did not before, which is when the
// caller counts it against the user's rule. Repeats of one claim (a replayed spool
// batch, a producer retry) change nothing. Restores run concurrently, one goroutine per
// partition; the claims of one ticket share a partition (key = ticket id), so the first
// in the topic wins, except that a claim of our own user takes a ticket from another
// shard's user.
func (t *claimTable) restore(shard int, id uint64, uid uint64, own bool) bool {
	fp := t.fingerprint(uid)
	nv := uint32(slotClaimed | slotDurable | fp)
	if own {
		nv |= slotOwn
	}
	sl := t.slot(shard, id)
	for {
		v := sl.Load()
		switch {
		case v == 0:
		case v&fpMask == fp:
			return false
		case own && v&slotOwn == 0:
		default:
			return false
		}
		if sl.CompareAndSwap(v, nv) {
			return true
		}
	}
}
