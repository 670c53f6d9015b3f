package settler

import (
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/segmentio/kafka-go"

	ikafka "shake/internal/kafka"
)

// kafkaLookEvery bounds how often the watchdog asks the brokers where the group stands,
// and so how long after Kafka's return the settler says ready.
const kafkaLookEvery = time.Second

// initKafkaReady gives the settler's group member a client id of its own (so that the
// watchdog can find it among the group's members), builds the topic gate when a policy
// is configured, and registers the watchdog's metrics.
func (s *Settler) initKafkaReady() {
	r := s.reg
	s.mGroupLag = r.Gauge("shake_settler_group_lag", "Claims in the topic the group has not committed, over all partitions (asked of the broker).")
	s.mStalled = r.Gauge("shake_settler_stalled_partitions", "Partitions whose committed offset has stood still for --stall-timeout while claims wait on them.")
	var b [6]byte
	rand.Read(b[:])
	host, _ := os.Hostname()
	s.clientID = fmt.Sprintf("shake-settler-%s-%d-%x", host, os.Getpid(), b)
	if s.cfg.TopicPolicy != nil {
		s.gate = ikafka.NewGate(ikafka.GateConfig{Admin: ikafka.NewAdmin(s.cfg.Kafka, s.cfg.Brokers, 5*time.Second),
			Topic: s.cfg.Topic, Policy: *s.cfg.TopicPolicy, Logger: s.log, Registry: s.reg})
	}
	s.reg.GaugeFunc("shake_settler_kafka_up", "1 while the settler reaches the claims topic and is a member of its consumer group.", func() float64 {
		if s.kafkaOK.Load() {
			return 1
		}
		return 0
	})
}

// dialer is the group reader's dialer: the Kafka security and this settler's client id.
func (s *Settler) dialer() *kafka.Dialer {
	d := s.cfg.Kafka.Dialer(10 * time.Second)
	d.ClientID = s.clientID
	return d
}

// lookAtGroup records whether the settler can do its job: offErr is the watchdog's
// look at the claims topic's offsets (nil: the topic answered), and the group must list
// this settler's member. Changes are logged.
func (s *Settler) lookAtGroup(ctx context.Context, c *kafka.Client, offErr error) {
	ok, err := false, offErr
	if err == nil {
		ok, err = s.isMember(ctx, c)
	}
	if ok == s.kafkaOK.Swap(ok) || ctx.Err() != nil {
		return
	}
	if ok {
		s.log.Info("consuming: the claims topic is reachable and this settler is a member of its group", "topic", s.cfg.Topic, "group", s.cfg.Group)
		return
	}
	if err == nil {
		err = fmt.Errorf("not (or no longer) a member of group %s", s.cfg.Group)
	}
	s.log.Warn("not consuming: Kafka unreachable or the group not joined", "topic", s.cfg.Topic, "group", s.cfg.Group, "err", err)
}

// isMember reports whether the group lists a member with this settler's client id.
func (s *Settler) isMember(ctx context.Context, c *kafka.Client) (bool, error) {
	resp, err := c.DescribeGroups(ctx, &kafka.DescribeGroupsRequest{GroupIDs: []string{s.cfg.Group}})
	if err != nil {
		return false, err
	}
	for _, g := range resp.Groups {
		if g.Error != nil {
			return false, g.Error
		}
		for _, m := range g.Members {
			if m.ClientID == s.clientID {
				return true, nil
			}
		}
	}
	return false, nil
}

// newReader returns the consumer-group reader.
func (s *Settler) newReader() *kafka.Reader {
	return kafka.NewReader(kafka.ReaderConfig{
		Brokers:           s.cfg.Brokers,
		GroupID:           s.cfg.Group,
		Topic:             s.cfg.Topic,
		MinBytes:          1,
		MaxBytes:          16 << 20,
		MaxWait:           250 * time.Millisecond,
		QueueCapacity:     max(100, min(s.cfg.Batch, 10000)),
		CommitInterval:    0, // synchronous: CommitMessages returns once the broker has the offsets
		StartOffset:       kafka.FirstOffset,
		HeartbeatInterval: s.cfg.SessionTimeout / 5,
		SessionTimeout:    s.cfg.SessionTimeout,
		RebalanceTimeout:  s.cfg.SessionTimeout,
		ReadBackoffMin:    50 * time.Millisecond,
		ReadBackoffMax:    time.Second,
		JoinGroupBackoff:  time.Second, // kafka-go's 5 s would hold readiness that long after Kafka returns
		Dialer:            s.dialer(),
		ErrorLogger:       kafka.LoggerFunc(func(f string, a ...any) { s.log.Warn("kafka reader: " + fmt.Sprintf(f, a...)) }),
	})
}

// closeReader closes a group reader (it leaves the group), waiting at most 10 s: a
// reader whose broker connection is black-holed must not hold up its replacement.
func closeReader(rd *kafka.Reader, log *slog.Logger) {
	done := make(chan struct{})
	go func() {
		if err := rd.Close(); err != nil {
			log.Debug("closing the group reader", "err", err)
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		log.Warn("the old group reader did not close within 10s; leaving it behind")
	}
}

// fundAndGate registers and funds the campaign (once: a restart only checks them) and
// waits for the claims topic to pass its policy. ok is false when Run must return err
// (nil: stopped meanwhile, nothing consumed).
func (s *Settler) fundAndGate(ctx context.Context) (ok bool, err error) {
	m := s.cfg.Manifest
	// The campaign is registered (generation, manifest digest and the figures readers
	// of the ledger such as shake query show) before it is funded, and funded before
	// the first posting can debit it. Both are once: a restart only checks them.
	if err := s.retry(ctx, "fund", func(actx context.Context) error {
		if err := Register(actx, m, s.cfg.Ledger); err != nil {
			return err
		}
		// One budget account per shard, funded with the shard's amount: batches of
		// different shards (other settlers of the group) never wait for one budget row.
		return s.cfg.Ledger.FundShards(actx, m.Campaign, m.Currency, ShardAmounts(m))
	}); err != nil {
		if ctx.Err() != nil {
			return false, nil
		}
		return false, err
	}
	s.funded.Store(true)
	return s.gate == nil || s.gate.Run(ctx) == nil, nil
}
