package verifier

import (
	"context"
	"strings"
	"time"

	ikafka "shake/internal/kafka"
	"shake/internal/obs"
)

// Why a verifier is not ready, as /readyz and shake_verifier_not_ready{reason} say.
// The topic gate adds its own (ikafka.Gate*: topic_unchecked, kafka_unreachable,
// kafka_refused, topic_refused:<flag>).
const (
	// NotReadyRebuilding: the per-user counts and opened tickets are being read back
	// from the claims topic and the spool.
	NotReadyRebuilding = "rebuilding"
	// NotReadyKafkaAtRebuild: the rebuild cannot read the claims topic (Kafka down at
	// start): answering before it would break the per-user rule after a restart.
	NotReadyKafkaAtRebuild = "kafka_unreachable_at_rebuild"
	// NotReadyNotDurable: Kafka is failing and the spool is full or failing: no claim
	// can be made durable anywhere.
	NotReadyNotDurable = "not_durable"
)

// notReadyLabels are the values of shake_verifier_not_ready's reason label (a refused
// topic is "topic_refused"; the flag is in shake_topic_refused{flag}).
var notReadyLabels = []string{NotReadyRebuilding, NotReadyKafkaAtRebuild, ikafka.GateUnchecked, ikafka.GateUnreachable,
	ikafka.GateAccess, "topic_refused", NotReadyNotDurable}

// topicGate is the verifier's topic gate: nil without a TopicPolicy.
type topicGate struct {
	gate     *ikafka.Gate
	stopGate func()
}

// notReady returns "" when the verifier can do its job now, else why not.
func (s *Server) notReady() string {
	switch {
	case !s.rb.done.Load() && s.rb.failing.Load():
		return NotReadyKafkaAtRebuild
	case !s.rb.done.Load():
		return NotReadyRebuilding
	case s.gate != nil && !s.gate.Open():
		return s.gate.Reason()
	case !s.dur.writable():
		return NotReadyNotDurable
	}
	return ""
}

// ready is /readyz's boolean form.
func (s *Server) ready() bool { return s.notReady() == "" }

// newGate builds the topic gate when cfg.TopicPolicy is set: until the claims topic
// passed the policy, claims go to the spool (never to Kafka) and the spool is not
// replayed there. It also exports the not-ready reasons.
func (s *Server) newGate(reg *obs.Registry) {
	for _, r := range notReadyLabels {
		reg.GaugeFunc("shake_verifier_not_ready", "1 for the reason the verifier is not ready (0 for the others; all 0 when ready).", func() float64 {
			why := s.notReady()
			if strings.HasPrefix(why, ikafka.GateRefusedPrefix) {
				why = "topic_refused"
			}
			if why == r {
				return 1
			}
			return 0
		}, "reason", r)
	}
	if s.cfg.TopicPolicy == nil {
		return
	}
	s.gate = ikafka.NewGate(ikafka.GateConfig{Admin: ikafka.NewAdmin(s.cfg.Kafka, s.cfg.Brokers, 5*time.Second),
		Topic: s.cfg.Topic, Policy: *s.cfg.TopicPolicy, Logger: s.log, Registry: reg})
}

// startGate runs the gate's checks in the background until they pass or Close.
func (s *Server) startGate() {
	if s.gate == nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	s.stopGate = func() { cancel(); <-done }
	go func() {
		defer close(done)
		s.gate.Run(ctx)
	}()
}

// stopBackground stops what New started besides the servers: the rebuild and the topic
// gate's checks, and waits for them.
func (s *Server) stopBackground() {
	s.stopRebuild()
	if s.stopGate != nil {
		s.stopGate()
	}
}

// topicOpen is the durable writers' view of the gate: true when there is none.
func (s *Server) topicOpen() bool { return s.gate == nil || s.gate.Open() }
