package verifier

import (
	"os"
	"path/filepath"
	"testing"

	"shake/broker"
	ikafka "shake/internal/kafka"
	"shake/internal/testtls"
)

// What TLS (and SASL) on the verifier's Kafka connections cost: run these with
// BenchmarkOpenHTTP and BenchmarkOpenLatencyAtRate (plain text) in the same run, e.g.
//
//	go test -run '^$' -bench 'OpenHTTP|OpenLatencyAtRate' -benchtime 20000x ./verifier/
//
// and compare req/s and p99_ms. The HTTP side is the same plain loopback in all of them.

// kafkaTLS returns a broker with TLS (and, with sasl, a SCRAM user) and the verifier's
// matching client security.
func kafkaTLS(b *testing.B, sasl bool) (broker.Security, *ikafka.Security) {
	pki := testtls.New(b)
	bsec := broker.Security{TLSCert: pki.ServerCert, TLSKey: pki.ServerKey}
	o := ikafka.Options{TLSCA: pki.CA, Getenv: func(string) string { return "" }}
	if sasl {
		bsec.Users = []broker.User{{Name: "bench", Password: "bench-pw"}}
		pw := filepath.Join(b.TempDir(), "pw")
		must(b, os.WriteFile(pw, []byte("bench-pw\n"), 0o600))
		o.SASL, o.User, o.PasswordFile = ikafka.SASLScram256, "bench", pw
	}
	ksec, err := o.Load()
	must(b, err)
	return bsec, ksec
}

// BenchmarkOpenHTTPKafkaTLS is BenchmarkOpenHTTP with TLS to Kafka.
func BenchmarkOpenHTTPKafkaTLS(b *testing.B) {
	bsec, ksec := kafkaTLS(b, false)
	addr, reqs := httpFixtureKafka(b, 60000, bsec, ksec)
	hammer(b, addr, reqs)
}

// BenchmarkOpenHTTPKafkaSASLSSL is BenchmarkOpenHTTP with SCRAM-SHA-256 over TLS.
func BenchmarkOpenHTTPKafkaSASLSSL(b *testing.B) {
	bsec, ksec := kafkaTLS(b, true)
	addr, reqs := httpFixtureKafka(b, 60000, bsec, ksec)
	hammer(b, addr, reqs)
}

// BenchmarkOpenLatencyAtRateKafkaTLS is BenchmarkOpenLatencyAtRate with TLS to Kafka.
func BenchmarkOpenLatencyAtRateKafkaTLS(b *testing.B) {
	rate := openRate()
	bsec, ksec := kafkaTLS(b, false)
	addr, reqs := httpFixtureKafka(b, rate*3+10, bsec, ksec)
	openLatencyAtRate(b, addr, reqs, rate)
}
