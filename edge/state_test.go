package edge

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"shake/ticket"
)

func testHeader(count uint64, rounds int) *ticket.ShardHeader {
	h := &ticket.ShardHeader{
		Version: ticket.ShardVersion, Campaign: "c1", Currency: "CNY", Shard: 2, Shards: 4,
		FirstTicket: 1001, Count: count, Amount: int64(count), TTLSeconds: 60,
		CreatedAt: time.Unix(1700000000, 0).UTC(), Generation: "0123456789abcdef0123456789abcdef",
	}
	per := count / uint64(rounds)
	next := h.FirstTicket
	start := time.Unix(1800000000, 0).UTC()
	for i := 0; i < rounds; i++ {
		n := per
		if i == rounds-1 {
			n = count - per*uint64(rounds-1)
		}
		h.Rounds = append(h.Rounds, ticket.RoundWindow{Index: i, Start: start.Add(time.Duration(i) * time.Hour), End: start.Add(time.Duration(i)*time.Hour + time.Minute)})
		h.RoundRanges = append(h.RoundRanges, ticket.RoundRange{Round: i, FirstTicket: next, Count: n, Amount: int64(n)})
		next += n
	}
	if err := h.Validate(); err != nil {
		panic(err)
	}
	return h
}

func TestStateFreshResumeAndLost(t *testing.T) {
	path := filepath.Join(t.TempDir(), "edge.state")
	h := testHeader(1000, 3)
	sf, err := openState(path, h, true)
	if err != nil {
		t.Fatal(err)
	}
	// createState writes gen 1, this first run is gen 2.
	if sf.snap.Gen != 2 || sf.cursors[1].Load() != 0 {
		t.Fatalf("fresh state: gen %d cursor %d", sf.snap.Gen, sf.cursors[1].Load())
	}
	// Reserve 100 of round 1, take 37, then "crash" (close without finishing).
	s := sf.snap
	s.Seq++
	s.Rounds = append([]roundRecord(nil), s.Rounds...)
	s.Rounds[1].Reserved = 100
	if err := sf.writeSlot(&s); err != nil {
		t.Fatal(err)
	}
	sf.cursors[1].Store(37)
	sf.close()

	sf, err = openState(path, h, false)
	if err != nil {
		t.Fatal(err)
	}
	r := sf.snap.Rounds[1]
	if r.Reserved != 100 || r.Lost != 63 || sf.cursors[1].Load() != 100 || sf.snap.Gen != 3 {
		t.Fatalf("after crash: %+v cursor %d gen %d", r, sf.cursors[1].Load(), sf.snap.Gen)
	}
	sf.close()
	// A crash right after recovery (nothing taken) loses nothing more.
	sf, err = openState(path, h, false)
	if err != nil {
		t.Fatal(err)
	}
	if r := sf.snap.Rounds[1]; r.Lost != 63 || r.Reserved != 100 {
		t.Fatalf("second recovery: %+v", r)
	}
	sf.close()
}

// A crash between recovery's slot write and its region update must not count the
// same loss twice: the region then still carries the older gen.
func TestStateCrashDuringRecovery(t *testing.T) {
	path := filepath.Join(t.TempDir(), "edge.state")
	h := testHeader(500, 1)
	sf, _ := openState(path, h, true)
	s := sf.snap
	s.Seq++
	s.Rounds = []roundRecord{{Reserved: 200}}
	sf.writeSlot(&s)
	sf.cursors[0].Store(50)
	// Simulate recovery's durable write (gen+1, loss counted) without its region update.
	s2 := s
	s2.Seq++
	s2.Gen++
	s2.Rounds = []roundRecord{{Reserved: 200, Lost: 150, Hint: 200}}
	sf.writeSlot(&s2)
	sf.close()
	sf, err := openState(path, h, false)
	if err != nil {
		t.Fatal(err)
	}
	defer sf.close()
	if r := sf.snap.Rounds[0]; r.Lost != 150 || r.Reserved != 200 || sf.cursors[0].Load() != 200 {
		t.Fatalf("got %+v cursor %d", r, sf.cursors[0].Load())
	}
}

