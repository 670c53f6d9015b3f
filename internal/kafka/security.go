// Package kafka is the one place that says how shake talks to Kafka: TLS (a CA, a client
// certificate) and SASL (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512) for every kafka-go Dialer,
// Transport and Client, the command-line flags that configure them, and the checks a
// claims topic must pass before a verifier or settler trusts it with money.
package kafka

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl"
	"github.com/segmentio/kafka-go/sasl/plain"
	"github.com/segmentio/kafka-go/sasl/scram"
)

// SASL mechanism names as the flags and Kafka spell them.
const (
	SASLPlain     = "plain"
	SASLScram256  = "scram-sha-256"
	SASLScram512  = "scram-sha-512"
	maxSecretFile = 64 << 10 // a PEM file or a password file is never larger
)

// PasswordEnv is the environment variable that may carry the SASL password instead of
// --kafka-password-file; a password never appears in argv, where ps shows it to anyone.
const PasswordEnv = "SHAKE_KAFKA_PASSWORD"

// Options are the security settings as given on the command line: file names, never
// secrets themselves.
type Options struct {
	TLSCA        string // PEM CA bundle that signs the brokers' certificates
	TLSCert      string // PEM client certificate (mutual TLS); needs TLSKey
	TLSKey       string // PEM private key of TLSCert
	SASL         string // "", plain, scram-sha-256, scram-sha-512
	User         string // SASL user name
	PasswordFile string // file holding the SASL password (one line)
	// Getenv reads PasswordEnv; nil uses os.Getenv (tests inject their own).
	Getenv func(string) string
}

// Security is what every Kafka connection of a process needs: a TLS configuration (nil:
// plain text) and a SASL mechanism (nil: no authentication). The zero value and a nil
// *Security both mean plain text without authentication.
type Security struct {
	TLS  *tls.Config
	SASL sasl.Mechanism
	// Mechanism is the SASL mechanism's flag name ("" without SASL), for logs.
	Mechanism string
}

// FlagError is a configuration error caused by one flag; its message starts with the
// flag's name so that the command's one-line error names it.
type FlagError struct {
	Flag string // without dashes: "kafka-tls-ca"
	Err  error
}

func (e *FlagError) Error() string { return "--" + e.Flag + ": " + e.Err.Error() }
func (e *FlagError) Unwrap() error { return e.Err }

func flagErr(flag string, format string, args ...any) error {
	return &FlagError{Flag: flag, Err: fmt.Errorf(format, args...)}
}

