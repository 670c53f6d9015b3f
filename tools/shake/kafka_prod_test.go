package main

// Tests of the Kafka rules of docs/cli.md through the real binary: real clients (kcat, that
// is librdkafka, and kafka-go inside the verifier and the settler) over TLS and SASL
// against `shake broker`, the start-up refusals, and the whole chain through a 3-node
// cluster whose partition leaders move every second.

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"shake/broker"
	"shake/internal/testtls"
)

// kcatPath returns kcat's path, skipping the test where it is not installed (CI
// installs it: .ci/run).
func kcatPath(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("kcat")
	if err != nil {
		t.Skip("kcat not installed (Debian package kcat); CI installs it")
	}
	return p
}

// kcat runs kcat with args (and stdin) and returns its output.
func kcat(t *testing.T, stdin string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, kcatPath(t), args...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// kcatRoundTrip produces three keyed messages with kcat and consumes them back.
func kcatRoundTrip(t *testing.T, addr string, conf ...string) {
	t.Helper()
	var x []string
	for _, c := range conf {
		x = append(x, "-X", c)
	}
	tag := fmt.Sprintf("%d", time.Now().UnixNano())
	in := fmt.Sprintf("a:%s-1\nb:%s-2\nc:%s-3\n", tag, tag, tag)
	if out, err := kcat(t, in, append([]string{"-b", addr, "-t", "kcat.test", "-P", "-K:"}, x...)...); err != nil {
		t.Fatalf("kcat produce %v: %v\n%s", conf, err, out)
	}
	out, err := kcat(t, "", append([]string{"-b", addr, "-t", "kcat.test", "-C", "-o", "beginning", "-e", "-f", "%k:%s\n"}, x...)...)
	if err != nil {
		t.Fatalf("kcat consume %v: %v\n%s", conf, err, out)
	}
	for _, want := range []string{"a:" + tag + "-1", "b:" + tag + "-2", "c:" + tag + "-3"} {
		if !strings.Contains(out, want) {
			t.Fatalf("kcat consume %v: %q missing from\n%s", conf, want, out)
		}
	}
}

// prodCampaign makes keys and a small campaign with the real generator.
func prodCampaign(t *testing.T) (dir, manifest string) {
	t.Helper()
	dir = t.TempDir()
	for _, args := range [][]string{{"keys", "init", "--out", dir},
		{"gen", "--campaign", "prod", "--key", filepath.Join(dir, "campaign.key"), "--budget", "10000", "--count", "100",
			"--edges", "1", "--out", filepath.Join(dir, "camp")}} {
		if code, _, stderr := runBinary(t, args...); code != 0 {
			t.Fatalf("shake %v: exit %d: %s", args, code, stderr)
		}
	}
	return dir, filepath.Join(dir, "camp", "manifest.json")
}

func verifierArgsFor(dir, manifest, brokers string, extra ...string) []string {
	return append([]string{"verifier", "--manifest", manifest, "--key", filepath.Join(dir, "campaign.key"),
		"--session-key", filepath.Join(dir, "session.key"), "--brokers", brokers, "--spool", filepath.Join(dir, "spool"),
		"--listen", "127.0.0.1:0"}, extra...)
}

func settlerArgsFor(dir, manifest, brokers string, extra ...string) []string {
	return append([]string{"settler", "--brokers", brokers, "--ledger", "sqlite://" + filepath.Join(dir, "ledger.db"),
		"--manifest", manifest, "--key", filepath.Join(dir, "campaign.key"), "--listen", "127.0.0.1:0"}, extra...)
}

// wantRefusal runs the binary and wants exit 2 with a last stderr line naming each of
// names.
func wantRefusal(t *testing.T, what string, args []string, names ...string) {
	t.Helper()
	code, _, stderr := runBinary(t, args...)
	lines := strings.Split(strings.TrimSpace(stderr), "\n")
	last := lines[len(lines)-1]
	if code != 2 {
		t.Fatalf("%s: exit %d, want 2; stderr:\n%s", what, code, stderr)
	}
	for _, n := range names {
		if !strings.Contains(last, n) {
			t.Fatalf("%s: the refusal does not name %s: %q", what, n, last)
		}
	}
}

// TestKafkaTLSAndSASL: kcat and the chain (verifier and settler, kafka-go) against
// `shake broker` over TLS and over SASL/SCRAM on TLS; a wrong password, a wrong CA,
// plain text against TLS, a missing topic and an under-replicated one are each refused
// at start with exit 2 and a line naming the flag.
func TestKafkaTLSAndSASL(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("whole-process test")
	}
	pki := testtls.New(t)
	dir, manifest := prodCampaign(t)
	pw := filepath.Join(dir, "kafka.password")
	verMust(t, os.WriteFile(pw, []byte("Very-Secret-1\n"), 0o600))
	wrongPW := filepath.Join(dir, "wrong.password")
	verMust(t, os.WriteFile(wrongPW, []byte("guess\n"), 0o600))

	tlsBroker := startVerProc(t, "broker", "--listen", "127.0.0.1:0", "--partitions", "4",
		"--tls-cert", pki.ServerCert, "--tls-key", pki.ServerKey)
	saslBroker := startVerProc(t, "broker", "--listen", "127.0.0.1:0", "--partitions", "4",
		"--tls-cert", pki.ServerCert, "--tls-key", pki.ServerKey, "--sasl-user", "shake:Very-Secret-1")

	t.Run("kcat", func(t *testing.T) {
		kcatRoundTrip(t, tlsBroker.addr, "security.protocol=ssl", "ssl.ca.location="+pki.CA)
		for _, mech := range []string{"SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"} {
			kcatRoundTrip(t, saslBroker.addr, "security.protocol=sasl_ssl", "ssl.ca.location="+pki.CA,
				"sasl.mechanisms="+mech, "sasl.username=shake", "sasl.password=Very-Secret-1")
		}
		if out, err := kcat(t, "", "-b", saslBroker.addr, "-L", "-m", "5", "-X", "security.protocol=sasl_ssl",
			"-X", "ssl.ca.location="+pki.CA, "-X", "sasl.mechanisms=SCRAM-SHA-256", "-X", "sasl.username=shake",
			"-X", "sasl.password=guess"); err == nil {
			t.Fatalf("kcat with a wrong password listed the cluster:\n%s", out)
		}
	})

	tlsFlags := []string{"--kafka-tls-ca", pki.CA, "--min-replication", "1"}
	saslFlags := []string{"--kafka-tls-ca", pki.CA, "--kafka-sasl", "scram-sha-256", "--kafka-user", "shake",
		"--kafka-password-file", pw, "--min-replication", "1"}

	t.Run("refusals", func(t *testing.T) {
		wantRefusal(t, "verifier, wrong password", verifierArgsFor(dir, manifest, saslBroker.addr,
			"--kafka-tls-ca", pki.CA, "--kafka-sasl", "scram-sha-256", "--kafka-user", "shake", "--kafka-password-file", wrongPW,
			"--min-replication", "1"), "--kafka-password-file")
		wantRefusal(t, "settler, wrong password", settlerArgsFor(dir, manifest, saslBroker.addr,
			"--kafka-tls-ca", pki.CA, "--kafka-sasl", "scram-sha-512", "--kafka-user", "shake", "--kafka-password-file", wrongPW,
			"--min-replication", "1"), "--kafka-password-file")
		wantRefusal(t, "verifier, wrong CA", verifierArgsFor(dir, manifest, tlsBroker.addr,
			"--kafka-tls-ca", pki.OtherCA, "--min-replication", "1"), "--kafka-tls-ca")
		wantRefusal(t, "settler, wrong CA", settlerArgsFor(dir, manifest, saslBroker.addr,
			"--kafka-tls-ca", pki.OtherCA, "--kafka-sasl", "plain", "--kafka-user", "shake", "--kafka-password-file", pw,
			"--min-replication", "1"), "--kafka-tls-ca")
		wantRefusal(t, "verifier, plain text to TLS", verifierArgsFor(dir, manifest, tlsBroker.addr, "--min-replication", "1"), "--kafka-tls-ca")
		wantRefusal(t, "verifier, TLS without SASL to SASL", verifierArgsFor(dir, manifest, saslBroker.addr, tlsFlags...), "--kafka-sasl")
		wantRefusal(t, "verifier, missing topic", verifierArgsFor(dir, manifest, tlsBroker.addr,
			append([]string{"--topic", "no.such.claims"}, tlsFlags...)...), `"no.such.claims"`, "--topic")
		wantRefusal(t, "settler, missing topic", settlerArgsFor(dir, manifest, tlsBroker.addr,
			append([]string{"--topic", "no.such.claims"}, tlsFlags...)...), `"no.such.claims"`, "--topic")
		wantRefusal(t, "verifier, replication 1", verifierArgsFor(dir, manifest, tlsBroker.addr, "--kafka-tls-ca", pki.CA),
			`"shake.claims"`, "--min-replication")
		wantRefusal(t, "settler, replication 1", settlerArgsFor(dir, manifest, tlsBroker.addr, "--kafka-tls-ca", pki.CA),
			`"shake.claims"`, "--min-replication")
		// The password may come from SHAKE_KAFKA_PASSWORD instead of a file.
		for _, c := range []struct {
			pass string
			code int
		}{{"Very-Secret-1", 0}, {"guess", 2}} {
			cmd := exec.Command(shakeBinary(t), "topics", "check", "--brokers", saslBroker.addr, "--min-replication", "1",
				"--kafka-tls-ca", pki.CA, "--kafka-sasl", "scram-sha-256", "--kafka-user", "shake")
			cmd.Env = append(os.Environ(), "SHAKE_KAFKA_PASSWORD="+c.pass)
			out, _ := cmd.CombinedOutput()
			if cmd.ProcessState.ExitCode() != c.code {
				t.Fatalf("topics check with the password %q in the environment: exit %d, want %d\n%s",
					c.pass, cmd.ProcessState.ExitCode(), c.code, out)
			}
		}
	})

	t.Run("chain over SASL_SSL", func(t *testing.T) {
		out := filepath.Join(t.TempDir(), "demo")
		code, stdout, s := runDemoProcess(t, out, append([]string{"--brokers", saslBroker.addr, "--tickets", "1500",
			"--edges", "1", "--users", "3000", "--duration", "2s", "--rate", "800"}, saslFlags...)...)
		checkDemo(t, code, stdout, s)
		// The claims really went through this broker: kcat reads them over SASL_SSL.
		got, err := kcat(t, "", "-b", saslBroker.addr, "-t", "shake.claims", "-C", "-o", "beginning", "-e", "-q",
			"-X", "security.protocol=sasl_ssl", "-X", "ssl.ca.location="+pki.CA, "-X", "sasl.mechanisms=SCRAM-SHA-256",
			"-X", "sasl.username=shake", "-X", "sasl.password=Very-Secret-1", "-f", "%s\n")
		if err != nil {
			t.Fatalf("kcat: %v\n%s", err, got)
		}
		if !strings.Contains(got, `"campaign":"demo"`) {
			t.Fatalf("no demo claim on the broker:\n%.500s", got)
		}
	})
	tlsBroker.stop(t, syscall.SIGTERM)
	saslBroker.stop(t, syscall.SIGTERM)
}

