package verifier

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"unicode/utf8"
)

func TestParseOpenBody(t *testing.T) {
	cases := []struct {
		in   string
		tok  string
		good bool
	}{
		{`{"token":"abc"}`, "abc", true},
		{" \t\r\n{ \"token\" :\n\"abc\" } \n", "abc", true},
		{`{"token":""}`, "", true},
		{`{"token":"a\"b"}`, "", false},
		{`{"token":"a\\b"}`, "", false},
		{"{\"token\":\"a\x01b\"}", "", false},
		{`{"token":1}`, "", false},
		{`{"tok":"abc"}`, "", false},
		{`{"token":"abc","x":1}`, "", false},
		{`{"token":"abc"}x`, "", false},
		{`{"token":"abc"`, "", false},
		{`{"token":"abc`, "", false},
		{`{"token"`, "", false},
		{`[]`, "", false},
		{``, "", false},
		{`null`, "", false},
	}
	for _, c := range cases {
		tok, ok := parseOpenBody([]byte(c.in))
		if ok != c.good || string(tok) != c.tok {
			t.Errorf("%q: got %q %v, want %q %v", c.in, tok, ok, c.tok, c.good)
		}
	}
	b := []byte(`{"token":"abcdef"}`)
	if n := testing.AllocsPerRun(100, func() { parseOpenBody(b) }); n != 0 {
		t.Fatalf("parseOpenBody allocates %v", n)
	}
}

