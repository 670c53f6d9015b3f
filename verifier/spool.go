package verifier

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"shake/ticket"
)

// Spool errors. ErrSpoolFull and ErrSpoolWrite make an open answer 503; ErrSpoolCorrupt
// stops the verifier at start (a damaged sealed segment holds acknowledged claims, which
// an operator must look at rather than have skipped).
var (
	ErrSpoolFull    = errors.New("spool is full")
	ErrSpoolWrite   = errors.New("cannot write spool")
	ErrSpoolCorrupt = errors.New("spool segment is corrupt")
)

// The spool is a directory of append-only segment files, NNNNNNNNNNNNNNNNNNNN.seg, plus
// replay.offset. Each record is
//
//	u32 LE payload length | u32 LE CRC-32C of (length bytes, payload) | payload
//	payload = u16 LE key length | key | value
//
// Appends are group commits: one write and one fsync per batch of claims. The replay
// offset (segment, byte offset, CRC-32C) is rewritten atomically after each replayed
// batch, so a kill -9 mid-replay replays at most one batch twice (the settler is
// idempotent on (campaign, ticket)). A torn last record, from a crash in the middle of a
// write, fails its length or CRC check and is truncated at start.
const (
	spoolHeader     = 8
	maxSpoolPayload = 2 + 64 + ticket.MaxClaimLen
	offsetFile      = "replay.offset"
	segSuffix       = ".seg"
	// DefaultSpoolMaxBytes bounds the bytes the spool holds waiting for Kafka.
	DefaultSpoolMaxBytes = 1 << 30
	// DefaultSegmentBytes is the size at which the spool starts a new segment.
	DefaultSegmentBytes = 64 << 20
	replayReadBytes     = 1 << 20
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// spoolRecord is one claim: the Kafka key and value.
type spoolRecord struct {
	Key, Value []byte
}

type segment struct {
	seq  uint64
	size int64 // bytes written and fsynced
}

type cursor struct {
	seq uint64
	off int64
}

// spool is safe for concurrent use: appends serialise on mu; the replayer reads
// segments outside the lock, only up to the fsynced size it saw under the lock.
type spool struct {
	dir      string
	maxBytes int64
	segBytes int64

	mu     sync.Mutex
	segs   []segment // ordered by seq; the last one is active
	active segmentFile
	cur    cursor
	buf    []byte

	pendingBytes atomic.Int64
	pendingRecs  atomic.Int64
	appends      atomic.Uint64
	lastErr      atomic.Bool // the last append failed on I/O (not for being full)
	// dirty: a failed append could not be cut back, so the active segment may hold
	// bytes past its good size. Nothing is written, and no segment is sealed, until
	// the cut succeeds: leftover bytes inside a sealed segment make the next start
	// refuse the spool as corrupt.
	dirty bool
}

// segmentFile is what the spool does with its active segment (an *os.File; tests
// inject faults through it).
type segmentFile interface {
	WriteAt(b []byte, off int64) (int, error)
	Sync() error
	Truncate(size int64) error
	Close() error
}

func segPath(dir string, seq uint64) string {
	return filepath.Join(dir, fmt.Sprintf("%020d%s", seq, segSuffix))
}

// openSpool opens or creates the spool in dir, truncates a torn tail, and calls each for
// every intact record still in the spool (replayed or not) so the caller can rebuild its
// state. A fresh active segment is started.
func openSpool(dir string, maxBytes, segBytes int64, each func(key, value []byte)) (*spool, error) {
	if maxBytes <= 0 {
		maxBytes = DefaultSpoolMaxBytes
	}
	if segBytes <= 0 {
		segBytes = DefaultSegmentBytes
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("cannot create spool %s: %w", dir, err)
	}
	s := &spool{dir: dir, maxBytes: maxBytes, segBytes: segBytes}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("cannot read spool %s: %w", dir, err)
	}
	var seqs []uint64
	for _, e := range ents {
		name := e.Name()
		if !strings.HasSuffix(name, segSuffix) {
			continue
		}
		n, err := strconv.ParseUint(strings.TrimSuffix(name, segSuffix), 10, 64)
		if err != nil || n == 0 {
			return nil, fmt.Errorf("%w: unexpected file %s in spool %s", ErrSpoolCorrupt, name, dir)
		}
		seqs = append(seqs, n)
	}
	sort.Slice(seqs, func(i, j int) bool { return seqs[i] < seqs[j] })
	s.cur = readOffset(dir)
	var pb, pr int64
	for i, seq := range seqs {
		path := segPath(dir, seq)
		if seq < s.cur.seq {
			// Fully replayed; the crash came before its deletion.
			if err := os.Remove(path); err != nil {
				return nil, fmt.Errorf("cannot remove replayed segment %s: %w", path, err)
			}
			continue
		}
		last := i == len(seqs)-1
		good, err := scanSegment(path, last, func(off int64, n int, key, value []byte) {
			each(key, value)
			if seq > s.cur.seq || off >= s.cur.off {
				pb += int64(n)
				pr++
			}
		})
		if err != nil {
			return nil, err
		}
		if s.cur.seq == seq && s.cur.off > good {
			s.cur.off = good
		}
		s.segs = append(s.segs, segment{seq: seq, size: good})
	}
	if len(s.segs) == 0 || s.cur.seq < s.segs[0].seq {
		first := uint64(1)
		if len(s.segs) > 0 {
			first = s.segs[0].seq
		}
		s.cur = cursor{seq: first}
	}
	s.pendingBytes.Store(pb)
	s.pendingRecs.Store(pr)
	next := uint64(1)
	if n := len(s.segs); n > 0 {
		next = s.segs[n-1].seq + 1
	}
	if err := s.startSegment(next); err != nil {
		return nil, err
	}
	return s, nil
}

