package edge

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"unsafe"

	"shake/ticket"
)

// The state file records, per round, how far into the shard the edge has reserved
// tickets. It is what makes "never the same ticket twice" survive kill -9.
//
//	slot A | slot B | cursor region            (all integers little endian)
//
// A slot is a complete, CRC-checked snapshot, written with pwrite + fdatasync. Writes
// alternate between the two slots and carry an increasing sequence number, so a write
// torn by a power cut leaves the other slot intact (the torn slot fails its CRC; it was
// never acknowledged, so no ticket of its reservation was handed out).
//
//	slot: magic "SHKEST01" | u32 version | u32 rounds | u64 seq | u64 gen |
//	      u32 shard | u32 shards | u64 first_ticket | u64 count | [32] identity |
//	      u8 campaign length | [32] campaign | u8 flags | pad to 128 |
//	      rounds x (u64 reserved | u64 lost | u64 hint) | u32 CRC-32C of all before it
//
// The cursor region is mapped into memory (MAP_SHARED): the dispenser's per-round
// cursors live there, so every take is an ordinary atomic on memory that the kernel
// keeps in its page cache. A process killed with SIGKILL leaves the exact number of
// taken positions behind, which turns "reserved minus taken" into an exact count of
// the tickets lost to the crash. After a machine crash the page may be stale; the
// count then falls back to the last hint written in a slot (a lower bound of what
// was taken), so losses are over-counted, never under-counted, and never reissued.
//
//	region: magic "SHKECUR1" | u64 gen | pad to 64 | rounds x u64 cursor
//
// gen names the incarnation that owns the cursors. Recovery writes a slot with gen+1
// first and only then rewrites the region, so a crash between the two cannot count
// the same loss twice.
const (
	stateMagic       = "SHKEST01"
	regionMagic      = "SHKECUR1"
	stateVersion     = 1
	slotHeaderLen    = 128
	slotRoundLen     = 24
	regionHeaderLen  = 64
	stateAlign       = 64 << 10 // a multiple of every page size Linux uses, so mmap offsets line up
	flagClean        = 1
	maxStateRounds   = ticket.MaxShards
	offSlotCampaign  = 89
	offSlotFlags     = 121
	offSlotIdentity  = 56
	offSlotRoundBase = slotHeaderLen
)

