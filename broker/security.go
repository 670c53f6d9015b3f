package broker

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"strings"

	"github.com/twmb/franz-go/pkg/kfake"
)

// Security configures the broker's listeners: TLS (a server certificate, optionally
// requiring client certificates) and SASL users. The zero value is plain text without
// authentication, as before.
type Security struct {
	// TLSCert and TLSKey are PEM files of the certificate every node presents; both or
	// neither. The certificate must name the host clients dial (an IP SAN for 127.0.0.1).
	TLSCert, TLSKey string
	// TLSClientCA, when set, makes the listeners require a client certificate signed by
	// this PEM CA bundle (mutual TLS). Needs TLSCert.
	TLSClientCA string
	// Users may authenticate with SASL PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512; with any
	// user, every connection must authenticate before anything else.
	Users []User
}

// User is one SASL user of the embedded broker.
type User struct {
	Name, Password string
}

// ParseUser parses "NAME:PASSWORD" (the password may itself contain ':').
func ParseUser(s string) (User, error) {
	name, pass, ok := strings.Cut(s, ":")
	if !ok || name == "" || pass == "" {
		return User{}, fmt.Errorf("%w: SASL user must be NAME:PASSWORD with both non-empty", ErrConfig)
	}
	return User{Name: name, Password: pass}, nil
}

// saslMechanisms are registered for every user: kfake keeps one credential per
// mechanism and user, and clients pick the mechanism.
var saslMechanisms = []string{"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"}

// options turns s into kfake options and a wrapper for the nodes' listeners. TLS is
// done here rather than with kfake.TLS so that, on a SASL broker, the ApiVersions patch
// (apiversions.go) sees the plain bytes: tcp -> TLS -> patch -> kfake.
func (s Security) options() ([]kfake.Opt, func(net.Listener) net.Listener, error) {
	var (
		opts []kfake.Opt
		tc   *tls.Config
	)
	if (s.TLSCert == "") != (s.TLSKey == "") {
		return nil, nil, fmt.Errorf("%w: TLS needs both a certificate and a key file", ErrConfig)
	}
	if s.TLSClientCA != "" && s.TLSCert == "" {
		return nil, nil, fmt.Errorf("%w: a client CA needs the broker's own TLS certificate and key", ErrConfig)
	}
	if s.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(s.TLSCert, s.TLSKey)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: TLS certificate %s with key %s: %v", ErrConfig, s.TLSCert, s.TLSKey, err)
		}
		tc = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
		if s.TLSClientCA != "" {
			pem, err := os.ReadFile(s.TLSClientCA)
			if err != nil {
				return nil, nil, fmt.Errorf("%w: client CA: %v", ErrConfig, err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, nil, fmt.Errorf("%w: client CA %s holds no PEM certificate", ErrConfig, s.TLSClientCA)
			}
			tc.ClientCAs = pool
			tc.ClientAuth = tls.RequireAndVerifyClientCert
		}
	}
	if len(s.Users) > 0 {
		seen := map[string]bool{}
		opts = append(opts, kfake.EnableSASL())
		for _, u := range s.Users {
			if u.Name == "" || u.Password == "" {
				return nil, nil, fmt.Errorf("%w: SASL user with an empty name or password", ErrConfig)
			}
			if seen[u.Name] {
				return nil, nil, fmt.Errorf("%w: SASL user %q given twice", ErrConfig, u.Name)
			}
			seen[u.Name] = true
			for _, m := range saslMechanisms {
				// Without ACLs every authenticated user may do everything; a superuser
				// keeps working if ACLs are ever enabled.
				opts = append(opts, kfake.Superuser(m, u.Name, u.Password))
			}
		}
	}
	sasl := len(s.Users) > 0
	wrap := func(ln net.Listener) net.Listener {
		if tc != nil {
			ln = tls.NewListener(ln, tc)
		}
		if sasl {
			ln = shimListener{ln}
		}
		return ln
	}
	return opts, wrap, nil
}