// Load checks o and reads the files it names. Every error is a *FlagError.
func (o Options) Load() (*Security, error) {
	s := &Security{}
	if o.TLSCert != "" || o.TLSKey != "" {
		if o.TLSCert == "" {
			return nil, flagErr("kafka-tls-cert", "required with --kafka-tls-key")
		}
		if o.TLSKey == "" {
			return nil, flagErr("kafka-tls-key", "required with --kafka-tls-cert")
		}
	}
	if o.TLSCA != "" || o.TLSCert != "" {
		// TLS 1.2 is the floor every supported Kafka offers; nothing older is safe.
		s.TLS = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	if o.TLSCA != "" {
		pem, err := readSmall(o.TLSCA)
		if err != nil {
			return nil, flagErr("kafka-tls-ca", "%v", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, flagErr("kafka-tls-ca", "%s holds no PEM certificate", o.TLSCA)
		}
		s.TLS.RootCAs = pool
	}
	if o.TLSCert != "" {
		certPEM, err := readSmall(o.TLSCert)
		if err != nil {
			return nil, flagErr("kafka-tls-cert", "%v", err)
		}
		keyPEM, err := readSmall(o.TLSKey)
		if err != nil {
			return nil, flagErr("kafka-tls-key", "%v", err)
		}
		cert, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			return nil, flagErr("kafka-tls-cert", "%s with %s: %v", o.TLSCert, o.TLSKey, err)
		}
		s.TLS.Certificates = []tls.Certificate{cert}
	}
	if o.SASL == "" {
		if o.User != "" {
			return nil, flagErr("kafka-user", "needs --kafka-sasl")
		}
		if o.PasswordFile != "" {
			return nil, flagErr("kafka-password-file", "needs --kafka-sasl")
		}
		return s, nil
	}
	if o.User == "" {
		return nil, flagErr("kafka-user", "required with --kafka-sasl")
	}
	pass, err := o.password()
	if err != nil {
		return nil, err
	}
	switch strings.ToLower(o.SASL) {
	case SASLPlain:
		s.SASL = plain.Mechanism{Username: o.User, Password: pass}
	case SASLScram256, SASLScram512:
		algo := scram.SHA256
		if strings.EqualFold(o.SASL, SASLScram512) {
			algo = scram.SHA512
		}
		if s.SASL, err = scram.Mechanism(algo, o.User, pass); err != nil {
			// SASLprep refuses some user names and passwords (control characters).
			return nil, flagErr("kafka-user", "SCRAM refuses this user or password: %v", err)
		}
	default:
		return nil, flagErr("kafka-sasl", "must be %s, %s or %s, not %q", SASLPlain, SASLScram256, SASLScram512, o.SASL)
	}
	s.Mechanism = strings.ToLower(o.SASL)
	return s, nil
}

// password reads the SASL password from --kafka-password-file, else from PasswordEnv.
func (o Options) password() (string, error) {
	getenv := o.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	if o.PasswordFile != "" {
		b, err := readSmall(o.PasswordFile)
		if err != nil {
			return "", flagErr("kafka-password-file", "%v", err)
		}
		// One line; the newline an editor or echo adds is not part of the password.
		p := strings.TrimRight(string(b), "\r\n")
		if p == "" {
			return "", flagErr("kafka-password-file", "%s is empty", o.PasswordFile)
		}
		if strings.ContainsAny(p, "\r\n") {
			return "", flagErr("kafka-password-file", "%s holds more than one line", o.PasswordFile)
		}
		return p, nil
	}
	if p := getenv(PasswordEnv); p != "" {
		return p, nil
	}
	return "", flagErr("kafka-password-file", "required with --kafka-sasl (or set %s)", PasswordEnv)
}

// readSmall reads a file of at most maxSecretFile bytes.
func readSmall(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxSecretFile+1))
	if err != nil {
		return nil, fmt.Errorf("cannot read %s: %w", path, err)
	}
	if len(b) > maxSecretFile {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, maxSecretFile)
	}
	return b, nil
}

// PlainPassword reports whether a password would cross the network in clear: SASL
// PLAIN without TLS. Commands warn about it at start.
func (s *Security) PlainPassword() bool {
	return s != nil && s.SASL != nil && s.Mechanism == SASLPlain && s.TLS == nil
}

// String describes s for logs: "plaintext", "tls", "sasl_ssl/scram-sha-256", ...
func (s *Security) String() string {
	switch {
	case s == nil || (s.TLS == nil && s.SASL == nil):
		return "plaintext"
	case s.SASL == nil:
		return "tls"
	case s.TLS == nil:
		return "sasl_plaintext/" + s.Mechanism
	default:
		return "sasl_ssl/" + s.Mechanism
	}
}

// tlsConfig returns a copy of the TLS configuration for one dialer or transport: kafka-go
// fills in ServerName per broker, which must not leak between users of one config.
func (s *Security) tlsConfig() *tls.Config {
	if s == nil || s.TLS == nil {
		return nil
	}
	return s.TLS.Clone()
}

func (s *Security) mechanism() sasl.Mechanism {
	if s == nil {
		return nil
	}
	return s.SASL
}

// Dialer returns a kafka-go Dialer (for Readers and Conns) with s and the connect
// timeout given.
func (s *Security) Dialer(timeout time.Duration) *kafka.Dialer {
	return &kafka.Dialer{
		Timeout:       timeout,
		DualStack:     true,
		TLS:           s.tlsConfig(),
		SASLMechanism: s.mechanism(),
	}
}

// Secure sets s on a kafka-go Transport (for Writers and Clients) and returns it, so
// that each role keeps its own timeouts: Secure(&kafka.Transport{DialTimeout: ...}).
func (s *Security) Secure(t *kafka.Transport) *kafka.Transport {
	t.TLS = s.tlsConfig()
	t.SASL = s.mechanism()
	return t
}

// Client returns a kafka-go admin Client for brokers, each request bounded by timeout.
func (s *Security) Client(brokers []string, timeout time.Duration) *kafka.Client {
	return &kafka.Client{
		Addr:      kafka.TCP(brokers...),
		Timeout:   timeout,
		Transport: s.Secure(&kafka.Transport{DialTimeout: timeout, IdleTimeout: 30 * time.Second}),
	}
}

// ErrNoBrokers is returned by ParseBrokers for an empty list.
var ErrNoBrokers = errors.New("no broker address")
