package kafka_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"shake/broker"
	ikafka "shake/internal/kafka"
	"shake/internal/testtls"
)

func start(t *testing.T, cfg broker.Config) *broker.Broker {
	t.Helper()
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	if cfg.Partitions == 0 {
		cfg.Partitions = 2
	}
	b, err := broker.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	return b
}

func load(t *testing.T, o ikafka.Options) *ikafka.Security {
	t.Helper()
	o.Getenv = func(string) string { return "" }
	s, err := o.Load()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func passwordFile(t *testing.T, pass string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "password")
	if err := os.WriteFile(p, []byte(pass+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// roundTrip produces n messages with sec and reads them back as a consumer group.
func roundTrip(t *testing.T, b *broker.Broker, sec *ikafka.Security, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	w := &kafka.Writer{Addr: kafka.TCP(b.Addrs()...), Topic: broker.DefaultTopic, Balancer: &kafka.Hash{},
		RequiredAcks: kafka.RequireAll, BatchTimeout: 5 * time.Millisecond,
		Transport: sec.Secure(&kafka.Transport{DialTimeout: 5 * time.Second})}
	defer w.Close()
	var msgs []kafka.Message
	for i := 0; i < n; i++ {
		msgs = append(msgs, kafka.Message{Key: fmt.Appendf(nil, "%d", i), Value: fmt.Appendf(nil, "v%d", i)})
	}
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		t.Fatalf("produce (%s): %v", sec, err)
	}
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: b.Addrs(), Topic: broker.DefaultTopic, GroupID: "rt-" + t.Name(),
		StartOffset: kafka.FirstOffset, MaxWait: 100 * time.Millisecond, Dialer: sec.Dialer(5 * time.Second)})
	defer r.Close()
	seen := map[string]bool{}
	for len(seen) < n {
		m, err := r.FetchMessage(ctx)
		if err != nil {
			t.Fatalf("consume (%s) after %d: %v", sec, len(seen), err)
		}
		seen[string(m.Value)] = true
	}
}

// describe runs the start-up check with sec and returns its error.
func describe(sec *ikafka.Security, b *broker.Broker, minRepl int) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := ikafka.NewAdmin(sec, b.Addrs(), 5*time.Second).CheckClaimsTopic(ctx, broker.DefaultTopic, ikafka.Policy{MinReplication: minRepl})
	return err
}

func TestTLS(t *testing.T) {
	pki := testtls.New(t)
	b := start(t, broker.Config{Security: broker.Security{TLSCert: pki.ServerCert, TLSKey: pki.ServerKey}})
	good := load(t, ikafka.Options{TLSCA: pki.CA})
	roundTrip(t, b, good, 20)
	if err := describe(good, b, 1); err != nil {
		t.Fatalf("check over TLS: %v", err)
	}
	for _, c := range []struct {
		name string
		sec  *ikafka.Security
		want string
	}{
		{"wrong CA", load(t, ikafka.Options{TLSCA: pki.OtherCA}), "--kafka-tls-ca"},
		{"plain text to a TLS listener", nil, "TLS"},
	} {
		err := describe(c.sec, b, 1)
		if !errors.Is(err, ikafka.ErrAccess) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want ErrAccess naming %s", c.name, err, c.want)
		}
	}
}

func TestMutualTLS(t *testing.T) {
	pki := testtls.New(t)
	b := start(t, broker.Config{Security: broker.Security{TLSCert: pki.ServerCert, TLSKey: pki.ServerKey, TLSClientCA: pki.CA}})
	roundTrip(t, b, load(t, ikafka.Options{TLSCA: pki.CA, TLSCert: pki.ClientCert, TLSKey: pki.ClientKey}), 5)
	if err := describe(load(t, ikafka.Options{TLSCA: pki.CA}), b, 1); !errors.Is(err, ikafka.ErrAccess) {
		t.Fatalf("no client certificate: got %v, want ErrAccess", err)
	}
}