// checkDemo wants a demo that reconciled with every opened ticket posted exactly once.
func checkDemo(t *testing.T, code int, stdout string, s map[string]any) (opened, settled float64) {
	t.Helper()
	if code != 0 || s == nil {
		t.Fatalf("demo exit %d, want 0:\n%s", code, stdout)
	}
	rec := s["reconcile"].(map[string]any)
	cc := s["cross_check"].(map[string]any)
	b := s["bench"].(map[string]any)
	opened, settled = b["opened_count"].(float64), rec["settled_tickets"].(float64)
	if s["ok"] != true || rec["ok"] != true || cc["exactly_matched"] != true || rec["duplicates"].(float64) != 0 {
		t.Fatalf("demo not ok: ok=%v reconcile=%v cross_check=%v", s["ok"], rec, cc)
	}
	if opened == 0 || settled != opened || cc["missing"].(float64) != 0 {
		t.Fatalf("opened %v, settled %v, cross check %v", opened, settled, cc)
	}
	return opened, settled
}

// TestLeaderMovesUnderLoad runs the chain through a 3-node embedded cluster (topics with
// 3 replicas, min.insync.replicas 2, checked at start with the default
// --min-replication 3) while every partition leader of the claims topic and its .dlq
// moves to another node every second: every opened ticket must be posted exactly once
// and nothing may be left unsettled.
func TestLeaderMovesUnderLoad(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("whole-process test")
	}
	const parts = 8
	b, err := broker.Start(broker.Config{Listen: "127.0.0.1:0", Nodes: 3, Partitions: parts})
	verMust(t, err)
	defer b.Close()
	ctx, cancel := context.WithCancel(context.Background())
	var moves atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		rnd := rand.New(rand.NewPCG(1, 2))
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			for _, topic := range []string{broker.DefaultTopic, broker.DefaultTopic + broker.DLQSuffix} {
				if err := b.MoveLeaders(topic, parts, rnd); err != nil {
					t.Errorf("move leaders: %v", err)
					return
				}
			}
			moves.Add(1)
		}
	}()
	out := filepath.Join(os.TempDir(), "leadermoves-demo")
	os.RemoveAll(out)
	code, stdout, s := runDemoProcess(t, out, "--brokers", b.Bootstrap(), "--min-replication", "3",
		"--duration", "6s", "--rate", "1000", "--tickets", "4000", "--users", "8000")
	cancel()
	<-done
	opened, settled := checkDemo(t, code, stdout, s)
	if moves.Load() < 5 {
		t.Fatalf("only %d rounds of leader moves during the run", moves.Load())
	}
	t.Logf("leader moves: %d rounds x %d partitions x 2 topics; opened %v, settled %v, exactly once; settled %.1fs after the load, demo %.1fs",
		moves.Load(), parts, opened, settled, s["settle_wait_seconds"], s["total_seconds"])
}
