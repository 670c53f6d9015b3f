package kafka

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"syscall"
	"time"

	"github.com/segmentio/kafka-go"
)

// ClaimsTopic is the default name of the claims topic, named here once for every role,
// command and the embedded broker.
const ClaimsTopic = "shake.claims"

// DLQSuffix names a claims topic's dead-letter topic: DLQTopic(topic).
const DLQSuffix = ".dlq"

// DLQTopic is the dead-letter topic of the claims topic topic.
func DLQTopic(topic string) string { return topic + DLQSuffix }

// MinInsyncConfig is the topic configuration that says how many replicas must have a
// write before an acks=all producer hears "acknowledged".
const MinInsyncConfig = "min.insync.replicas"

// The topic configurations that delete records: by age and by partition size.
const (
	RetentionMsConfig    = "retention.ms"
	RetentionBytesConfig = "retention.bytes"
)

// RetentionMargin is how long after a campaign's tickets expire its claims must still be
// in the topic: the settler's time to settle the last of them (and a restarted
// verifier's to rebuild from them).
const RetentionMargin = 24 * time.Hour

// Errors of the topic checks: callers branch on them.
var (
	// ErrRefused: the topic exists (or not) in a shape that cannot hold acknowledged
	// money; the process must not start. The message names the topic and the flag.
	ErrRefused = errors.New("topic refused")
	// ErrUnreachable: no broker answered at all, so nothing is known about the topic.
	ErrUnreachable = errors.New("no Kafka broker reachable")
	// ErrAccess: a broker answered but refused this client (TLS, SASL, ACL), or the
	// client cannot speak to it: a configuration error, never transient.
	ErrAccess = errors.New("Kafka refused the connection")
)

// Partition is one partition as the brokers report it.
type Partition struct {
	ID       int   `json:"partition"`
	Leader   int   `json:"leader"` // node id, -1 when the partition has no leader
	Replicas []int `json:"replicas"`
	ISR      []int `json:"isr"`
}

// TopicInfo is what the brokers report about one topic.
type TopicInfo struct {
	Name   string `json:"topic"`
	Exists bool   `json:"exists"`
	// Replication is the smallest replica count over the partitions.
	Replication int `json:"replication"`
	// MinInsync is the topic's min.insync.replicas (0 if the brokers did not say).
	MinInsync int `json:"min_insync_replicas"`
	// RetentionMs and RetentionBytes are the topic's retention.ms and retention.bytes
	// (-1: never deleted); RetentionReported is false when the brokers did not say.
	RetentionMs       int64 `json:"retention_ms"`
	RetentionBytes    int64 `json:"retention_bytes"`
	RetentionReported bool  `json:"-"`
	// UnderReplicated counts partitions whose in-sync set is smaller than their
	// replica set; Offline those without a leader.
	UnderReplicated int         `json:"under_replicated"`
	Offline         int         `json:"offline"`
	Partitions      []Partition `json:"partitions"`
}

// Admin asks brokers about topics (and creates them, for shake topics) over one
// Security, and explains its failures in terms of the flags.
type Admin struct {
	sec *Security
	c   *kafka.Client
}

// NewAdmin returns an Admin for brokers; each request is bounded by timeout.
func NewAdmin(sec *Security, brokers []string, timeout time.Duration) *Admin {
	return &Admin{sec: sec, c: sec.Client(brokers, timeout)}
}

// Classify is Security.Classify for the Admin's security.
func (a *Admin) Classify(err error) error { return a.sec.Classify(err) }

// Client returns the underlying kafka-go client.
func (a *Admin) Client() *kafka.Client { return a.c }