// Startup errors. The CLI prints them on one line and exits 2.
var (
	// ErrState reports a state file that cannot be created, read, written or locked.
	ErrState = errors.New("state file unusable")
	// ErrStateCorrupt reports a state file whose both slots fail their checks.
	ErrStateCorrupt = errors.New("state file corrupt")
	// ErrStateForeign reports a state file written for another campaign, shard or
	// generation of the shard file.
	ErrStateForeign = errors.New("state file belongs to another shard")
	// ErrStateLocked reports a state file held by another running edge.
	ErrStateLocked = errors.New("state file is in use by another process")
	// ErrStateMissing reports a state file that does not exist, on a start without
	// --init-state (Config.InitState).
	ErrStateMissing = errors.New("state file missing")
	// ErrStateExists reports a state file that already exists, on a start with
	// --init-state.
	ErrStateExists = errors.New("state file already exists")
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// stateIdentity names the shard a state file belongs to.
type stateIdentity struct {
	Campaign    string
	Shard       int
	Shards      int
	FirstTicket uint64
	Count       uint64
	Rounds      int
	// Sum is a SHA-256 over everything above plus every round range and the shard's
	// creation time, so a regenerated campaign with the same id is told apart.
	Sum [32]byte
}

func identityOf(h *ticket.ShardHeader) stateIdentity {
	id := stateIdentity{
		Campaign: h.Campaign, Shard: h.Shard, Shards: h.Shards,
		FirstTicket: h.FirstTicket, Count: h.Count, Rounds: len(h.RoundRanges),
	}
	d := sha256.New()
	var b [8]byte
	put := func(v uint64) { binary.LittleEndian.PutUint64(b[:], v); d.Write(b[:]) }
	d.Write([]byte("shake-edge-state|" + h.Campaign + "|"))
	put(uint64(h.Shard))
	put(uint64(h.Shards))
	put(h.FirstTicket)
	put(h.Count)
	put(uint64(h.Amount))
	put(uint64(h.CreatedAt.UnixNano()))
	for _, r := range h.RoundRanges {
		put(r.FirstTicket)
		put(r.Count)
		put(uint64(r.Amount))
	}
	for _, w := range h.Rounds {
		put(uint64(w.Start.UnixNano()))
		put(uint64(w.End.UnixNano()))
	}
	d.Sum(id.Sum[:0])
	return id
}

// roundRecord is one round's durable state.
type roundRecord struct {
	Reserved uint64 // positions [0, Reserved) of the round may have been handed out
	Lost     uint64 // cumulative positions reserved, never handed out, before a crash
	Hint     uint64 // a lower bound of the positions taken when the slot was written
}

// stateSnapshot is the content of one slot.
type stateSnapshot struct {
	Seq    uint64
	Gen    uint64
	ID     stateIdentity
	Clean  bool
	Rounds []roundRecord
}

func slotSize(rounds int) int64 {
	n := int64(slotHeaderLen + slotRoundLen*rounds + 4)
	return (n + stateAlign - 1) / stateAlign * stateAlign
}

func regionSize(rounds int) int64 {
	n := int64(regionHeaderLen + 8*rounds)
	return (n + stateAlign - 1) / stateAlign * stateAlign
}

func stateFileSize(rounds int) int64 { return 2*slotSize(rounds) + regionSize(rounds) }

// encodeSlot appends the slot bytes (without the alignment padding) to dst.
func encodeSlot(dst []byte, s *stateSnapshot) []byte {
	start := len(dst)
	dst = append(dst, make([]byte, slotHeaderLen)...)
	h := dst[start:]
	copy(h[0:], stateMagic)
	binary.LittleEndian.PutUint32(h[8:], stateVersion)
	binary.LittleEndian.PutUint32(h[12:], uint32(len(s.Rounds)))
	binary.LittleEndian.PutUint64(h[16:], s.Seq)
	binary.LittleEndian.PutUint64(h[24:], s.Gen)
	binary.LittleEndian.PutUint32(h[32:], uint32(s.ID.Shard))
	binary.LittleEndian.PutUint32(h[36:], uint32(s.ID.Shards))
	binary.LittleEndian.PutUint64(h[40:], s.ID.FirstTicket)
	binary.LittleEndian.PutUint64(h[48:], s.ID.Count)
	copy(h[offSlotIdentity:], s.ID.Sum[:])
	h[offSlotCampaign-1] = byte(len(s.ID.Campaign))
	copy(h[offSlotCampaign:offSlotCampaign+ticket.MaxCampaignLen], s.ID.Campaign)
	if s.Clean {
		h[offSlotFlags] = flagClean
	}
	for _, r := range s.Rounds {
		dst = binary.LittleEndian.AppendUint64(dst, r.Reserved)
		dst = binary.LittleEndian.AppendUint64(dst, r.Lost)
		dst = binary.LittleEndian.AppendUint64(dst, r.Hint)
	}
	return binary.LittleEndian.AppendUint32(dst, crc32.Checksum(dst[start:], crcTable))
}

// decodeSlot parses one slot. It checks structure and checksum only; whether the slot
// belongs to this shard is the caller's question.
func decodeSlot(b []byte) (*stateSnapshot, error) {
	if len(b) < slotHeaderLen+4 || string(b[:8]) != stateMagic {
		return nil, fmt.Errorf("%w: bad magic", ErrStateCorrupt)
	}
	if v := binary.LittleEndian.Uint32(b[8:]); v != stateVersion {
		return nil, fmt.Errorf("%w: unsupported version %d", ErrStateCorrupt, v)
	}
	n := binary.LittleEndian.Uint32(b[12:])
	if n == 0 || n > maxStateRounds {
		return nil, fmt.Errorf("%w: %d rounds", ErrStateCorrupt, n)
	}
	end := slotHeaderLen + slotRoundLen*int(n)
	if len(b) < end+4 {
		return nil, fmt.Errorf("%w: slot truncated", ErrStateCorrupt)
	}
	if crc32.Checksum(b[:end], crcTable) != binary.LittleEndian.Uint32(b[end:]) {
		return nil, fmt.Errorf("%w: slot checksum mismatch", ErrStateCorrupt)
	}
	cl := int(b[offSlotCampaign-1])
	if cl > ticket.MaxCampaignLen {
		return nil, fmt.Errorf("%w: campaign length %d", ErrStateCorrupt, cl)
	}
	s := &stateSnapshot{
		Seq: binary.LittleEndian.Uint64(b[16:]),
		Gen: binary.LittleEndian.Uint64(b[24:]),
		ID: stateIdentity{
			Shard:       int(binary.LittleEndian.Uint32(b[32:])),
			Shards:      int(binary.LittleEndian.Uint32(b[36:])),
			FirstTicket: binary.LittleEndian.Uint64(b[40:]),
			Count:       binary.LittleEndian.Uint64(b[48:]),
			Campaign:    string(b[offSlotCampaign : offSlotCampaign+cl]),
			Rounds:      int(n),
		},
		Clean:  b[offSlotFlags]&flagClean != 0,
		Rounds: make([]roundRecord, n),
	}
	copy(s.ID.Sum[:], b[offSlotIdentity:offSlotIdentity+32])
	var total uint64
	for i := range s.Rounds {
		p := b[slotHeaderLen+slotRoundLen*i:]
		r := roundRecord{
			Reserved: binary.LittleEndian.Uint64(p[0:]),
			Lost:     binary.LittleEndian.Uint64(p[8:]),
			Hint:     binary.LittleEndian.Uint64(p[16:]),
		}
		// Losses and hints are parts of the reservation; anything else is damage that a
		// checksum happened not to catch.
		if r.Lost > r.Reserved || r.Hint > r.Reserved || r.Reserved > s.ID.Count {
			return nil, fmt.Errorf("%w: round %d counters out of range", ErrStateCorrupt, i)
		}
		total += r.Reserved
		s.Rounds[i] = r
	}
	if total > s.ID.Count || s.Gen == 0 || s.Seq == 0 {
		return nil, fmt.Errorf("%w: counters out of range", ErrStateCorrupt)
	}
	return s, nil
}

// stateFile is an open, locked, mapped state file.
type stateFile struct {
	path     string
	f        *os.File
	rounds   int
	slotLen  int64
	region   []byte          // the mapped cursor region
	cursors  []atomic.Uint64 // views into region
	snap     stateSnapshot   // the last slot written (owned by the single writer)
	buf      []byte          // slot encoding scratch
	writeErr error
}

// neverWritten reports whether a state file of the expected size still has both slots
// all zero bytes. This code never leaves such a file (createState links a complete file
// into place), but an older shake killed during its first start did, and so does a
// file truncated by mistake. A torn or damaged slot is not all zeros: that is corrupt.
func neverWritten(f *os.File, size int64, rounds int, slotLen int64) bool {
	if size != stateFileSize(rounds) {
		return false
	}
	b := make([]byte, 2*slotLen)
	if _, err := f.ReadAt(b, 0); err != nil {
		return false
	}
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// initTempPattern names createState's temporary files, next to the state file.
func initTempPattern(path string) string { return "." + filepath.Base(path) + ".init-*" }

// createState makes the state file of a shard's very first start (--init-state): a
// complete file, slot A holding "nothing reserved" and the cursor region, written
// under a temporary name, fsynced, then hard-linked to path, which fails if path
// exists, and the directory fsynced. The state file is therefore either absent or
// complete: a crash part-way leaves only the temporary file (removed by the next
// createState), path stays missing, and the same --init-state start can simply be
// run again; nothing was handed out, since no ticket is before openState returns.
// It refuses an existing path (ErrStateExists), whatever it holds: --init-state
// declares "this shard was never served", which no file on disk can confirm.
func createState(path string, h *ticket.ShardHeader) error {
	if _, err := os.Lstat(path); err == nil {
		return fmt.Errorf("%w: %s (--init-state is for a shard's very first start and never replaces a state file: start without it to resume from the file)", ErrStateExists, path)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%w: %s: %v", ErrState, path, err)
	}
	dir := filepath.Dir(path)
	if stale, _ := filepath.Glob(filepath.Join(dir, initTempPattern(path))); len(stale) > 0 {
		for _, name := range stale {
			os.Remove(name) // left by an interrupted --init-state; removing is best effort
		}
	}
	tmp, err := os.CreateTemp(dir, initTempPattern(path)) // mode 0600
	if err != nil {
		return fmt.Errorf("%w: %s: %v", ErrState, path, err)
	}
	defer os.Remove(tmp.Name())
	err = writeInitial(tmp, h)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("%w: %s: %v", ErrState, tmp.Name(), err)
	}
	if err := os.Link(tmp.Name(), path); errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("%w: %s (created by another process meanwhile)", ErrStateExists, path)
	} else if err != nil {
		return fmt.Errorf("%w: %s: %v", ErrState, path, err)
	}
	if err := ticket.SyncDir(dir); err != nil {
		return fmt.Errorf("%w: %s: sync directory: %v", ErrState, path, err)
	}
	return nil
}

