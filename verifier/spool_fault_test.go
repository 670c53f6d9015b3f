package verifier

import (
	"errors"
	"testing"
)

// faultFile is an active spool segment whose Sync and Truncate fail on demand, as on a
// disk that went bad or full mid-write: the bytes of a failed append are on the file.
type faultFile struct {
	segmentFile
	failSync, failTruncate bool
}

var errDisk = errors.New("input/output error (test)")

func (f *faultFile) Sync() error {
	if f.failSync {
		return errDisk
	}
	return f.segmentFile.Sync()
}

func (f *faultFile) Truncate(n int64) error {
	if f.failTruncate {
		return errDisk
	}
	return f.segmentFile.Truncate(n)
}

// TestSpoolFailedCleanupDoesNotBlockTheNextStart: an append whose fsync fails is cut
// back, but when that cut fails too the failed batch's bytes stay past the good size. A
// later, shorter append that succeeded overwrote only part of them, and once the spool
// moved on to a new segment the leftover bytes sat inside a sealed segment: the next
// start refused the spool as corrupt, with acknowledged claims in it. Now the spool
// cuts the segment back before it writes again, refuses appends (ErrSpoolWrite, so
// nothing is acknowledged) until the cut succeeds, and never seals a segment with
// garbage in it.
func TestSpoolFailedCleanupDoesNotBlockTheNextStart(t *testing.T) {
	dir := t.TempDir()
	s, _ := openT(t, dir, 0, 300) // small segments: a few appends each
	acked := recsN(0, 2)
	must(t, s.append(acked))
	f := &faultFile{segmentFile: s.active, failSync: true, failTruncate: true}
	s.active = f
	if err := s.append(recsN(2, 8)); !errors.Is(err, ErrSpoolWrite) {
		t.Fatalf("append with a failing fsync: %v, want ErrSpoolWrite", err)
	}
	// The disk is still bad: nothing more may be acknowledged on top of the garbage.
	f.failSync = false
	if err := s.append(recsN(20, 1)); !errors.Is(err, ErrSpoolWrite) {
		t.Fatalf("append while the failed batch could not be cut back: %v, want ErrSpoolWrite", err)
	}
	// The disk recovers. A batch too large for what is left of the segment starts a new
	// one, sealing the damaged segment; more appends follow.
	f.failTruncate = false
	for i := range 4 {
		r := recsN(40+i*10, 10)
		must(t, s.append(r))
		acked = append(acked, r...)
	}
	if n := len(segFiles(t, dir)); n < 3 {
		t.Fatalf("%d segments; the test needs the spool to move past the damaged one", n)
	}
	s.close()
	s, err := openSpool(dir, 0, 300, func(_, _ []byte) {})
	if err != nil {
		t.Fatalf("the next start: %v", err)
	}
	defer s.close()
	drain(t, s, acked)
}