// inspectSpool is openSpool for --dry-run, without writing: the directory exists and is
// writable (or can be created), and holds nothing but segments; it says how many.
func inspectSpool(dir string) (string, error) {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		parent := filepath.Dir(dir)
		if err := syscall.Access(parent, 2|1); err != nil { // W_OK|X_OK
			return "", fmt.Errorf("cannot create spool %s: %s: %w", dir, parent, err)
		}
		return fmt.Sprintf("%s does not exist: a start creates it", dir), nil
	}
	if err != nil {
		return "", fmt.Errorf("cannot read spool %s: %w", dir, err)
	}
	if err := syscall.Access(dir, 2|1); err != nil {
		return "", fmt.Errorf("spool %s is not writable: %w", dir, err)
	}
	var n int
	var bytes int64
	for _, e := range ents {
		name := e.Name()
		if !strings.HasSuffix(name, segSuffix) {
			continue
		}
		if q, err := strconv.ParseUint(strings.TrimSuffix(name, segSuffix), 10, 64); err != nil || q == 0 {
			return "", fmt.Errorf("%w: unexpected file %s in spool %s", ErrSpoolCorrupt, name, dir)
		}
		if fi, err := e.Info(); err == nil {
			bytes += fi.Size()
		}
		n++
	}
	return fmt.Sprintf("%s: writable, %d segment(s), %d bytes (a start replays what they hold)", dir, n, bytes), nil
}

// scanSegment validates the records of one segment, calling fn for each, and returns
// the length of its intact prefix. A bad record in the last segment is a torn write: the
// file is truncated there. In an earlier segment it is corruption.
func scanSegment(path string, last bool, fn func(off int64, n int, key, value []byte)) (int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("cannot read spool segment %s: %w", path, err)
	}
	off := 0
	for off < len(b) {
		n, key, value, ok := decodeRecord(b[off:])
		if !ok {
			break
		}
		fn(int64(off), n, key, value)
		off += n
	}
	if off == len(b) {
		return int64(off), nil
	}
	if !last {
		return 0, fmt.Errorf("%w: %s: bad record at byte %d", ErrSpoolCorrupt, path, off)
	}
	if err := truncateSync(path, int64(off)); err != nil {
		return 0, err
	}
	return int64(off), nil
}

func truncateSync(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("cannot truncate torn spool tail %s: %w", path, err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		return fmt.Errorf("cannot truncate torn spool tail %s: %w", path, err)
	}
	return f.Sync()
}