// Describe asks the brokers about each topic: partitions, leaders, replicas, in-sync
// replicas and min.insync.replicas. A topic that does not exist comes back with Exists
// false; only a failure to ask is an error (classified: ErrUnreachable or ErrAccess).
func (a *Admin) Describe(ctx context.Context, topics ...string) ([]TopicInfo, error) {
	c := a.c
	meta, err := c.Metadata(ctx, &kafka.MetadataRequest{Topics: topics})
	if err != nil {
		return nil, a.sec.Classify(err)
	}
	out := make([]TopicInfo, len(topics))
	var found []string
	for i, name := range topics {
		out[i].Name = name
		for _, t := range meta.Topics {
			if t.Name != name {
				continue
			}
			if t.Error != nil {
				if errors.Is(t.Error, kafka.UnknownTopicOrPartition) {
					break
				}
				return nil, a.sec.Classify(fmt.Errorf("topic %s: %w", name, t.Error))
			}
			out[i].Exists = len(t.Partitions) > 0
			out[i].Replication = -1
			for _, p := range t.Partitions {
				pi := Partition{ID: p.ID, Leader: -1}
				// kafka-go maps an unknown leader id to a zero Broker: no host.
				if p.Leader.Host != "" {
					pi.Leader = p.Leader.ID
				}
				for _, r := range p.Replicas {
					pi.Replicas = append(pi.Replicas, r.ID)
				}
				for _, r := range p.Isr {
					pi.ISR = append(pi.ISR, r.ID)
				}
				if out[i].Replication < 0 || len(pi.Replicas) < out[i].Replication {
					out[i].Replication = len(pi.Replicas)
				}
				if len(pi.ISR) < len(pi.Replicas) {
					out[i].UnderReplicated++
				}
				if pi.Leader < 0 {
					out[i].Offline++
				}
				out[i].Partitions = append(out[i].Partitions, pi)
			}
			slices.SortFunc(out[i].Partitions, func(a, b Partition) int { return a.ID - b.ID })
			if out[i].Exists {
				found = append(found, name)
			} else {
				out[i].Replication = 0
			}
		}
	}
	if len(found) == 0 {
		return out, nil
	}
	req := &kafka.DescribeConfigsRequest{}
	for _, name := range found {
		req.Resources = append(req.Resources, kafka.DescribeConfigRequestResource{
			ResourceType: kafka.ResourceTypeTopic, ResourceName: name, ConfigNames: []string{MinInsyncConfig, RetentionMsConfig, RetentionBytesConfig}})
	}
	res, err := c.DescribeConfigs(ctx, req)
	if err != nil {
		return nil, a.sec.Classify(fmt.Errorf("describe configs: %w", err))
	}
	for _, r := range res.Resources {
		if r.Error != nil {
			return nil, a.sec.Classify(fmt.Errorf("describe configs of %s: %w", r.ResourceName, r.Error))
		}
		for i := range out {
			if out[i].Name != r.ResourceName {
				continue
			}
			out[i].setConfigs(r.ConfigEntries)
		}
	}
	return out, nil
}

// setConfigs records the configurations the brokers reported. Retention counts as
// reported only when both values are there and are numbers.
func (t *TopicInfo) setConfigs(entries []kafka.DescribeConfigResponseConfigEntry) {
	var ms, bytes bool
	for _, e := range entries {
		var err error
		switch e.ConfigName {
		case MinInsyncConfig:
			t.MinInsync, _ = strconv.Atoi(e.ConfigValue)
		case RetentionMsConfig:
			t.RetentionMs, err = strconv.ParseInt(e.ConfigValue, 10, 64)
			ms = err == nil
		case RetentionBytesConfig:
			t.RetentionBytes, err = strconv.ParseInt(e.ConfigValue, 10, 64)
			bytes = err == nil
		}
	}
	t.RetentionReported = ms && bytes
}

// Policy is what a claims topic must offer the verifier and the settler.
type Policy struct {
	// MinReplication is --min-replication.
	MinReplication int
	// KeepUntil is the earliest time a claim written now may be deleted: the campaign's
	// expires_at plus RetentionMargin. Zero asks for records kept for ever
	// (retention.ms=-1), what shake topics create sets.
	KeepUntil time.Time
}

// PolicyFor is the policy of a campaign whose tickets expire at expiresAt.
func PolicyFor(minReplication int, expiresAt time.Time) Policy {
	p := Policy{MinReplication: minReplication}
	if !expiresAt.IsZero() {
		p.KeepUntil = expiresAt.Add(RetentionMargin)
	}
	return p
}

// CheckPolicy applies Check and CheckRetention.
func (t *TopicInfo) CheckPolicy(p Policy, now time.Time) error {
	if err := t.Check(p.MinReplication); err != nil {
		return err
	}
	return t.CheckRetention(p.KeepUntil, now)
}