// FuzzParseOpenBody checks the scanner against encoding/json: whatever it accepts is a
// JSON object with exactly one member "token" whose string value is what it returned.
func FuzzParseOpenBody(f *testing.F) {
	f.Add([]byte(`{"token":"abc"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		tok, ok := parseOpenBody(b)
		if !ok {
			return
		}
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatalf("accepted invalid JSON %q: %v", b, err)
		}
		// encoding/json replaces invalid UTF-8 with U+FFFD; the scanner passes the bytes
		// through (the token then fails to open: 422).
		if len(m) != 1 || utf8.Valid(tok) && m["token"] != string(tok) {
			t.Fatalf("accepted %q as token %q, json says %v", b, tok, m)
		}
		if !bytes.Contains(b, tok) {
			t.Fatal("token does not alias the body")
		}
	})
}

func TestClaimTable(t *testing.T) {
	ct := newClaimTable([]uint64{1, 11}, []uint64{10, 5}, 12345)
	a, b := ct.fingerprint(7), ct.fingerprint(8)
	if a == b || a&^fpMask != 0 {
		t.Fatalf("fingerprints %x %x", a, b)
	}
	if r := ct.claim(1, 15, a); r != claimNew {
		t.Fatalf("first claim %v", r)
	}
	if r := ct.claim(1, 15, a); r != claimInFlight {
		t.Fatalf("same user in flight %v", r)
	}
	if r := ct.claim(1, 15, b); r != claimOther {
		t.Fatalf("other user %v", r)
	}
	ct.release(1, 15)
	if r := ct.claim(1, 15, b); r != claimNew {
		t.Fatalf("after release %v", r)
	}
	ct.markDurable(1, 15, b)
	if r := ct.claim(1, 15, b); r != claimDurable {
		t.Fatalf("durable %v", r)
	}
	if r := ct.claim(1, 15, a); r != claimOther {
		t.Fatalf("other after durable %v", r)
	}
	// Neighbours are untouched, also across shards.
	if free, _ := ct.state(1, 14); !free {
		t.Fatal("neighbour claimed")
	}
	if free, _ := ct.state(0, 10); !free {
		t.Fatal("other shard claimed")
	}
	// Racing users: exactly one wins.
	var wg sync.WaitGroup
	var mu sync.Mutex
	wins := 0
	for u := uint64(0); u < 64; u++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if ct.claim(0, 3, ct.fingerprint(u+100)) == claimNew {
				mu.Lock()
				wins++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if wins != 1 {
		t.Fatalf("%d winners", wins)
	}
	if n := testing.AllocsPerRun(100, func() { ct.claim(0, 4, a); ct.release(0, 4) }); n != 0 {
		t.Fatalf("claim allocates %v", n)
	}
}

func recsN(from, n int) []spoolRecord {
	var r []spoolRecord
	for i := from; i < from+n; i++ {
		r = append(r, spoolRecord{Key: []byte{byte('0' + i%10)}, Value: bytes.Repeat([]byte{byte(i)}, 10+i%7)})
	}
	return r
}

func openT(t *testing.T, dir string, max, seg int64) (*spool, []spoolRecord) {
	t.Helper()
	var seen []spoolRecord
	s, err := openSpool(dir, max, seg, func(k, v []byte) {
		seen = append(seen, spoolRecord{append([]byte(nil), k...), append([]byte(nil), v...)})
	})
	must(t, err)
	return s, seen
}

// drain replays everything, checking order against want.
func drain(t *testing.T, s *spool, want []spoolRecord) {
	t.Helper()
	var got []spoolRecord
	var buf []byte
	var recs []spoolRecord
	for i := 0; i < 1000; i++ {
		var end cursor
		var n int64
		var err error
		recs, buf, end, n, err = s.readBatch(3, buf, recs)
		must(t, err)
		if len(recs) == 0 {
			if end != s.cursor() {
				must(t, s.commit(end, 0, 0))
				continue
			}
			break
		}
		for _, r := range recs {
			got = append(got, spoolRecord{append([]byte(nil), r.Key...), append([]byte(nil), r.Value...)})
		}
		must(t, s.commit(end, len(recs), n))
	}
	if len(got) != len(want) {
		t.Fatalf("replayed %d records, want %d", len(got), len(want))
	}
	for i := range got {
		if !bytes.Equal(got[i].Key, want[i].Key) || !bytes.Equal(got[i].Value, want[i].Value) {
			t.Fatalf("record %d out of order or damaged", i)
		}
	}
	if s.pendingRecs.Load() != 0 || s.pendingBytes.Load() != 0 {
		t.Fatalf("pending %d/%d after drain", s.pendingRecs.Load(), s.pendingBytes.Load())
	}
}

func segFiles(t *testing.T, dir string) []string {
	m, _ := filepath.Glob(filepath.Join(dir, "*.seg"))
	return m
}

func TestSpoolReplayOrderAcrossSegmentsAndRestart(t *testing.T) {
	dir := t.TempDir()
	s, _ := openT(t, dir, 0, 100) // tiny segments: a few records each
	var all []spoolRecord
	for i := 0; i < 10; i++ {
		r := recsN(i*3, 3)
		must(t, s.append(r))
		all = append(all, r...)
	}
	if len(segFiles(t, dir)) < 5 {
		t.Fatalf("expected many segments, have %v", segFiles(t, dir))
	}
	// Replay part of it, then "crash" and reopen: only the rest is pending, in order.
	var buf []byte
	recs, _, end, n, err := s.readBatch(4, buf, nil)
	must(t, err)
	must(t, s.commit(end, len(recs), n))
	s.close()
	s, seen := openT(t, dir, 0, 100)
	if len(seen) < len(all)-len(recs) {
		t.Fatalf("restore saw %d records", len(seen))
	}
	if s.pendingRecs.Load() != int64(len(all)-len(recs)) {
		t.Fatalf("pending %d, want %d", s.pendingRecs.Load(), len(all)-len(recs))
	}
	more := recsN(100, 2)
	must(t, s.append(more))
	drain(t, s, append(all[len(recs):], more...))
	// Fully replayed segments are deleted; only the fresh active one is left, empty.
	fs := segFiles(t, dir)
	if len(fs) != 1 {
		t.Fatalf("segments left: %v", fs)
	}
	if st, _ := os.Stat(fs[0]); st.Size() != 0 {
		t.Fatalf("active segment holds %d bytes", st.Size())
	}
	s.close()
	s, seen = openT(t, dir, 0, 100)
	defer s.close()
	if len(seen) != 0 || s.pendingRecs.Load() != 0 {
		t.Fatalf("drained spool reopened with %d records", len(seen))
	}
}

func TestSpoolTornTailIsTruncated(t *testing.T) {
	dir := t.TempDir()
	s, _ := openT(t, dir, 0, 0)
	r := recsN(0, 5)
	must(t, s.append(r))
	s.close()
	seg := segFiles(t, dir)[0]
	good, _ := os.ReadFile(seg)
	for _, tear := range []func([]byte) []byte{
		func(b []byte) []byte { return append(b, 9, 0, 0) },                                                 // a torn header
		func(b []byte) []byte { return append(b, appendRecord(nil, []byte("k"), []byte("value"))[:14]...) }, // torn payload
		func(b []byte) []byte { // a full record with a bad CRC
			rec := appendRecord(nil, []byte("k"), []byte("v"))
			rec[len(rec)-1] ^= 1
			return append(b, rec...)
		},
	} {
		must(t, os.WriteFile(seg, tear(append([]byte(nil), good...)), 0o600))
		// Remove segments made by earlier reopen rounds so seg is the last one.
		for _, f := range segFiles(t, dir) {
			if f != seg {
				os.Remove(f)
			}
		}
		s, seen := openT(t, dir, 0, 0)
		if len(seen) != 5 || s.pendingRecs.Load() != 5 {
			t.Fatalf("after tear: %d records seen, %d pending", len(seen), s.pendingRecs.Load())
		}
		if st, _ := os.Stat(seg); st.Size() != int64(len(good)) {
			t.Fatalf("torn tail not truncated: %d bytes, want %d", st.Size(), len(good))
		}
		s.close()
	}
}

func TestSpoolCorruptSealedSegmentIsAnError(t *testing.T) {
	dir := t.TempDir()
	s, _ := openT(t, dir, 0, 0)
	must(t, s.append(recsN(0, 5)))
	s.close()
	// Reopening seals the first segment and starts a second.
	s, _ = openT(t, dir, 0, 0)
	s.close()
	seg := segFiles(t, dir)[0]
	b, _ := os.ReadFile(seg)
	b[20] ^= 0xff
	must(t, os.WriteFile(seg, b, 0o600))
	if _, err := openSpool(dir, 0, 0, func(_, _ []byte) {}); !errors.Is(err, ErrSpoolCorrupt) {
		t.Fatalf("corrupt sealed segment: %v", err)
	}
}

func TestSpoolSizeBound(t *testing.T) {
	dir := t.TempDir()
	one := int64(len(appendRecord(nil, []byte("1"), bytes.Repeat([]byte{1}, 10))))
	s, _ := openT(t, dir, 3*one, 0)
	defer s.close()
	r := []spoolRecord{{Key: []byte("1"), Value: bytes.Repeat([]byte{1}, 10)}}
	for i := 0; i < 3; i++ {
		must(t, s.append(r))
	}
	if err := s.append(r); !errors.Is(err, ErrSpoolFull) {
		t.Fatalf("4th append: %v", err)
	}
	// Replaying frees room.
	recs, _, end, n, err := s.readBatch(1, nil, nil)
	must(t, err)
	must(t, s.commit(end, len(recs), n))
	must(t, s.append(r))
	if err := s.append([]spoolRecord{{Key: []byte("1"), Value: make([]byte, maxSpoolPayload)}}); !errors.Is(err, ErrSpoolWrite) {
		t.Fatalf("oversized record: %v", err)
	}
}
