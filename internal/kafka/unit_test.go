package kafka

import (
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"shake/internal/testtls"
)

func write(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestLoadNamesTheFlag: every bad combination or file is refused with the flag's name
// first, which is what the commands print (exit 2).
func TestLoadNamesTheFlag(t *testing.T) {
	pki := testtls.New(t)
	pw := write(t, "pw", "secret\n")
	noEnv := func(string) string { return "" }
	cases := []struct {
		name string
		o    Options
		flag string
	}{
		{"cert without key", Options{TLSCert: pki.ClientCert}, "kafka-tls-key"},
		{"key without cert", Options{TLSKey: pki.ClientKey}, "kafka-tls-cert"},
		{"missing CA file", Options{TLSCA: "/nonexistent/ca.pem"}, "kafka-tls-ca"},
		{"CA file without PEM", Options{TLSCA: write(t, "ca.pem", "not a certificate")}, "kafka-tls-ca"},
		{"key of another certificate", Options{TLSCert: pki.ClientCert, TLSKey: pki.ServerKey}, "kafka-tls-cert"},
		{"unknown mechanism", Options{SASL: "gssapi", User: "u", PasswordFile: pw}, "kafka-sasl"},
		{"sasl without user", Options{SASL: SASLScram256, PasswordFile: pw}, "kafka-user"},
		{"sasl without password", Options{SASL: SASLScram256, User: "u", Getenv: noEnv}, "kafka-password-file"},
		{"empty password file", Options{SASL: SASLPlain, User: "u", PasswordFile: write(t, "e", "\n")}, "kafka-password-file"},
		{"two-line password file", Options{SASL: SASLPlain, User: "u", PasswordFile: write(t, "m", "a\nb\n")}, "kafka-password-file"},
		{"missing password file", Options{SASL: SASLPlain, User: "u", PasswordFile: "/nonexistent/pw"}, "kafka-password-file"},
		{"user without sasl", Options{User: "u"}, "kafka-user"},
		{"password without sasl", Options{PasswordFile: pw}, "kafka-password-file"},
	}
	for _, c := range cases {
		if c.o.Getenv == nil {
			c.o.Getenv = noEnv
		}
		_, err := c.o.Load()
		var fe *FlagError
		if !errors.As(err, &fe) || fe.Flag != c.flag || !strings.HasPrefix(err.Error(), "--"+c.flag+": ") {
			t.Errorf("%s: got %v, want an error naming --%s", c.name, err, c.flag)
		}
	}
}

func TestLoadPassword(t *testing.T) {
	env := func(k string) string {
		if k == PasswordEnv {
			return "from-env"
		}
		return ""
	}
	s, err := Options{SASL: "SCRAM-SHA-512", User: "u", Getenv: env}.Load()
	if err != nil || s.Mechanism != SASLScram512 || s.SASL.Name() != "SCRAM-SHA-512" {
		t.Fatalf("password from %s: %v %+v", PasswordEnv, err, s)
	}
	// The file wins over the environment, without its trailing newline.
	s, err = Options{SASL: SASLPlain, User: "u", PasswordFile: write(t, "pw", "from-file\r\n"), Getenv: env}.Load()
	if err != nil || s.SASL.Name() != "PLAIN" {
		t.Fatal(err)
	}
	if !s.PlainPassword() || s.String() != "sasl_plaintext/plain" {
		t.Fatalf("PLAIN without TLS must be flagged: %v %q", s.PlainPassword(), s)
	}
	var none *Security
	if none.String() != "plaintext" || none.PlainPassword() || none.Dialer(0).TLS != nil {
		t.Fatal("nil Security is not plain text")
	}
}

// TestNoPasswordFlag: the commands cannot take a password in argv.
func TestNoPasswordFlag(t *testing.T) {
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	AddFlags(fs)
	fs.VisitAll(func(f *flag.Flag) {
		if strings.Contains(f.Name, "password") && f.Name != "kafka-password-file" {
			t.Errorf("flag --%s would put a password in argv", f.Name)
		}
	})
	if err := fs.Parse([]string{"--kafka-password", "x"}); err == nil {
		t.Fatal("--kafka-password accepted")
	}
}

func TestCheckPolicy(t *testing.T) {
	cases := []struct {
		name    string
		t       TopicInfo
		minRepl int
		want    string // "" passes; else a substring of the refusal
	}{
		{"missing", TopicInfo{Name: "c"}, 1, "does not exist"},
		{"missing dlq names the claims topic", TopicInfo{Name: "c.dlq"}, 1, "topics create --topic c'"},
		{"one replica, default", TopicInfo{Name: "c", Exists: true, Replication: 1, MinInsync: 1}, 3, "--min-replication 3"},
		{"one replica, one broker", TopicInfo{Name: "c", Exists: true, Replication: 1, MinInsync: 1}, 1, ""},
		{"three replicas, min.insync 1", TopicInfo{Name: "c", Exists: true, Replication: 3, MinInsync: 1}, 3, "min.insync.replicas 1"},
		{"two replicas, min.insync 1, min 1", TopicInfo{Name: "c", Exists: true, Replication: 2, MinInsync: 1}, 1, "min.insync.replicas 1"},
		{"three replicas, min.insync 2", TopicInfo{Name: "c", Exists: true, Replication: 3, MinInsync: 2}, 3, ""},
		{"min.insync above replicas", TopicInfo{Name: "c", Exists: true, Replication: 3, MinInsync: 4}, 3, "above its replication factor"},
		{"replication 2 below 3", TopicInfo{Name: "c", Exists: true, Replication: 2, MinInsync: 2}, 3, "replication factor 2"},
	}
	for _, c := range cases {
		err := c.t.Check(c.minRepl)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: refused: %v", c.name, err)
		case c.want != "" && (!errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), `"`+c.t.Name+`"`)):
			t.Errorf("%s: got %v, want a refusal naming %q and %q", c.name, err, c.t.Name, c.want)
		}
	}
}

func TestParseBrokers(t *testing.T) {
	got, err := ParseBrokers(" a:1, b:2 ,")
	if err != nil || len(got) != 2 || got[1] != "b:2" {
		t.Fatalf("%v %v", got, err)
	}
	for _, bad := range []string{"", " , ", "nohost", ":9092", "h:"} {
		if _, err := ParseBrokers(bad); err == nil || !strings.HasPrefix(err.Error(), "--brokers: ") {
			t.Errorf("%q: %v", bad, err)
		}
	}
	if err := CheckMinReplication(0); err == nil || !strings.Contains(err.Error(), "--min-replication") {
		t.Fatal(err)
	}
}