// decodeRecord decodes the record at the start of b and returns its total size.
func decodeRecord(b []byte) (n int, key, value []byte, ok bool) {
	if len(b) < spoolHeader {
		return 0, nil, nil, false
	}
	pl := int(binary.LittleEndian.Uint32(b))
	if pl < 2 || pl > maxSpoolPayload || len(b)-spoolHeader < pl {
		return 0, nil, nil, false
	}
	crc := crc32.Update(0, crcTable, b[:4])
	crc = crc32.Update(crc, crcTable, b[spoolHeader:spoolHeader+pl])
	if crc != binary.LittleEndian.Uint32(b[4:]) {
		return 0, nil, nil, false
	}
	p := b[spoolHeader : spoolHeader+pl]
	kl := int(binary.LittleEndian.Uint16(p))
	if 2+kl > len(p) {
		return 0, nil, nil, false
	}
	return spoolHeader + pl, p[2 : 2+kl], p[2+kl:], true
}

// appendRecord encodes one record onto dst.
func appendRecord(dst, key, value []byte) []byte {
	pl := 2 + len(key) + len(value)
	start := len(dst)
	dst = binary.LittleEndian.AppendUint32(dst, uint32(pl))
	dst = append(dst, 0, 0, 0, 0)
	dst = binary.LittleEndian.AppendUint16(dst, uint16(len(key)))
	dst = append(dst, key...)
	dst = append(dst, value...)
	crc := crc32.Update(0, crcTable, dst[start:start+4])
	crc = crc32.Update(crc, crcTable, dst[start+spoolHeader:])
	binary.LittleEndian.PutUint32(dst[start+4:], crc)
	return dst
}

func (s *spool) startSegment(seq uint64) error {
	path := segPath(s.dir, seq)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("%w: cannot create segment %s: %v", ErrSpoolWrite, path, err)
	}
	if err := ticket.SyncDir(s.dir); err != nil {
		f.Close()
		return fmt.Errorf("%w: cannot sync spool dir: %v", ErrSpoolWrite, err)
	}
	if s.active != nil {
		s.active.Close()
	}
	s.active = f
	s.dirty = false // a damaged previous segment is fully replayed (commit) or cut back (append)
	s.segs = append(s.segs, segment{seq: seq})
	return nil
}

// append makes recs durable: one write and one fsync for the whole batch. On failure
// nothing of the batch counts as written (the file is cut back to its last good size).
func (s *spool) append(recs []spoolRecord) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.active == nil {
		return fmt.Errorf("%w: spool is closed", ErrSpoolWrite)
	}
	s.buf = s.buf[:0]
	for _, r := range recs {
		if 2+len(r.Key)+len(r.Value) > maxSpoolPayload || len(r.Key) > 64 {
			return fmt.Errorf("%w: record of %d bytes too large", ErrSpoolWrite, len(r.Key)+len(r.Value))
		}
		s.buf = appendRecord(s.buf, r.Key, r.Value)
	}
	if s.pendingBytes.Load()+int64(len(s.buf)) > s.maxBytes {
		return fmt.Errorf("%w: %d bytes waiting, limit %d", ErrSpoolFull, s.pendingBytes.Load(), s.maxBytes)
	}
	act := &s.segs[len(s.segs)-1]
	if s.dirty {
		err := s.active.Truncate(act.size)
		if err == nil {
			err = s.active.Sync()
		}
		if err != nil {
			s.lastErr.Store(true)
			return fmt.Errorf("%w: cannot cut back a failed append: %v", ErrSpoolWrite, err)
		}
		s.dirty = false
	}
	if act.size > 0 && act.size+int64(len(s.buf)) > s.segBytes {
		if err := s.startSegment(act.seq + 1); err != nil {
			s.lastErr.Store(true)
			return err
		}
		act = &s.segs[len(s.segs)-1]
	}
	_, err := s.active.WriteAt(s.buf, act.size)
	if err == nil {
		err = s.active.Sync()
	}
	if err != nil {
		// Cut back so that a later successful append does not follow garbage; if that
		// fails too, the next append tries again first.
		if terr := s.active.Truncate(act.size); terr != nil {
			s.dirty = true
		}
		s.lastErr.Store(true)
		return fmt.Errorf("%w: %v", ErrSpoolWrite, err)
	}
	s.lastErr.Store(false)
	act.size += int64(len(s.buf))
	s.pendingBytes.Add(int64(len(s.buf)))
	s.pendingRecs.Add(int64(len(recs)))
	s.appends.Add(1)
	return nil
}