// writeInitial writes a complete state file for h into f and fsyncs it: slot A with
// nothing reserved (seq 1, gen 1), slot B empty, the cursor region owned by gen 1.
func writeInitial(f *os.File, h *ticket.ShardHeader) error {
	rounds := len(h.RoundRanges)
	if err := f.Truncate(stateFileSize(rounds)); err != nil {
		return err
	}
	snap := stateSnapshot{Seq: 1, Gen: 1, ID: identityOf(h), Clean: true, Rounds: make([]roundRecord, rounds)}
	if _, err := f.WriteAt(encodeSlot(nil, &snap), 0); err != nil {
		return err
	}
	region := make([]byte, regionHeaderLen)
	copy(region, regionMagic)
	binary.LittleEndian.PutUint64(region[8:], snap.Gen)
	if _, err := f.WriteAt(region, 2*slotSize(rounds)); err != nil {
		return err
	}
	return f.Sync()
}

// stateExists is the error for a start with --init-state on an existing file.
func stateExists(path string) error {
	return fmt.Errorf("%w: %s (--init-state is for a shard's very first start and never replaces a state file: start without it to resume from the file)", ErrStateExists, path)
}

// missingState is the error for a start without --init-state on a missing file.
func missingState(path string) error {
	note := ""
	if stale, _ := filepath.Glob(filepath.Join(filepath.Dir(path), initTempPattern(path))); len(stale) > 0 {
		note = " (an --init-state start was interrupted before it completed: nothing was handed out, run it again)"
	}
	return fmt.Errorf("%w: %s does not exist%s. Starting afresh would hand out again every ticket of this shard that was handed out before it went missing (a lost volume, a rescheduled pod, a typo in --state): restore the file, or, only for the shard's very first start, pass --init-state to create it", ErrStateMissing, path, note)
}