func TestStateRejectsForeignAndCorrupt(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "edge.state")
	h := testHeader(1000, 2)
	sf, err := openState(path, h, true)
	if err != nil {
		t.Fatal(err)
	}
	sf.close()
	// Reopen once so that both slots hold a valid snapshot.
	if sf, err = openState(path, h, false); err != nil {
		t.Fatal(err)
	}
	sf.close()

	other := *h
	other.Shard = 3
	if _, err := openState(path, &other, false); !errors.Is(err, ErrStateForeign) {
		t.Fatalf("other shard: %v", err)
	}
	regen := *h
	regen.CreatedAt = h.CreatedAt.Add(time.Second)
	if _, err := openState(path, &regen, false); !errors.Is(err, ErrStateForeign) {
		t.Fatalf("regenerated shard: %v", err)
	}
	three := testHeader(1000, 3)
	if _, err := openState(path, three, false); !errors.Is(err, ErrStateForeign) {
		t.Fatalf("other round layout: %v", err)
	}

	// One damaged slot: the other still carries the state.
	b, _ := os.ReadFile(path)
	b[20] ^= 0xff // slot A seq, under its CRC
	os.WriteFile(path, b, 0o600)
	sf, err = openState(path, h, false)
	if err != nil {
		t.Fatalf("one slot damaged: %v", err)
	}
	sf.close()
	// Both slots damaged.
	b, _ = os.ReadFile(path)
	b[20] ^= 0xff
	b[slotSize(2)+20] ^= 0xff
	os.WriteFile(path, b, 0o600)
	if _, err := openState(path, h, false); !errors.Is(err, ErrStateCorrupt) {
		t.Fatalf("both slots damaged: %v", err)
	}
	// Garbage and truncation.
	os.WriteFile(path, []byte("not a state file at all"), 0o600)
	if _, err := openState(path, h, false); !errors.Is(err, ErrStateCorrupt) {
		t.Fatalf("garbage: %v", err)
	}
	// Unwritable path.
	if _, err := openState(filepath.Join(dir, "missing", "x.state"), h, true); !errors.Is(err, ErrState) {
		t.Fatalf("missing dir: %v", err)
	}
}

func TestStateLocked(t *testing.T) {
	path := filepath.Join(t.TempDir(), "edge.state")
	h := testHeader(10, 1)
	sf, err := openState(path, h, true)
	if err != nil {
		t.Fatal(err)
	}
	defer sf.close()
	if _, err := openState(path, h, false); !errors.Is(err, ErrStateLocked) {
		t.Fatalf("second open: %v", err)
	}
}

func TestSlotRoundTripAndRanges(t *testing.T) {
	s := &stateSnapshot{Seq: 9, Gen: 4, ID: identityOf(testHeader(300, 3)), Clean: true,
		Rounds: []roundRecord{{100, 10, 90}, {0, 0, 0}, {100, 0, 100}}}
	got, err := decodeSlot(encodeSlot(nil, s))
	if err != nil {
		t.Fatal(err)
	}
	if got.Seq != 9 || got.Gen != 4 || got.ID != s.ID || !got.Clean || got.Rounds[0] != s.Rounds[0] {
		t.Fatalf("round trip: %+v", got)
	}
	bad := *s
	bad.Rounds = []roundRecord{{100, 101, 0}, {}, {}}
	if _, err := decodeSlot(encodeSlot(nil, &bad)); !errors.Is(err, ErrStateCorrupt) {
		t.Fatalf("lost > reserved accepted: %v", err)
	}
	bad.Rounds = []roundRecord{{200, 0, 0}, {200, 0, 0}, {0, 0, 0}}
	if _, err := decodeSlot(encodeSlot(nil, &bad)); !errors.Is(err, ErrStateCorrupt) {
		t.Fatalf("reserved above count accepted: %v", err)
	}
}

// FuzzDecodeSlot: the slot decoder never panics and accepts only what re-encodes
// to the same bytes.
func FuzzDecodeSlot(f *testing.F) {
	s := &stateSnapshot{Seq: 1, Gen: 1, ID: identityOf(testHeader(300, 2)), Rounds: []roundRecord{{10, 1, 5}, {0, 0, 0}}}
	f.Add(encodeSlot(nil, s))
	f.Add([]byte(stateMagic))
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := decodeSlot(b)
		if err != nil {
			return
		}
		again, err := decodeSlot(encodeSlot(nil, got))
		if err != nil || again.Seq != got.Seq || again.Gen != got.Gen || again.ID != got.ID || len(again.Rounds) != len(got.Rounds) {
			t.Fatalf("accepted slot does not survive a round trip: %v", err)
		}
	})
}

