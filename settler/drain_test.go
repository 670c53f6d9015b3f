package settler

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"shake/internal/testpg"
	"shake/settler/ledger"
)

// TestDrain measures a backlog's drain: SHAKE_TEST_DRAIN_CLAIMS claims (default
// 1,000,000) already waiting in the topic (four partitions), a group of two settlers
// started on them, each with its own ledger connection (PostgreSQL when
// SHAKE_TEST_POSTGRES is set, else one SQLite file). It reports the time to drain and
// the offset commits the broker received per claim, and fails when there were more
// commits than ledger batches (a commit belongs after a batch the ledger committed,
// never per claim) or when reconcile is not ok. It is a measurement, not a unit test:
// set SHAKE_TEST_DRAIN=1 to run it.
func TestDrain(t *testing.T) {
	if os.Getenv("SHAKE_TEST_DRAIN") == "" {
		t.Skip("measurement; set SHAKE_TEST_DRAIN=1 to run")
	}
	n := 1_000_000
	if v, err := strconv.Atoi(os.Getenv("SHAKE_TEST_DRAIN_CLAIMS")); err == nil && v >= 4 {
		n = v
	}
	addr, commits, committedPartitions := countingBroker(t)
	dir := t.TempDir()
	q := uint64(n / 4)
	c := makeCampaign(t, dir, "drain", []uint64{q, q, q, uint64(n) - 3*q}, time.Now().Add(time.Hour))
	start := time.Now()
	produceBacklog(t, addr, c, n)
	t.Logf("%d claims produced in %v", n, time.Since(start).Round(time.Millisecond))

	url := "sqlite://" + filepath.Join(dir, "ledger.db")
	if u := testpg.URL(t); u != "" {
		url = u
	}
	amounts, err := LoadAmounts(c.manifest, c.dir)
	if err != nil {
		t.Fatal(err)
	}
	var rs []*run
	var ls []ledger.Ledger
	commits.Store(0)
	committedPartitions.Store(0)
	start = time.Now()
	for range 2 {
		l, err := ledger.Open(context.Background(), url)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		ls = append(ls, l)
		rs = append(rs, startSettler(t, addr, c, l, func(cfg *Config) {
			cfg.Batch, cfg.Linger = 2000, 50*time.Millisecond
			cfg.Validator = c.validator(t, amounts)
		}))
	}
	deadline := time.Now().Add(time.Hour)
	posted := func() uint64 { return rs[0].s.mPosted.Value() + rs[1].s.mPosted.Value() }
	for posted() < uint64(n) && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	took := time.Since(start)
	time.Sleep(500 * time.Millisecond) // the last batch's commit follows its posting
	batches := rs[0].s.mBatches.Value() + rs[1].s.mBatches.Value()
	t.Logf("drained %d claims with 2 settlers in %v (%.0f postings/s; settler 1 posted %d, settler 2 %d), ledger %s",
		posted(), took.Round(time.Millisecond), float64(posted())/took.Seconds(), rs[0].s.mPosted.Value(), rs[1].s.mPosted.Value(), url[:6])
	t.Logf("%d ledger batches, %d offset commit requests (%d partition offsets): %.6f commits per claim, %.3f per batch",
		batches, commits.Load(), committedPartitions.Load(), float64(commits.Load())/float64(n), float64(commits.Load())/float64(batches))
	if posted() != uint64(n) {
		t.Fatalf("posted %d of %d within the deadline", posted(), n)
	}
	if commits.Load() > int64(batches) {
		t.Fatalf("%d offset commits for %d ledger batches: more than one commit per batch", commits.Load(), batches)
	}
	rep, err := Reconcile(context.Background(), c.manifest, c.dir, ls[0])
	if err != nil || !rep.OK || rep.SettledTickets != int64(n) {
		t.Fatalf("reconcile %+v %v", rep, err)
	}
}

// countingBroker starts an embedded broker with the claims topic (four partitions) that
// counts the offset commit requests it receives and the partition offsets in them.
func countingBroker(t *testing.T) (addr string, commits, partitions *atomic.Int64) {
	t.Helper()
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(4, topic, topic+".dlq"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cluster.Close)
	commits, partitions = new(atomic.Int64), new(atomic.Int64)
	cluster.ControlKey(int16(kmsg.OffsetCommit), func(req kmsg.Request) (kmsg.Response, error, bool) {
		cluster.KeepControl()
		commits.Add(1)
		for _, tp := range req.(*kmsg.OffsetCommitRequest).Topics {
			partitions.Add(int64(len(tp.Partitions)))
		}
		return nil, nil, false
	})
	return cluster.ListenAddrs()[0], commits, partitions
}

// produceBacklog writes the claims of tickets 1..n (ticket id as uid spread over
// 100,000 users) into the topic, 10,000 at a time.
func produceBacklog(t *testing.T, addr string, c *testCampaign, n int) {
	t.Helper()
	w := &kafka.Writer{Addr: kafka.TCP(addr), Topic: topic, Balancer: &kafka.Hash{}, RequiredAcks: kafka.RequireAll,
		BatchTimeout: time.Millisecond, BatchSize: 5000, BatchBytes: 16 << 20}
	defer w.Close()
	msgs := make([]kafka.Message, 0, 10_000)
	for id := uint64(1); id <= uint64(n); id++ {
		cl := c.claim(id, id*7919%100_000+1)
		msgs = append(msgs, kafka.Message{Key: cl.AppendKey(nil), Value: cl.AppendJSON(nil)})
		if len(msgs) == cap(msgs) || id == uint64(n) {
			if err := w.WriteMessages(context.Background(), msgs...); err != nil {
				t.Fatal(err)
			}
			msgs = msgs[:0]
		}
	}
}
