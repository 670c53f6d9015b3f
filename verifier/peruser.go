package verifier

import (
	"crypto/rand"
	"encoding/binary"
	"math/bits"
	"sync"
)

// userTable counts, for every user of this verifier's uid shard, the tickets opened in
// each round: the campaign-wide per_user rule. Its design:
//
//   - Exact keys. An entry is the full 64-bit uid plus (round, count), never a
//     fingerprint: the verifier is the authority on the rule, and a fingerprint
//     collision would answer limit_reached to a user who won a ticket fairly.
//   - 12 bytes per slot, as three uint32 words in one array (uid low, uid high, meta =
//     round<<16 | count): a Go struct of a uint64 and a uint32 pads to 16 bytes, and
//     two parallel arrays would cost two cache misses per probe instead of one.
//   - Open addressing with linear probing and backward-shift deletion (an entry whose
//     count is given back to 0 is removed, so meta == 0 always means an empty slot and
//     probe chains need no tombstones).
//   - Lock striping. Reserving a count must be atomic with the check of the cap (two
//     concurrent opens of one user must not both pass a cap of 1), and an exact key
//     does not fit in one CAS word, so each stripe has a mutex. With up to 1,024 stripes
//     and a critical section of a few probes, two requests meet on one lock about as
//     often as two cores hash into one stripe at the same moment: rarely, and briefly.
//   - Pre-sized from the manifest: every entry holds at least one opened ticket of this
//     verifier's users, so the entries never outnumber count/V (the campaign's tickets
//     over the number of uid shards, for an even uid spread). The table is sized for
//     that at a load of 0.8: 12/0.8 = 15 bytes per ticket of this verifier's share,
//     which is 15 bytes per opened ticket when they are all opened (and fewer per
//     opened ticket when per_user > 1 lets one entry count several). A stripe that skew
//     fills beyond 0.9 doubles under its own lock: an allocation and a rehash off the
//     common path, and the whole table stays bounded by the tickets actually opened.
//
// A user's entries in different rounds are separate keys (uid, round), as the rule is
// per round.
type userTable struct {
	stripes []userStripe
	shift   uint // stripe index = hash >> shift
	limit   uint32
	seed    uint64
}

// userStripe is one lock and its slots, padded to a cache line so that neighbouring
// stripes' locks do not share one.
type userStripe struct {
	mu   sync.Mutex
	used int
	seed uint64 // the table's hash key, for rehashing on growth and deletion
	n    int    // slots
	w    []uint32
	_    [128 - 8 - 8 - 8 - 8 - 24]byte
}

// Slot i of a stripe is w[3i] (uid low 32 bits), w[3i+1] (uid high), w[3i+2] (meta).
func (s *userStripe) meta(i int) uint32 { return s.w[3*i+2] }

func (s *userStripe) uid(i int) uint64 { return uint64(s.w[3*i]) | uint64(s.w[3*i+1])<<32 }

func (s *userStripe) set(i int, uid uint64, meta uint32) {
	s.w[3*i], s.w[3*i+1], s.w[3*i+2] = uint32(uid), uint32(uid>>32), meta
}

func (s *userStripe) alloc(n int) {
	s.n = n
	s.w = make([]uint32, 3*n)
}

const (
	// UserSlotBytes is the memory of one per-user table slot.
	UserSlotBytes = 12
	userLoad      = 0.8 // the pre-sized load when every ticket of the share is opened
	userGrowLoad  = 0.9 // a stripe beyond this doubles
	userMaxCount  = 1<<16 - 1
	userMinStripe = 64
	userMaxStrips = 1024
	// userStripeTarget is the pre-sized slots per stripe below which fewer stripes are
	// used: a small campaign does not need 1,024 locks, and a tiny stripe fills unevenly.
	userStripeTarget = 4096
)

// newUserTable returns a table for at most limit tickets per user per round
// (1 <= limit <= 65535), sized for expect entries.
func newUserTable(expect uint64, limit int) *userTable {
	slots := uint64(float64(expect)/userLoad) + 1
	n := 1
	for n < userMaxStrips && uint64(n)*2*userStripeTarget <= slots {
		n *= 2
	}
	per := int((slots + uint64(n) - 1) / uint64(n))
	per = max(per, userMinStripe)
	var seed [8]byte
	_, _ = rand.Read(seed[:])
	t := &userTable{
		stripes: make([]userStripe, n),
		shift:   uint(64 - bits.TrailingZeros(uint(n))),
		limit:   uint32(min(max(limit, 1), userMaxCount)),
		seed:    binary.LittleEndian.Uint64(seed[:]),
	}
	for i := range t.stripes {
		t.stripes[i].seed = t.seed
		t.stripes[i].alloc(per)
	}
	return t
}

// hash is a keyed splitmix64 mix of (uid, round): its high bits pick the stripe, its
// low 32 bits the home slot. The key is per process, so no one can choose uids that
// pile into one stripe.
func (t *userTable) hash(uid uint64, round uint16) uint64 { return hashUser(t.seed, uid, round) }