// TestStateInitLifecycle: --init-state creates, a plain start resumes, and neither
// mistakes the other's case: a missing file is refused without
// --init-state, an existing one with it.
func TestStateInitLifecycle(t *testing.T) {
	h := testHeader(1000, 2)
	dir := t.TempDir()
	path := filepath.Join(dir, "edge.state")
	if _, err := openState(path, h, false); !errors.Is(err, ErrStateMissing) ||
		!strings.Contains(err.Error(), "--init-state") || !strings.Contains(err.Error(), "again") {
		t.Fatalf("missing file without --init-state: %v", err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a refused start created the file: %v", err)
	}
	sf, err := openState(path, h, true)
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
		t.Fatalf("state file mode %v", st.Mode().Perm())
	}
	sf.close()
	if _, err := openState(path, h, true); !errors.Is(err, ErrStateExists) {
		t.Fatalf("--init-state on an existing file: %v", err)
	}
	if sf, err = openState(path, h, false); err != nil {
		t.Fatalf("resume: %v", err)
	}
	sf.close()
	if left, _ := filepath.Glob(filepath.Join(dir, ".*init*")); len(left) != 0 {
		t.Fatalf("temporary files left: %v", left)
	}
}

// TestStateKilledDuringInit: a first start killed while creating the file leaves only
// createState's temporary file, half written; the state file itself is absent, not
// half made. A start without --init-state is refused and says the init was
// interrupted; running the same --init-state start again completes it.
func TestStateKilledDuringInit(t *testing.T) {
	h := testHeader(1000, 2)
	dir := t.TempDir()
	path := filepath.Join(dir, "edge.state")
	half := filepath.Join(dir, ".edge.state.init-123")
	if err := os.WriteFile(half, []byte("SHKEST01 half"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := openState(path, h, false); !errors.Is(err, ErrStateMissing) || !strings.Contains(err.Error(), "interrupted") {
		t.Fatalf("start after an interrupted init: %v", err)
	}
	sf, err := openState(path, h, true)
	if err != nil {
		t.Fatalf("--init-state again after an interrupted one: %v", err)
	}
	sf.close()
	if _, err := os.Stat(half); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("the interrupted init's temporary file was not removed")
	}
}

// TestStateBlankFileRefused: an empty or all-zero state file (truncated by mistake, or
// left by an older shake killed during its first start) cannot say which tickets were
// handed out; it is refused, not taken as a fresh start, and --init-state does not
// overwrite it. A torn slot is refused as corrupt too.
func TestStateBlankFileRefused(t *testing.T) {
	h := testHeader(1000, 2)
	dir := t.TempDir()
	for name, content := range map[string][]byte{
		"empty":  nil,
		"zeroed": make([]byte, stateFileSize(len(h.RoundRanges))),
	} {
		path := filepath.Join(dir, name+".state")
		if err := os.WriteFile(path, content, 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := openState(path, h, false); !errors.Is(err, ErrStateCorrupt) || !strings.Contains(err.Error(), "--init-state") {
			t.Fatalf("%s file: %v", name, err)
		}
		if _, err := openState(path, h, true); !errors.Is(err, ErrStateExists) {
			t.Fatalf("%s file with --init-state: %v", name, err)
		}
	}
	torn := filepath.Join(dir, "torn.state")
	b := make([]byte, stateFileSize(len(h.RoundRanges)))
	b[3] = 1 // a slot that was partly written
	if err := os.WriteFile(torn, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := openState(torn, h, false); !errors.Is(err, ErrStateCorrupt) {
		t.Fatalf("torn slot: %v, want ErrStateCorrupt", err)
	}
}

// TestStateInitUndoneWhenStartFails: a first start (--init-state) that fails after
// creating its state file (here its listen address is taken) removes the file again,
// since it handed nothing out; the same first start, once the address is free, then
// succeeds instead of being refused for a file the failed one left behind.
func TestStateInitUndoneWhenStartFails(t *testing.T) {
	f := newFixture(t, shardSpec{count: 10})
	path := filepath.Join(t.TempDir(), "edge.state")
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := f.config(path)
	cfg.Listen = busy.Addr().String()
	if _, err := New(cfg); !errors.Is(err, ErrListen) {
		t.Fatalf("start on a taken address: %v, want ErrListen", err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the failed first start left its state file: %v", err)
	}
	busy.Close()
	s, err := New(cfg)
	if err != nil {
		t.Fatalf("the same first start once the address is free: %v", err)
	}
	s.Close()
	if s, err = New(f.resume(path)); err != nil {
		t.Fatalf("resume after the first start: %v", err)
	}
	s.Close()
}
