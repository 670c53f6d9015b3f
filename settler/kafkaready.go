package settler

import (
	"context"
	"crypto/rand"
	"fmt"
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
// is configured, and exports whether the settler reaches Kafka.
func (s *Settler) initKafkaReady() {
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
