package settler

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"

	"shake/internal/obs"
	"shake/settler/ledger"
)

const topic = "shake.claims"

func startBroker(t testing.TB) string {
	t.Helper()
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(4, topic, topic+".dlq"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c.ListenAddrs()[0]
}

func produce(t testing.TB, addr string, values ...[]byte) {
	t.Helper()
	w := &kafka.Writer{Addr: kafka.TCP(addr), Topic: topic, Balancer: &kafka.Hash{}, RequiredAcks: kafka.RequireAll,
		BatchTimeout: time.Millisecond, BatchSize: 1000}
	defer w.Close()
	var msgs []kafka.Message
	for i, v := range values {
		msgs = append(msgs, kafka.Message{Key: []byte(strconv.Itoa(i)), Value: v})
	}
	for len(msgs) > 0 {
		n := min(len(msgs), 1000)
		if err := w.WriteMessages(context.Background(), msgs[:n]...); err != nil {
			t.Fatal(err)
		}
		msgs = msgs[n:]
	}
}

// readDLQ reads n dead letters and returns their reasons.
func readDLQ(t *testing.T, addr string, n int) []string {
	t.Helper()
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: []string{addr}, GroupID: "dlq-check", Topic: topic + ".dlq",
		StartOffset: kafka.FirstOffset, MaxWait: 100 * time.Millisecond})
	defer r.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var reasons []string
	for len(reasons) < n {
		m, err := r.FetchMessage(ctx)
		if err != nil {
			t.Fatalf("after %d dead letters: %v", len(reasons), err)
		}
		var env struct {
			Reason string          `json:"reason"`
			Claim  json.RawMessage `json:"claim"`
		}
		if err := json.Unmarshal(m.Value, &env); err != nil || len(env.Claim) == 0 {
			t.Fatalf("dead letter %s: %v", m.Value, err)
		}
		if len(m.Headers) == 0 || string(m.Headers[0].Value) != env.Reason {
			t.Fatalf("dead letter headers %v, reason %s", m.Headers, env.Reason)
		}
		reasons = append(reasons, env.Reason)
	}
	return reasons
}

// flakyLedger fails Post while down is set.
type flakyLedger struct {
	ledger.Ledger
	down  atomic.Bool
	calls atomic.Int64
}

var errDown = errors.New("ledger unreachable (test)")

func (f *flakyLedger) Post(ctx context.Context, b []ledger.Posting) (ledger.Result, error) {
	f.calls.Add(1)
	if f.down.Load() {
		return ledger.Result{}, errDown
	}
	return f.Ledger.Post(ctx, b)
}

type run struct {
	s    *Settler
	reg  *obs.Registry
	stop context.CancelFunc
	done chan error
}