// openState opens the state file for the shard described by h (creating it first when
// init is set: createState), recovers from a previous crash, and returns the file with
// its cursors set to where this run resumes. It fails with ErrState, ErrStateCorrupt,
// ErrStateForeign, ErrStateLocked, ErrStateMissing or ErrStateExists.
func openState(path string, h *ticket.ShardHeader, init bool) (*stateFile, error) {
	id := identityOf(h)
	rounds := len(h.RoundRanges)
	if init {
		if err := createState(path, h); err != nil {
			return nil, err
		}
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, missingState(path)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrState, path, err)
	}
	ok := false
	defer func() {
		if !ok {
			f.Close()
		}
	}()
	// Two edges on one state file would hand out the same tickets: refuse the second.
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: %s", ErrStateLocked, path)
		}
		return nil, fmt.Errorf("%w: %s: lock: %v", ErrState, path, err)
	}
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrState, path, err)
	}
	sf := &stateFile{path: path, f: f, rounds: rounds, slotLen: slotSize(rounds)}
	prev, err := checkState(f, st.Size(), path, h)
	if err != nil {
		return nil, err
	}
	region, err := syscall.Mmap(int(f.Fd()), 2*sf.slotLen, int(regionSize(rounds)), syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: mmap: %v", ErrState, path, err)
	}
	sf.region = region
	// The region is 64 KiB aligned and cursors start at offset 64: every cursor is an
	// aligned 8-byte word, as atomic.Uint64 requires.
	sf.cursors = unsafe.Slice((*atomic.Uint64)(unsafe.Pointer(&region[regionHeaderLen])), rounds)
	if err := sf.recover(prev, id); err != nil {
		sf.close()
		return nil, err
	}
	ok = true
	return sf, nil
}

