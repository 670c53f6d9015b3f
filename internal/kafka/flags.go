package kafka

import (
	"flag"
	"net"
	"strings"
)

// DefaultMinReplication is --min-replication's default: a claim acknowledged by every
// in-sync replica survives the loss of a broker only when there are several.
const DefaultMinReplication = 3

// Flags are the Kafka security flags of one command, registered by AddFlags so that
// every command that talks to Kafka spells and checks them the same way.
type Flags struct {
	opts Options
}

// AddFlags registers --kafka-tls-ca, --kafka-tls-cert, --kafka-tls-key, --kafka-sasl,
// --kafka-user and --kafka-password-file on fs. There is deliberately no password flag:
// argv is visible to every user of the machine.
func AddFlags(fs *flag.FlagSet) *Flags {
	f := &Flags{}
	fs.StringVar(&f.opts.TLSCA, "kafka-tls-ca", "", "PEM `FILE` of the CA that signs the brokers' certificates (turns TLS on)")
	fs.StringVar(&f.opts.TLSCert, "kafka-tls-cert", "", "PEM client certificate `FILE` for mutual TLS (turns TLS on; needs --kafka-tls-key)")
	fs.StringVar(&f.opts.TLSKey, "kafka-tls-key", "", "PEM private key `FILE` of --kafka-tls-cert")
	fs.StringVar(&f.opts.SASL, "kafka-sasl", "", "SASL `mechanism`: plain, scram-sha-256 or scram-sha-512 (default: none)")
	fs.StringVar(&f.opts.User, "kafka-user", "", "SASL user `NAME`")
	fs.StringVar(&f.opts.PasswordFile, "kafka-password-file", "", "`FILE` holding the SASL password on one line (or set "+PasswordEnv+")")
	return f
}

// Load checks the flags and reads the files they name; errors name the flag.
func (f *Flags) Load() (*Security, error) { return f.opts.Load() }

// Args returns the flags that were set, as a command line for a child process (a file
// name each, never a secret): the demo hands its Kafka security to its servers this way.
func (f *Flags) Args() []string {
	var a []string
	for _, kv := range [][2]string{{"kafka-tls-ca", f.opts.TLSCA}, {"kafka-tls-cert", f.opts.TLSCert},
		{"kafka-tls-key", f.opts.TLSKey}, {"kafka-sasl", f.opts.SASL}, {"kafka-user", f.opts.User},
		{"kafka-password-file", f.opts.PasswordFile}} {
		if kv[1] != "" {
			a = append(a, "--"+kv[0], kv[1])
		}
	}
	return a
}

// AddMinReplicationFlag registers --min-replication on fs.
func AddMinReplicationFlag(fs *flag.FlagSet) *int {
	return fs.Int("min-replication", DefaultMinReplication,
		"refuse to start unless the claims topic has at least this many replicas (1 for a one-broker setup)")
}

// CheckMinReplication validates a --min-replication value.
func CheckMinReplication(n int) error {
	if n < 1 || n > 32767 {
		return flagErr("min-replication", "must be in 1..32767, not %d", n)
	}
	return nil
}

// ParseBrokers splits a --brokers value ("HOST:PORT[,...]") and checks each address.
func ParseBrokers(s string) ([]string, error) {
	var out []string
	for _, b := range strings.Split(s, ",") {
		b = strings.TrimSpace(b)
		if b == "" {
			continue
		}
		host, port, err := net.SplitHostPort(b)
		if err != nil || host == "" || port == "" {
			return nil, flagErr("brokers", "%q is not HOST:PORT", b)
		}
		out = append(out, b)
	}
	if len(out) == 0 {
		return nil, &FlagError{Flag: "brokers", Err: ErrNoBrokers}
	}
	return out, nil
}