func startSettler(t testing.TB, addr string, c *testCampaign, l ledger.Ledger, mut func(*Config)) *run {
	t.Helper()
	v := c.validator(t, nil)
	reg := obs.NewRegistry()
	cfg := Config{Brokers: []string{addr}, Topic: topic, Manifest: c.manifest, Validator: v, Ledger: l, Registry: reg,
		Batch: 500, Linger: 20 * time.Millisecond, SessionTimeout: 6 * time.Second,
		BreakerFailures: 3, BreakerCooldown: 200 * time.Millisecond, BackoffMin: 10 * time.Millisecond, BackoffMax: 50 * time.Millisecond}
	if mut != nil {
		mut(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &run{s: s, reg: reg, stop: cancel, done: make(chan error, 1)}
	go func() { r.done <- s.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-r.done })
	return r
}

// waitSeen waits until the settler has handled n claims (posted, duplicate or dead).
func (r *run) waitSeen(t testing.TB, n uint64) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		seen := r.s.mPosted.Value() + r.s.mDup.Value()
		for _, c := range r.s.mDLQ {
			seen += c.Value()
		}
		if seen >= n {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("timed out: posted %d, duplicates %d", r.s.mPosted.Value(), r.s.mDup.Value())
}

func TestSettlerEndToEnd(t *testing.T) {
	t.Parallel()
	addr := startBroker(t)
	dir := t.TempDir()
	c := makeCampaign(t, dir, "e2e", []uint64{1500, 1500}, time.Now().Add(time.Hour))
	l, err := ledger.Open(context.Background(), "sqlite://"+filepath.Join(dir, "ledger.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	const n = 3000
	var values [][]byte
	for id := uint64(1); id <= n; id++ {
		values = append(values, claimJSON(c.claim(id, id%100)))
	}
	// The same claim delivered three times.
	values = append(values, claimJSON(c.claim(7, 7)), claimJSON(c.claim(7, 7)))
	// Three claims the manifest disagrees with.
	bad := c.claim(10, 1)
	bad.Campaign = "other"
	values = append(values, claimJSON(bad))
	bad = c.claim(3001, 1)
	values = append(values, claimJSON(bad))
	bad = c.claim(11, 1)
	bad.Amount = 97 - bad.Amount + 1 // in range, wrong (and signed: a verifier's mistake, not a forgery)
	values = append(values, claimJSON(c.resign(bad)))
	values = append(values, []byte("not a claim"))

	// A batch that reached the ledger before a crash, but whose offsets were never
	// committed: the settler replays it and posts nothing twice.
	// (Tickets below 100, whose claims above carry uid = id as settle posts them: another
	// uid would be a conflict.)
	settle(t, l, c, 1, 2, 3, 4, 5, 50, 99)
	produce(t, addr, values...)

	r := startSettler(t, addr, c, l, func(cfg *Config) {
		amounts, err := LoadAmounts(c.manifest, c.dir)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Validator = c.validator(t, amounts)
	})
	r.waitSeen(t, uint64(len(values)))
	if got := r.s.mPosted.Value(); got != n-7 {
		t.Fatalf("posted %d, want %d", got, n-7)
	}
	if got := r.s.mDup.Value(); got != 7+2 {
		t.Fatalf("duplicates %d, want 9", got)
	}
	// Batches are bounded by count: 500 claims at most each.
	if b := r.s.mBatches.Value(); b < uint64((len(values)+499)/500) {
		t.Fatalf("%d batches for %d claims with --batch 500", b, len(values))
	}
	reasons := readDLQ(t, addr, 4)
	count := map[string]int{}
	for _, re := range reasons {
		count[re]++
	}
	if count[ReasonCampaign] != 1 || count[ReasonUnknownTicket] != 1 || count[ReasonAmount] != 1 || count[ReasonMalformed] != 1 {
		t.Fatalf("dead letter reasons %v", reasons)
	}
	rep, err := Reconcile(context.Background(), c.manifest, c.dir, l)
	if err != nil || !rep.OK || rep.SettledTickets != n || rep.Duplicates != 0 {
		t.Fatalf("reconcile %+v %v", rep, err)
	}
	if !r.s.Ready() {
		t.Fatal("not ready while consuming")
	}
	// Run registered the campaign, figures included, for readers of the ledger.
	want, err := Info(c.manifest)
	if err != nil {
		t.Fatal(err)
	}
	if got, ok, err := l.Registered(context.Background(), "e2e"); !ok || err != nil || got != want {
		t.Fatalf("registered %+v %v %v, want %+v", got, ok, err, want)
	}
	r.stop()
	if err := <-r.done; err != nil {
		t.Fatalf("Run after stop: %v", err)
	}
	r.done <- nil // for the cleanup
}

func TestSettlerBreakerStopsAndRecovers(t *testing.T) {
	t.Parallel()
	addr := startBroker(t)
	dir := t.TempDir()
	c := makeCampaign(t, dir, "brk", []uint64{600}, time.Now().Add(time.Hour))
	inner, err := ledger.Open(context.Background(), "sqlite://"+filepath.Join(dir, "ledger.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer inner.Close()
	fl := &flakyLedger{Ledger: inner}
	var values [][]byte
	for id := uint64(1); id <= 300; id++ {
		values = append(values, claimJSON(c.claim(id, id)))
	}
	produce(t, addr, values...)
	r := startSettler(t, addr, c, fl, nil)
	r.waitSeen(t, 300)

	fl.down.Store(true)
	values = values[:0]
	for id := uint64(301); id <= 600; id++ {
		values = append(values, claimJSON(c.claim(id, id)))
	}
	produce(t, addr, values...)
	deadline := time.Now().Add(20 * time.Second)
	for r.s.BreakerState() != BreakerOpen && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if r.s.BreakerState() != BreakerOpen || r.s.Ready() {
		t.Fatalf("breaker %v ready %v with the ledger down", r.s.BreakerState(), r.s.Ready())
	}
	// While open, calls are rare: at most one probe per cooldown.
	before := fl.calls.Load()
	time.Sleep(500 * time.Millisecond)
	if probes := fl.calls.Load() - before; probes > 4 {
		t.Fatalf("%d ledger calls in 500ms with the breaker open (cooldown 200ms)", probes)
	}
	if got := r.s.mPosted.Value(); got != 300 {
		t.Fatalf("posted %d while the ledger was down", got)
	}
	fl.down.Store(false)
	r.waitSeen(t, 600)
	if r.s.BreakerState() != BreakerClosed {
		t.Fatalf("breaker %v after recovery", r.s.BreakerState())
	}
	rep, err := Reconcile(context.Background(), c.manifest, c.dir, inner)
	if err != nil || !rep.OK || rep.SettledTickets != 600 {
		t.Fatalf("reconcile %+v %v", rep, err)
	}
}

// TestSettlerGroupSharesPartitions runs two settlers in one group: together they post
// every claim exactly once.
func TestSettlerGroupSharesPartitions(t *testing.T) {
	t.Parallel()
	addr := startBroker(t)
	dir := t.TempDir()
	c := makeCampaign(t, dir, "grp", []uint64{1200}, time.Now().Add(time.Hour))
	url := "sqlite://" + filepath.Join(dir, "ledger.db")
	var ls []ledger.Ledger
	for i := 0; i < 2; i++ {
		l, err := ledger.Open(context.Background(), url)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		ls = append(ls, l)
	}
	var values [][]byte
	for id := uint64(1); id <= 1200; id++ {
		values = append(values, claimJSON(c.claim(id, id)))
	}
	r1 := startSettler(t, addr, c, ls[0], nil)
	r2 := startSettler(t, addr, c, ls[1], nil)
	produce(t, addr, values...)
	deadline := time.Now().Add(60 * time.Second)
	for r1.s.mPosted.Value()+r2.s.mPosted.Value() < 1200 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	rep, err := Reconcile(context.Background(), c.manifest, c.dir, ls[0])
	if err != nil || !rep.OK || rep.SettledTickets != 1200 {
		t.Fatalf("reconcile %+v %v (posted %d + %d)", rep, err, r1.s.mPosted.Value(), r2.s.mPosted.Value())
	}
	t.Logf("posted by settler 1: %d, settler 2: %d", r1.s.mPosted.Value(), r2.s.mPosted.Value())
}

func TestNewRejectsUnboundedBatch(t *testing.T) {
	c := makeCampaign(t, t.TempDir(), "nb", []uint64{1}, time.Now().Add(time.Hour))
	v := c.validator(t, nil)
	for _, b := range []int{-1, MaxBatch + 1} {
		if _, err := New(Config{Brokers: []string{"x:1"}, Manifest: c.manifest, Validator: v, Ledger: &flakyLedger{}, Batch: b}); err == nil {
			t.Fatalf("batch %d accepted", b)
		}
	}
	if _, err := New(Config{Brokers: []string{"x:1"}, Manifest: c.manifest, Validator: v, Ledger: &flakyLedger{}, Batch: MaxBatch}); err != nil {
		t.Fatal(err)
	}
}