func TestSASL(t *testing.T) {
	b := start(t, broker.Config{Security: broker.Security{Users: []broker.User{{Name: "shake", Password: "s3cret:x"}}}})
	for _, mech := range []string{ikafka.SASLScram256, ikafka.SASLScram512, ikafka.SASLPlain} {
		t.Run(mech, func(t *testing.T) {
			sec := load(t, ikafka.Options{SASL: mech, User: "shake", PasswordFile: passwordFile(t, "s3cret:x")})
			roundTrip(t, b, sec, 10)
			bad := load(t, ikafka.Options{SASL: mech, User: "shake", PasswordFile: passwordFile(t, "wrong")})
			err := describe(bad, b, 1)
			if !errors.Is(err, ikafka.ErrAccess) || !strings.Contains(err.Error(), "--kafka-password-file") {
				t.Fatalf("wrong password: got %v, want ErrAccess naming --kafka-password-file", err)
			}
		})
	}
	if err := describe(nil, b, 1); !errors.Is(err, ikafka.ErrAccess) {
		t.Fatalf("no SASL against a SASL broker: got %v, want ErrAccess", err)
	}
}

func TestSASLOverTLS(t *testing.T) {
	pki := testtls.New(t)
	b := start(t, broker.Config{Security: broker.Security{TLSCert: pki.ServerCert, TLSKey: pki.ServerKey,
		Users: []broker.User{{Name: "u", Password: "p"}}}})
	sec := load(t, ikafka.Options{TLSCA: pki.CA, SASL: ikafka.SASLScram256, User: "u", PasswordFile: passwordFile(t, "p")})
	if sec.String() != "sasl_ssl/scram-sha-256" {
		t.Fatalf("String() = %q", sec)
	}
	roundTrip(t, b, sec, 10)
}

func TestUnreachable(t *testing.T) {
	b := start(t, broker.Config{})
	addr := b.Addr()
	b.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := ikafka.NewAdmin(nil, []string{addr}, 2*time.Second).CheckClaimsTopic(ctx, broker.DefaultTopic, ikafka.Policy{MinReplication: 1})
	if !errors.Is(err, ikafka.ErrUnreachable) {
		t.Fatalf("closed broker: got %v, want ErrUnreachable", err)
	}
}

func TestTopicPolicyLive(t *testing.T) {
	one := start(t, broker.Config{})
	if err := describe(nil, one, 1); err != nil {
		t.Fatalf("one broker with --min-replication 1: %v", err)
	}
	err := describe(nil, one, ikafka.DefaultMinReplication)
	if !errors.Is(err, ikafka.ErrRefused) || !strings.Contains(err.Error(), "--min-replication") ||
		!strings.Contains(err.Error(), `"shake.claims"`) {
		t.Fatalf("one broker, default --min-replication: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = ikafka.NewAdmin(nil, one.Addrs(), 5*time.Second).CheckClaimsTopic(ctx, "no.such.topic", ikafka.Policy{MinReplication: 1})
	if !errors.Is(err, ikafka.ErrRefused) || !strings.Contains(err.Error(), `"no.such.topic"`) || !strings.Contains(err.Error(), "--topic") {
		t.Fatalf("missing topic: %v", err)
	}
	// The check must not have created it (kafka-go's old metadata requests would).
	infos, err := ikafka.NewAdmin(nil, one.Addrs(), 5*time.Second).Describe(ctx, "no.such.topic")
	if err != nil || infos[0].Exists {
		t.Fatalf("the check created the topic it looked for: %+v %v", infos, err)
	}

	three := start(t, broker.Config{Nodes: 3, Partitions: 6})
	infos, err = ikafka.NewAdmin(nil, three.Addrs(), 5*time.Second).CheckClaimsTopic(ctx, broker.DefaultTopic, ikafka.Policy{MinReplication: 3})
	if err != nil {
		t.Fatalf("3 nodes: %v", err)
	}
	ti := infos[0]
	if ti.Replication != 3 || ti.MinInsync != 2 || len(ti.Partitions) != 6 {
		t.Fatalf("3 nodes: %+v", ti)
	}
	leaders := map[int]bool{}
	for _, p := range ti.Partitions {
		leaders[p.Leader] = true
	}
	if err := three.MoveLeaders(broker.DefaultTopic, 6, nil); err != nil {
		t.Fatal(err)
	}
	for _, p := range ti.Partitions {
		if got := three.Leader(broker.DefaultTopic, p.ID); got != (p.Leader+1)%3 {
			t.Fatalf("partition %d: leader %d after the move from %d", p.ID, got, p.Leader)
		}
	}
}