// CheckRetention refuses a topic whose retention could delete a claim written at now
// before keepUntil (zero: ever): retention.bytes other than -1 (a partition that grows
// past it loses its oldest claims), or retention.ms other than -1 and shorter than
// keepUntil - now. A restarted verifier rebuilds the per-user rule from the whole topic,
// and the settler pays only what it reads there. Retention the brokers do not report is
// refused too: what is not seen is not passed.
func (t *TopicInfo) CheckRetention(keepUntil, now time.Time) error {
	fix := fmt.Sprintf("set it to -1 (kafka-configs --alter --entity-type topics --entity-name %s --add-config retention.ms=-1,retention.bytes=-1; shake topics create sets it)", t.Name)
	switch {
	case !t.Exists:
		return nil // Check refuses it
	case !t.RetentionReported:
		return refusal(RetentionMsConfig, "topic %q: the brokers did not report retention.ms and retention.bytes, so nothing says its claims are kept", t.Name)
	case t.RetentionBytes >= 0:
		return refusal(RetentionBytesConfig, "topic %q has retention.bytes %d: a partition past that size loses its oldest claims; %s", t.Name, t.RetentionBytes, fix)
	case t.RetentionMs < 0:
		return nil
	case keepUntil.IsZero():
		return refusal(RetentionMsConfig, "topic %q has retention.ms %d (%v): its claims are deleted after that; %s",
			t.Name, t.RetentionMs, time.Duration(t.RetentionMs)*time.Millisecond, fix)
	case now.Add(time.Duration(t.RetentionMs) * time.Millisecond).Before(keepUntil):
		return refusal(RetentionMsConfig, "topic %q has retention.ms %d (%v): a claim written now is deleted before %s (the tickets' expires_at plus %v for settlement); %s",
			t.Name, t.RetentionMs, time.Duration(t.RetentionMs)*time.Millisecond, keepUntil.UTC().Format(time.RFC3339), RetentionMargin, fix)
	}
	return nil
}

// Refusal is an ErrRefused naming the flag or topic configuration that changes the
// verdict: --topic, --min-replication, min.insync.replicas, retention.ms or
// retention.bytes.
type Refusal struct {
	Flag string
	msg  string
}

func (r *Refusal) Error() string        { return ErrRefused.Error() + ": " + r.msg }
func (r *Refusal) Is(target error) bool { return target == ErrRefused }

func refusal(flag, format string, args ...any) error {
	return &Refusal{Flag: flag, msg: fmt.Sprintf(format, args...)}
}

// RefusedFlag returns the flag or configuration a refusal names ("" for another error).
func RefusedFlag(err error) string {
	var r *Refusal
	if errors.As(err, &r) {
		return r.Flag
	}
	return ""
}

// Check applies the start-up policy to a described topic: it must exist, have at least
// minReplication replicas, and, when it has more than one, min.insync.replicas of at
// least 2 (and no more than its replicas, or every acks=all write would fail). The error
// wraps ErrRefused and names the topic and the flag that changes the verdict.
func (t *TopicInfo) Check(minReplication int) error {
	switch {
	case !t.Exists:
		return refusal("--topic", "topic %q does not exist; create it with 'shake topics create --topic %s' (or name the right one with --topic)",
			t.Name, claimsTopic(t.Name))
	case t.Replication < minReplication:
		return refusal("--min-replication", "topic %q has replication factor %d, below --min-replication %d (a one-broker setup passes --min-replication 1)",
			t.Name, t.Replication, minReplication)
	case t.Replication > 1 && t.MinInsync < 2:
		return refusal(MinInsyncConfig, "topic %q has %d replicas but min.insync.replicas %d, so an acknowledged claim may live on one broker; set it to 2 or more ('shake topics create --min-insync 2', or kafka-configs)",
			t.Name, t.Replication, t.MinInsync)
	case t.MinInsync > t.Replication:
		return refusal(MinInsyncConfig, "topic %q has min.insync.replicas %d above its replication factor %d, so every acknowledged write would fail; lower it (shake topics create --min-insync)",
			t.Name, t.MinInsync, t.Replication)
	}
	return nil
}

// claimsTopic returns the claims topic a (possibly dead-letter) topic belongs to.
func claimsTopic(name string) string {
	if len(name) > len(DLQSuffix) && name[len(name)-len(DLQSuffix):] == DLQSuffix {
		return name[:len(name)-len(DLQSuffix)]
	}
	return name
}

// CheckClaimsTopic describes topic and topic.dlq and applies CheckPolicy to both. It returns
// the descriptions and the first refusal; a failure to ask is classified (ErrUnreachable,
// ErrAccess) so that the caller can tell "Kafka is down" from "Kafka said no".
func (a *Admin) CheckClaimsTopic(ctx context.Context, topic string, p Policy) ([]TopicInfo, error) {
	infos, err := a.Describe(ctx, topic, DLQTopic(topic))
	if err != nil {
		return nil, err
	}
	now := time.Now()
	for i := range infos {
		if err := infos[i].CheckPolicy(p, now); err != nil {
			return infos, err
		}
	}
	return infos, nil
}

