package settler

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kerr"

	"shake/internal/kafkatest"
	"shake/settler/ledger"
)

// TestGroupLagAndStallWatch: the group's committed lag is asked of the broker (claims
// nobody has committed), and a settler whose group commits nothing while claims wait,
// with its ledger healthy, is told to recreate its reader.
func TestGroupLagAndStallWatch(t *testing.T) {
	addr := startBroker(t)
	var vals [][]byte
	for i := range 10 {
		vals = append(vals, []byte(fmt.Sprintf(`{"n":%d}`, i)))
	}
	produce(t, addr, vals...)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	client := &kafka.Client{Addr: kafka.TCP(addr), Timeout: 5 * time.Second}
	if lag, err := groupLag(ctx, client, "stall-test", topic); err != nil || lag != 10 {
		t.Fatalf("lag before any commit = %d, %v; want 10", lag, err)
	}

	// Commit everything as the group: the lag drops to zero.
	rd := kafka.NewReader(kafka.ReaderConfig{Brokers: []string{addr}, GroupID: "stall-test", Topic: topic,
		StartOffset: kafka.FirstOffset, MaxWait: 100 * time.Millisecond})
	for range 10 {
		m, err := rd.FetchMessage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := rd.CommitMessages(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	rd.Close()
	if lag, err := groupLag(ctx, client, "stall-test", topic); err != nil || lag != 0 {
		t.Fatalf("lag after committing all = %d, %v; want 0", lag, err)
	}

	// Another group has all 10 waiting; a settler of it that settles nothing stalls.
	c := makeCampaign(t, t.TempDir(), "stall", []uint64{20}, time.Now().Add(time.Hour))
	v := c.validator(t, nil)
	s, err := New(Config{Brokers: []string{addr}, Topic: topic, Group: "stalled-group", Manifest: c.manifest,
		Validator: v, Ledger: &flakyLedger{}, StallTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	go s.watchStall(ctx)
	for !s.restart.Load() {
		if ctx.Err() != nil {
			t.Fatal("no stall reported while 10 claims waited and nothing was settled")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if g := s.mStalled.Value(); g == 0 {
		t.Fatal("shake_settler_stalled_partitions = 0 after a stall")
	}
	if g := s.mGroupLag.Value(); g != 10 {
		t.Fatalf("shake_settler_group_lag = %d, want 10", g)
	}
	if !s.stalled.Load() {
		t.Fatal("a stalled settler must not report ready")
	}
}

// zombie joins the settler's group by hand (internal/kafkatest) and takes its share of
// the partitions, then only heartbeats: it never fetches, never commits and never
// rejoins, as a member the broker keeps but whose consumer is gone does (the dead
// joiner of chaos seed 777, or a client whose poll loop hangs while its heartbeat goes
// on). It returns the partitions it holds; it stops when the broker drops it.
func zombie(t *testing.T, addr, group string, parts int32) []int32 {
	t.Helper()
	conn, err := kafkatest.Dial(addr, "zombie")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	z := &kafkatest.Member{C: conn, Group: group, Topic: topic}
	if err := z.Park(); err != nil {
		t.Fatal(err)
	}
	// The settler's reader learns of the rebalance on its next heartbeat and rejoins.
	if err := z.Parked(30 * time.Second); err != nil {
		t.Fatalf("zombie join: %v", err)
	}
	if err := z.Sync(parts, 30*time.Second); err != nil {
		t.Fatalf("zombie sync: %v", err)
	}
	if len(z.Assigned) == 0 || len(z.Assigned) == int(parts) {
		t.Fatalf("zombie owns partitions %v of %d; want a share", z.Assigned, parts)
	}
	go func() {
		for {
			time.Sleep(500 * time.Millisecond)
			if err := z.Heartbeat(); err != nil && !errors.Is(err, kerr.RebalanceInProgress) {
				return // dropped from the group (or the test is over)
			}
		}
	}()
	return z.Assigned
}

// produceTo writes claims for ids to partition p.
func produceTo(t *testing.T, addr string, c *testCampaign, p int, ids ...uint64) {
	t.Helper()
	w := &kafka.Writer{Addr: kafka.TCP(addr), Topic: topic, RequiredAcks: kafka.RequireAll, BatchTimeout: time.Millisecond,
		Balancer: kafka.BalancerFunc(func(kafka.Message, ...int) int { return p })}
	defer w.Close()
	var msgs []kafka.Message
	for _, id := range ids {
		cl := c.claim(id, id)
		msgs = append(msgs, kafka.Message{Key: cl.AppendKey(nil), Value: cl.AppendJSON(nil)})
	}
	if err := w.WriteMessages(context.Background(), msgs...); err != nil {
		t.Fatal(err)
	}
}

// stallSetup starts a broker and a settler (stall timeout 1 s) that owns every
// partition and has settled claim 1, then lets a zombie take a share of the partitions.
func stallSetup(t *testing.T) (addr string, c *testCampaign, r *run, zombieParts, ownParts []int32) {
	addr = startBroker(t)
	dir := t.TempDir()
	c = makeCampaign(t, dir, "stall", []uint64{1000}, time.Now().Add(time.Hour))
	l, err := ledger.Open(context.Background(), "sqlite://"+filepath.Join(dir, "ledger.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	r = startSettler(t, addr, c, l, func(cfg *Config) { cfg.StallTimeout = time.Second })
	produceTo(t, addr, c, 0, 1)
	r.waitSeen(t, 1)
	zombieParts = zombie(t, addr, DefaultGroup, 4)
	for p := range int32(4) {
		if !slices.Contains(zombieParts, p) {
			ownParts = append(ownParts, p)
		}
	}
	return addr, c, r, zombieParts, ownParts
}

// stallBound is how long claims on a zombie's partitions may wait: the stall timeout
// (1 s) and the watchdog's look, the rebalance that drops the zombie (the settler's
// rebalance timeout is its 6 s session timeout), and slack for a loaded machine.
const stallBound = 20 * time.Second

// waitPosted waits until n claims are posted, at most d.
func (r *run) waitPosted(n uint64, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if r.s.mPosted.Value() >= n {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

// TestStallInterruptsABlockedFetch: claims wait on partitions a zombie holds, while
// the settler's own partitions are empty, so its reader sits in FetchMessage. The
// watchdog must interrupt that fetch and make a new group member, whose join drops the
// zombie; then every claim is posted. Before, Run looked at the stall signal only
// between batches, logged "restarting the group reader" and stayed in the fetch.
func TestStallInterruptsABlockedFetch(t *testing.T) {
	addr, c, r, zp, _ := stallSetup(t)
	for i, p := range zp {
		produceTo(t, addr, c, int(p), uint64(10+i*10), uint64(11+i*10))
	}
	want := uint64(1 + 2*len(zp))
	if !r.waitPosted(want, stallBound) {
		t.Fatalf("posted %d of %d claims %v after the zombie took partitions %v; reader restarts %d",
			r.s.mPosted.Value(), want, stallBound, zp, r.s.mRestarts.Value())
	}
	if r.s.mRestarts.Value() == 0 {
		t.Fatal("claims settled without a reader restart: the zombie was not holding them")
	}
	t.Logf("all %d claims posted; reader restarts %d", want, r.s.mRestarts.Value())
}

// TestStallPerPartition: the settler keeps settling claims on its own partitions while
// the zombie's partitions fill up. A watchdog that only asks whether anything is settled
// at all never fires; one that watches each partition's committed offset does.
func TestStallPerPartition(t *testing.T) {
	addr, c, r, zp, own := stallSetup(t)
	for i, p := range zp {
		produceTo(t, addr, c, int(p), uint64(10+i*10))
	}
	// A trickle on the settler's own partitions, for the whole wait.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	trickled := make(chan uint64, 1)
	go func() {
		n := uint64(0)
		defer func() { trickled <- n }()
		for id := uint64(100); ctx.Err() == nil && id < 1000; id++ {
			produceTo(t, addr, c, int(own[int(id)%len(own)]), id)
			n++
			sleep(ctx, 100*time.Millisecond)
		}
	}()
	deadline := time.Now().Add(stallBound)
	for time.Now().Before(deadline) && r.s.mRestarts.Value() == 0 {
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	n := <-trickled
	want := 1 + uint64(len(zp)) + n
	if !r.waitPosted(want, stallBound) {
		t.Fatalf("posted %d of %d claims (%d on its own partitions); reader restarts %d: partitions %v never settled",
			r.s.mPosted.Value(), want, n, r.s.mRestarts.Value(), zp)
	}
	t.Logf("all %d claims posted (%d trickled on its own partitions); reader restarts %d", want, n, r.s.mRestarts.Value())
}