func hashUser(seed, uid uint64, round uint16) uint64 {
	z := uid ^ seed ^ uint64(round)*0x9e3779b97f4a7c15
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

func (t *userTable) stripe(h uint64) *userStripe {
	if t.shift == 64 {
		return &t.stripes[0]
	}
	return &t.stripes[h>>t.shift]
}

// home maps the low 32 bits of h onto [0, n) (Lemire's multiply-shift), so a stripe's
// size need not be a power of two.
func home(h uint64, n int) int { return int((h & (1<<32 - 1)) * uint64(n) >> 32) }

// find returns the slot holding (uid, round), or the empty slot where it would go and
// false. The caller holds s.mu; the stripe is never full (see grow).
func (s *userStripe) find(h, uid uint64, round uint16) (int, bool) {
	n := s.n
	i := home(h, n)
	for {
		m := s.meta(i)
		if m == 0 {
			return i, false
		}
		if s.uid(i) == uid && uint16(m>>16) == round {
			return i, true
		}
		if i++; i == n {
			i = 0
		}
	}
}

// reserve counts one more opened ticket for (uid, round) if the rule allows it and
// reports whether it did. It allocates nothing unless the stripe must grow.
func (t *userTable) reserve(uid uint64, round uint16) bool {
	h := t.hash(uid, round)
	s := t.stripe(h)
	s.mu.Lock()
	i, ok := s.find(h, uid, round)
	if ok {
		if s.meta(i)&0xffff >= t.limit {
			s.mu.Unlock()
			return false
		}
		s.w[3*i+2]++
		s.mu.Unlock()
		return true
	}
	s.insert(h, i, uid, round, 1)
	s.mu.Unlock()
	return true
}

// restore counts an opened ticket found at start (in the claims topic or the spool),
// whatever the rule says: what was acknowledged is a fact, and the count only has to
// reflect it.
func (t *userTable) restore(uid uint64, round uint16) {
	h := t.hash(uid, round)
	s := t.stripe(h)
	s.mu.Lock()
	if i, ok := s.find(h, uid, round); ok {
		if s.meta(i)&0xffff < userMaxCount {
			s.w[3*i+2]++
		}
	} else {
		s.insert(h, i, uid, round, 1)
	}
	s.mu.Unlock()
}

// giveBack undoes a reserve. The open path no longer calls it after a failed write (the
// write may still land: see Server.doubt); the model test and the benchmarks use it to
// empty the table. An entry that drops to 0 is deleted.
func (t *userTable) giveBack(uid uint64, round uint16) {
	h := t.hash(uid, round)
	s := t.stripe(h)
	s.mu.Lock()
	if i, ok := s.find(h, uid, round); ok {
		if s.meta(i)&0xffff > 1 {
			s.w[3*i+2]--
		} else {
			s.remove(i)
		}
	}
	s.mu.Unlock()
}

// count returns the tickets counted for (uid, round).
func (t *userTable) count(uid uint64, round uint16) int {
	h := t.hash(uid, round)
	s := t.stripe(h)
	s.mu.Lock()
	defer s.mu.Unlock()
	if i, ok := s.find(h, uid, round); ok {
		return int(s.meta(i) & 0xffff)
	}
	return 0
}

// insert writes a new entry at the empty slot i, growing the stripe first when it
// would pass userGrowLoad.
func (s *userStripe) insert(h uint64, i int, uid uint64, round uint16, n uint32) {
	if float64(s.used+1) > userGrowLoad*float64(s.n) {
		s.grow()
		i, _ = s.find(h, uid, round)
	}
	s.set(i, uid, uint32(round)<<16|n)
	s.used++
}

// grow doubles the stripe and reinserts its entries. It runs under the stripe's lock,
// so only the users hashed to this stripe wait for it.
func (s *userStripe) grow() {
	old := userStripe{n: s.n, w: s.w}
	s.alloc(2 * old.n)
	for j := 0; j < old.n; j++ {
		m := old.meta(j)
		if m == 0 {
			continue
		}
		u := old.uid(j)
		i := home(hashUser(s.seed, u, uint16(m>>16)), s.n)
		for s.meta(i) != 0 {
			if i++; i == s.n {
				i = 0
			}
		}
		s.set(i, u, m)
	}
}

// remove deletes slot i by backward shifting: each later entry of the probe run that
// may move into the gap (its home is not between the gap and itself) does, so no
// lookup ever stops early at a hole.
func (s *userStripe) remove(i int) {
	n := s.n
	s.used--
	gap := i
	j := i
	for {
		if j++; j == n {
			j = 0
		}
		m := s.meta(j)
		if m == 0 {
			break
		}
		u := s.uid(j)
		k := home(hashUser(s.seed, u, uint16(m>>16)), n)
		// Move j into gap unless its home k lies cyclically in (gap, j].
		if (gap <= j && (k <= gap || k > j)) || (gap > j && k <= gap && k > j) {
			s.set(gap, u, m)
			gap = j
		}
	}
	s.set(gap, 0, 0)
}

// stats returns the memory of the table's slots and the (uid, round) entries it
// holds (0, 0 for a nil table).
func (t *userTable) stats() (bytes, entries int64) {
	if t == nil {
		return 0, 0
	}
	for i := range t.stripes {
		s := &t.stripes[i]
		s.mu.Lock()
		bytes += int64(s.n) * UserSlotBytes
		entries += int64(s.used)
		s.mu.Unlock()
	}
	return bytes, entries
}

func (t *userTable) bytes() int64 { b, _ := t.stats(); return b }

func (t *userTable) entries() int64 { _, e := t.stats(); return e }