// checkState reads the state file f of size bytes, without writing, and returns its
// newest snapshot once it is proven to be this shard's (h) and complete: not empty or
// never written (ErrStateCorrupt), a valid slot, the same identity (ErrStateForeign)
// and the layout's size.
func checkState(f *os.File, size int64, path string, h *ticket.ShardHeader) (*stateSnapshot, error) {
	id := identityOf(h)
	rounds := len(h.RoundRanges)
	if size == 0 || neverWritten(f, size, rounds, slotSize(rounds)) {
		// Not treated as new: a file emptied by mistake looks just like this, and
		// starting afresh on it would hand the shard out again.
		return nil, fmt.Errorf("%w: %s is empty or was never written, so it cannot tell which tickets were handed out (a truncated file, or the first start of an older shake killed before it completed); if no ticket of this shard was ever handed out, remove it and start with --init-state", ErrStateCorrupt, path)
	}
	prev, err := readSnapshot(f, size, path)
	if err != nil {
		return nil, err
	}
	if prev.ID != id {
		return nil, fmt.Errorf("%w: %s was written for campaign %q shard %d (first ticket %d, %d tickets), this is campaign %q shard %d (first ticket %d, %d tickets)%s",
			ErrStateForeign, path, prev.ID.Campaign, prev.ID.Shard, prev.ID.FirstTicket, prev.ID.Count,
			id.Campaign, id.Shard, id.FirstTicket, id.Count, sameLayoutNote(prev.ID, id))
	}
	if size != stateFileSize(rounds) {
		return nil, fmt.Errorf("%w: %s has %d bytes, want %d", ErrStateCorrupt, path, size, stateFileSize(rounds))
	}
	return prev, nil
}

// inspectState is openState for --dry-run: the same checks, read-only. With init the
// file must not exist and its directory must let it be created; without, it must exist,
// not be locked by a running edge, and pass checkState. It describes what it found.
func inspectState(path string, h *ticket.ShardHeader, init bool) (string, error) {
	if init {
		if _, err := os.Lstat(path); err == nil {
			return "", stateExists(path)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("%w: %s: %v", ErrState, path, err)
		}
		dir := filepath.Dir(path)
		if err := syscall.Access(dir, 2|1); err != nil { // W_OK|X_OK
			return "", fmt.Errorf("%w: %s cannot be created: directory %s: %v", ErrState, path, dir, err)
		}
		return fmt.Sprintf("%s does not exist: --init-state creates it (the shard's first start)", path), nil
	}
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return "", missingState(path)
	}
	if err != nil {
		return "", fmt.Errorf("%w: %s: %v", ErrState, path, err)
	}
	defer f.Close()
	if err := syscall.Access(path, 2); err != nil { // W_OK: the start writes it
		return "", fmt.Errorf("%w: %s is not writable: %v", ErrState, path, err)
	}
	// A shared lock conflicts only with a running edge's exclusive one; released at close.
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_SH|syscall.LOCK_NB); err != nil {
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return "", fmt.Errorf("%w: %s (an edge is running on it)", ErrStateLocked, path)
		}
		return "", fmt.Errorf("%w: %s: lock: %v", ErrState, path, err)
	}
	st, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("%w: %s: %v", ErrState, path, err)
	}
	prev, err := checkState(f, st.Size(), path, h)
	if err != nil {
		return "", err
	}
	var reserved, lost uint64
	for _, r := range prev.Rounds {
		reserved += r.Reserved
		lost += r.Lost
	}
	stop := "crashed or killed (the next start counts what it reserved but never handed out as lost)"
	if prev.Clean {
		stop = "stopped cleanly"
	}
	return fmt.Sprintf("%s: this shard's, incarnation %d, %d of %d tickets reserved so far, %d lost, last run %s",
		path, prev.Gen, reserved, h.Count, lost, stop), nil
}

