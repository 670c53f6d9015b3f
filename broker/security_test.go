package broker

import (
	"context"
	"encoding/binary"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kmsg"

	"shake/internal/testtls"
)

// TestKcatSASL: librdkafka (kcat) produces to and consumes from a SASL broker with each
// mechanism, over plain text and over TLS. Without the ApiVersions patch librdkafka
// refused with "SASL Handshake not supported by broker".
func TestKcatSASL(t *testing.T) {
	t.Parallel()
	kcat, err := exec.LookPath("kcat")
	if err != nil {
		t.Skip("kcat not installed (Debian package kcat); CI installs it")
	}
	pki := testtls.New(t)
	users := []User{{Name: "alice", Password: "wonder:land"}}
	plain, err := Start(Config{Listen: "127.0.0.1:0", Partitions: 1, Security: Security{Users: users}})
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	tlsB, err := Start(Config{Listen: "127.0.0.1:0", Partitions: 1,
		Security: Security{Users: users, TLSCert: pki.ServerCert, TLSKey: pki.ServerKey}})
	if err != nil {
		t.Fatal(err)
	}
	defer tlsB.Close()
	for _, c := range []struct {
		b     *Broker
		proto string
	}{{plain, "sasl_plaintext"}, {tlsB, "sasl_ssl"}} {
		for _, mech := range []string{"SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"} {
			conf := []string{"-X", "security.protocol=" + c.proto, "-X", "sasl.mechanisms=" + mech,
				"-X", "sasl.username=alice", "-X", "sasl.password=wonder:land", "-X", "ssl.ca.location=" + pki.CA}
			if c.proto == "sasl_plaintext" {
				conf = conf[:len(conf)-2]
			}
			msg := fmt.Sprintf("%s-%s-%d", c.proto, mech, time.Now().UnixNano())
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			cmd := exec.CommandContext(ctx, kcat, append([]string{"-b", c.b.Addr(), "-t", DefaultTopic, "-P"}, conf...)...)
			cmd.Stdin = strings.NewReader(msg + "\n")
			if out, err := cmd.CombinedOutput(); err != nil {
				cancel()
				t.Fatalf("%s %s produce: %v\n%s", c.proto, mech, err, out)
			}
			out, err := exec.CommandContext(ctx, kcat, append([]string{"-b", c.b.Addr(), "-t", DefaultTopic, "-C", "-o",
				"beginning", "-e", "-q"}, conf...)...).CombinedOutput()
			cancel()
			if err != nil || !strings.Contains(string(out), msg) {
				t.Fatalf("%s %s consume: %v\n%s", c.proto, mech, err, out)
			}
		}
	}
}

// TestPatchSASLHandshake: the patch widens SaslHandshake to 0..1 and leaves every other
// key, and the correlation id, as they were.
func TestPatchSASLHandshake(t *testing.T) {
	for _, v := range []int16{0, 1, 2, 3, 4} {
		resp := kmsg.NewPtrApiVersionsResponse()
		resp.Version = v
		for _, k := range [][3]int16{{0, 0, 11}, {17, 1, 1}, {18, 0, 4}, {36, 0, 2}} {
			ak := kmsg.NewApiVersionsResponseApiKey()
			ak.ApiKey, ak.MinVersion, ak.MaxVersion = k[0], k[1], k[2]
			resp.ApiKeys = append(resp.ApiKeys, ak)
		}
		frame := resp.AppendTo(make([]byte, 8))
		binary.BigEndian.PutUint32(frame, uint32(len(frame)-4))
		binary.BigEndian.PutUint32(frame[4:], 77)
		out, ok := patchSASLHandshake(frame, v)
		if !ok {
			t.Fatalf("v%d: not patched", v)
		}
		if int(binary.BigEndian.Uint32(out)) != len(out)-4 || binary.BigEndian.Uint32(out[4:]) != 77 {
			t.Fatalf("v%d: bad frame header", v)
		}
		got := kmsg.NewPtrApiVersionsResponse()
		got.Version = v
		if err := got.ReadFrom(out[8:]); err != nil {
			t.Fatalf("v%d: %v", v, err)
		}
		for i, k := range got.ApiKeys {
			want := resp.ApiKeys[i]
			if k.ApiKey == 17 {
				want.MinVersion = 0
			}
			if k.ApiKey != want.ApiKey || k.MinVersion != want.MinVersion || k.MaxVersion != want.MaxVersion {
				t.Fatalf("v%d: key %+v, want %+v", v, k, want)
			}
		}
		if _, ok := patchSASLHandshake(out, v); ok {
			t.Fatalf("v%d: patched twice", v)
		}
	}
}