// readBatch reads up to max records from the replay cursor into buf (reused), and
// returns them with the cursor just past them. It returns no records when the spool
// has nothing left to replay.
func (s *spool) readBatch(max int, buf []byte, recs []spoolRecord) ([]spoolRecord, []byte, cursor, int64, error) {
	s.mu.Lock()
	cur := s.cur
	var seg segment
	found := false
	for i, sg := range s.segs {
		if sg.seq == cur.seq {
			seg = sg
			found = true
			// Skip to the next segment when this sealed one is exhausted.
			if cur.off >= sg.size && i < len(s.segs)-1 {
				cur = cursor{seq: s.segs[i+1].seq}
				seg = s.segs[i+1]
			}
			break
		}
	}
	s.mu.Unlock()
	recs = recs[:0]
	if !found || cur.off >= seg.size {
		return recs, buf, cur, 0, nil
	}
	n := seg.size - cur.off
	if n > replayReadBytes {
		n = replayReadBytes
	}
	if int64(cap(buf)) < n {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	f, err := os.Open(segPath(s.dir, seg.seq))
	if err != nil {
		return recs, buf, cur, 0, fmt.Errorf("cannot open spool segment: %w", err)
	}
	_, err = f.ReadAt(buf, cur.off)
	f.Close()
	if err != nil && err != io.EOF {
		return recs, buf, cur, 0, fmt.Errorf("cannot read spool segment: %w", err)
	}
	off := 0
	for len(recs) < max && off < len(buf) {
		rn, key, value, ok := decodeRecord(buf[off:])
		if !ok {
			break
		}
		recs = append(recs, spoolRecord{Key: key, Value: value})
		off += rn
	}
	if len(recs) == 0 {
		// Everything below the fsynced size was checked when written; a record that
		// does not decode here means the file changed under us.
		return recs, buf, cur, 0, fmt.Errorf("%w: %s at byte %d", ErrSpoolCorrupt, segPath(s.dir, seg.seq), cur.off)
	}
	end := cursor{seq: cur.seq, off: cur.off + int64(off)}
	return recs, buf, end, int64(off), nil
}

// commit records that everything before end has reached Kafka (n records, bytes bytes),
// deletes fully replayed segments, and starts a fresh active segment when the replay
// caught up with it, so that a drained spool holds no data.
func (s *spool) commit(end cursor, n int, bytes int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cur = end
	act := s.segs[len(s.segs)-1]
	if end.seq == act.seq && end.off == act.size && act.size > 0 && s.active != nil {
		if err := s.startSegment(act.seq + 1); err != nil {
			return err
		}
		s.cur = cursor{seq: act.seq + 1}
	}
	if err := writeOffset(s.dir, s.cur); err != nil {
		return err
	}
	s.pendingBytes.Add(-bytes)
	s.pendingRecs.Add(-int64(n))
	keep := s.segs[:0]
	for _, sg := range s.segs {
		if sg.seq < s.cur.seq {
			if err := os.Remove(segPath(s.dir, sg.seq)); err != nil && !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("cannot remove replayed segment: %w", err)
			}
			continue
		}
		keep = append(keep, sg)
	}
	s.segs = keep
	return nil
}

// cursor returns the replay cursor.
func (s *spool) cursor() cursor {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cur
}

func (s *spool) close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.active == nil {
		return nil
	}
	err := s.active.Close()
	s.active = nil
	return err
}

func writeOffset(dir string, c cursor) error {
	var b [20]byte
	binary.LittleEndian.PutUint64(b[0:], c.seq)
	binary.LittleEndian.PutUint64(b[8:], uint64(c.off))
	binary.LittleEndian.PutUint32(b[16:], crc32.Checksum(b[:16], crcTable))
	if err := ticket.WriteFileAtomic(filepath.Join(dir, offsetFile), b[:], 0o600); err != nil {
		return fmt.Errorf("%w: %v", ErrSpoolWrite, err)
	}
	return nil
}

// readOffset returns the saved replay cursor, or the start of the spool when the file
// is missing or damaged (replaying from the start only duplicates, never loses).
func readOffset(dir string) cursor {
	b, err := os.ReadFile(filepath.Join(dir, offsetFile))
	if err != nil || len(b) != 20 || crc32.Checksum(b[:16], crcTable) != binary.LittleEndian.Uint32(b[16:]) {
		return cursor{}
	}
	return cursor{seq: binary.LittleEndian.Uint64(b), off: int64(binary.LittleEndian.Uint64(b[8:]))}
}