// Classify wraps err in ErrUnreachable when no broker could be reached (refused, timed
// out dialling) and in ErrAccess when one was reached and refused this client, with a
// hint naming the flag to look at (which depends on what s configures).
func (s *Security) Classify(err error) error {
	if err == nil || errors.Is(err, ErrUnreachable) || errors.Is(err, ErrAccess) {
		return err
	}
	var (
		unknownCA x509.UnknownAuthorityError
		hostname  x509.HostnameError
		invalid   x509.CertificateInvalidError
		verify    *tls.CertificateVerificationError
		recHdr    tls.RecordHeaderError
		kerr      kafka.Error
		opErr     *net.OpError
	)
	switch {
	case errors.As(err, &unknownCA), errors.As(err, &hostname), errors.As(err, &invalid), errors.As(err, &verify):
		return fmt.Errorf("%w: the broker's certificate does not verify (check --kafka-tls-ca): %v", ErrAccess, err)
	case errors.As(err, &recHdr):
		return fmt.Errorf("%w: the broker does not speak TLS (drop --kafka-tls-ca/--kafka-tls-cert, or use its TLS port): %v", ErrAccess, err)
	case errors.As(err, &kerr) && (kerr == kafka.SASLAuthenticationFailed || kerr == kafka.UnsupportedSASLMechanism ||
		kerr == kafka.IllegalSASLState):
		return fmt.Errorf("%w: SASL authentication failed (check --kafka-sasl, --kafka-user and --kafka-password-file): %v", ErrAccess, err)
	case errors.As(err, &kerr) && (kerr == kafka.TopicAuthorizationFailed || kerr == kafka.ClusterAuthorizationFailed ||
		kerr == kafka.GroupAuthorizationFailed):
		return fmt.Errorf("%w: not authorized (check the ACLs of --kafka-user): %v", ErrAccess, err)
	case errors.As(err, &opErr) && opErr.Op == "dial",
		errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("%w: %v", ErrUnreachable, err)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		// The broker accepted the connection and hung up without an answer: what a TLS
		// listener does to a plain-text client, a SASL listener to a client without
		// SASL, and some brokers (kfake among them) to a wrong password.
		return fmt.Errorf("%w: the broker closed the connection without answering (%s): %v", ErrAccess, s.hangupHint(), err)
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return fmt.Errorf("%w: %v", ErrUnreachable, err)
	}
	return fmt.Errorf("%w: %v", ErrAccess, err)
}

// WaitTopic retries CheckClaimsTopic while no broker is reachable, up to wait, so that
// a process started together with its brokers does not race them. It returns what the
// last attempt returned.
func (a *Admin) WaitTopic(ctx context.Context, topic string, p Policy, wait time.Duration) ([]TopicInfo, error) {
	deadline := time.Now().Add(wait)
	for {
		actx, cancel := context.WithTimeout(ctx, max(time.Second, min(5*time.Second, time.Until(deadline))))
		infos, err := a.CheckClaimsTopic(actx, topic, p)
		cancel()
		if !errors.Is(err, ErrUnreachable) || time.Now().After(deadline) || ctx.Err() != nil {
			return infos, err
		}
		select {
		case <-ctx.Done():
			return infos, err
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// hangupHint guesses why a broker hung up on s, from what s configures.
func (s *Security) hangupHint() string {
	switch {
	case s != nil && s.SASL != nil:
		return "SASL authentication failed? check --kafka-user and --kafka-password-file, and --kafka-sasl against the broker's mechanisms"
	case s != nil && s.TLS != nil:
		return "does it want SASL (--kafka-sasl) or a client certificate (--kafka-tls-cert)?"
	default:
		return "does it want TLS (--kafka-tls-ca) or SASL (--kafka-sasl)?"
	}
}

// ValidTopic applies Kafka's rule for topic names, leaving room for DLQSuffix: 1..245
// characters of [a-zA-Z0-9._-], and neither "." nor "..".
func ValidTopic(t string) bool {
	if t == "" || t == "." || t == ".." || len(t)+len(DLQSuffix) > 249 {
		return false
	}
	for i := 0; i < len(t); i++ {
		c := t[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}
