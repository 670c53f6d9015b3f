package settler

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
)

// TestGroupLagAndStallWatch: the group's committed lag is asked of the broker (claims
// nobody has committed), and a settler that settles nothing while claims wait, with its
// ledger healthy, is told to recreate its reader.
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
	stalled := make(chan struct{}, 1)
	go s.watchStall(ctx, stalled)
	select {
	case <-stalled:
	case <-ctx.Done():
		t.Fatal("no stall reported while 10 claims waited and nothing was settled")
	}
	if g := s.mGroupLag.Value(); g != 10 {
		t.Fatalf("shake_settler_group_lag = %d, want 10", g)
	}
	if !s.stalled.Load() {
		t.Fatal("a stalled settler must not report ready")
	}
}