func sameLayoutNote(a, b stateIdentity) string {
	if a.Campaign == b.Campaign && a.Shard == b.Shard && a.FirstTicket == b.FirstTicket && a.Count == b.Count {
		return " (same layout, different shard file: was the campaign regenerated?)"
	}
	return ""
}

// readSnapshot returns the newest valid slot of the file. A slot's size follows from
// its own round count, so every multiple of the alignment is tried as the slot size
// and a slot is accepted only where its round count implies exactly that size and
// the file's size; a torn slot A then does not hide a valid slot B.
func readSnapshot(f *os.File, size int64, path string) (*stateSnapshot, error) {
	if size < 3*stateAlign || size > stateFileSize(maxStateRounds) {
		return nil, fmt.Errorf("%w: %s has %d bytes", ErrStateCorrupt, path, size)
	}
	var best *stateSnapshot
	var errs []error
	for sl := int64(stateAlign); 2*sl < size; sl += stateAlign {
		b := make([]byte, sl)
		for i := int64(0); i < 2; i++ {
			if _, err := f.ReadAt(b, i*sl); err != nil && err != io.EOF {
				return nil, fmt.Errorf("%w: %s: %v", ErrState, path, err)
			}
			s, err := decodeSlot(b)
			if err != nil {
				if sl == stateAlign {
					errs = append(errs, fmt.Errorf("slot %c: %w", 'A'+byte(i), err))
				}
				continue
			}
			if slotSize(s.ID.Rounds) != sl || stateFileSize(s.ID.Rounds) != size {
				continue
			}
			if best == nil || s.Seq > best.Seq {
				best = s
			}
		}
	}
	if best == nil {
		return nil, fmt.Errorf("%w: %s: no valid slot (%v)", ErrStateCorrupt, path, errors.Join(errs...))
	}
	return best, nil
}

// recover computes what the previous run lost, writes the new incarnation's slot and
// points the mapped cursors at the reservation.
func (sf *stateFile) recover(prev *stateSnapshot, id stateIdentity) error {
	next := stateSnapshot{ID: id, Rounds: make([]roundRecord, sf.rounds), Seq: prev.Seq + 1, Gen: prev.Gen + 1}
	regionGen := binary.LittleEndian.Uint64(sf.region[8:])
	regionOK := string(sf.region[:8]) == regionMagic && regionGen == prev.Gen
	for i, r := range prev.Rounds {
		taken := r.Hint
		if regionOK {
			// Positions are only taken below the reservation; a larger cursor can only
			// be damage, and the reservation is the safe bound then.
			taken = max(taken, min(sf.cursors[i].Load(), r.Reserved))
		}
		next.Rounds[i] = roundRecord{Reserved: r.Reserved, Lost: r.Lost + (r.Reserved - taken), Hint: r.Reserved}
	}
	// Durable first, then the region: see the file comment about gen.
	if err := sf.writeSlot(&next); err != nil {
		return err
	}
	for i := range next.Rounds {
		sf.cursors[i].Store(next.Rounds[i].Reserved)
	}
	binary.LittleEndian.PutUint64(sf.region[8:], next.Gen)
	copy(sf.region[:8], regionMagic)
	return nil
}

// writeSlot durably writes s into the slot after the last one written. Only one
// goroutine writes at a time (startup, then the reserver, then shutdown).
func (sf *stateFile) writeSlot(s *stateSnapshot) error {
	sf.buf = encodeSlot(sf.buf[:0], s)
	off := int64(s.Seq%2) * sf.slotLen
	if _, err := sf.f.WriteAt(sf.buf, off); err != nil {
		return fmt.Errorf("%w: %s: write: %v", ErrState, sf.path, err)
	}
	if err := fdatasync(sf.f); err != nil {
		return fmt.Errorf("%w: %s: sync: %v", ErrState, sf.path, err)
	}
	sf.snap = *s
	sf.snap.Rounds = append(sf.snap.Rounds[:0:0], s.Rounds...)
	return nil
}

// close unmaps the region and releases the file (and with it the lock).
func (sf *stateFile) close() error {
	var err error
	if sf.region != nil {
		err = syscall.Munmap(sf.region)
		sf.region, sf.cursors = nil, nil
	}
	if cerr := sf.f.Close(); err == nil {
		err = cerr
	}
	return err
}
