package broker

import (
	"encoding/binary"
	"io"
	"net"
	"sync"

	"github.com/twmb/franz-go/pkg/kmsg"
)

// kfake answers ApiVersions with SaslHandshake (key 17) versions 1..1 only. librdkafka
// (kcat) turns SASL on only for a broker whose range includes version 0, the one that
// marks "SASL handshake supported", and otherwise gives up with "SASL Handshake not
// supported by broker" before it even tries; with 1 in the range too it then uses
// version 1 (and SaslAuthenticate), which kfake serves. So on a SASL broker every
// connection's ApiVersions answers are patched to advertise 0..1. No client we know sends
// version 0 to a broker that offers 1 (it would be refused, as before).

const (
	apiVersionsKey   = 18
	saslHandshakeKey = 17
	// maxInspect bounds a request frame read whole while a connection is inspected; an
	// ApiVersions request is a few dozen bytes.
	maxInspect = 64 << 10
)

// shimListener wraps accepted connections in apiVersionsConn.
type shimListener struct{ net.Listener }

func (l shimListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &apiVersionsConn{Conn: c, inspecting: true, pending: map[int32]int16{}}, nil
}

// apiVersionsConn patches the ApiVersions responses of the requests that open a
// connection; after the first other request it only passes bytes through.
type apiVersionsConn struct {
	net.Conn
	// inspecting and rbuf belong to the reading goroutine.
	inspecting bool
	rbuf       []byte
	mu         sync.Mutex
	pending    map[int32]int16 // correlation id -> version of unanswered ApiVersions requests
}

func (c *apiVersionsConn) Read(p []byte) (int, error) {
	if len(c.rbuf) > 0 {
		n := copy(p, c.rbuf)
		c.rbuf = c.rbuf[n:]
		return n, nil
	}
	if !c.inspecting {
		return c.Conn.Read(p)
	}
	var size [4]byte
	if _, err := io.ReadFull(c.Conn, size[:]); err != nil {
		return 0, err
	}
	n := binary.BigEndian.Uint32(size[:])
	if n < 8 || n > maxInspect {
		// Not a request we care about (or garbage): hand it over untouched.
		c.inspecting = false
		c.rbuf = append(c.rbuf[:0], size[:]...)
		return c.Read(p)
	}
	frame := make([]byte, 4+n)
	copy(frame, size[:])
	if _, err := io.ReadFull(c.Conn, frame[4:]); err != nil {
		return 0, err
	}
	key := int16(binary.BigEndian.Uint16(frame[4:]))
	version := int16(binary.BigEndian.Uint16(frame[6:]))
	corr := int32(binary.BigEndian.Uint32(frame[8:]))
	if key == apiVersionsKey {
		c.mu.Lock()
		c.pending[corr] = version
		c.mu.Unlock()
	} else {
		c.inspecting = false
	}
	c.rbuf = frame
	return c.Read(p)
}

// Write patches a response to a pending ApiVersions request. kfake writes each
// response frame with one Write; anything else passes through.
func (c *apiVersionsConn) Write(b []byte) (int, error) {
	c.mu.Lock()
	var (
		version int16
		ok      bool
	)
	if len(c.pending) > 0 && len(b) >= 8 && int(binary.BigEndian.Uint32(b)) == len(b)-4 {
		corr := int32(binary.BigEndian.Uint32(b[4:]))
		if version, ok = c.pending[corr]; ok {
			delete(c.pending, corr)
		}
	}
	c.mu.Unlock()
	if !ok {
		return c.Conn.Write(b)
	}
	patched, changed := patchSASLHandshake(b, version)
	if !changed {
		return c.Conn.Write(b)
	}
	if _, err := c.Conn.Write(patched); err != nil {
		return 0, err
	}
	return len(b), nil
}

// patchSASLHandshake rewrites one ApiVersions response frame (size, correlation id,
// body; never a tagged header) so that SaslHandshake's range starts at 0.
func patchSASLHandshake(frame []byte, version int16) ([]byte, bool) {
	resp := kmsg.NewPtrApiVersionsResponse()
	resp.Version = version
	if err := resp.ReadFrom(frame[8:]); err != nil {
		// A downgraded answer (v0 to a newer request) or something unexpected: as is.
		return nil, false
	}
	changed := false
	for i := range resp.ApiKeys {
		if k := &resp.ApiKeys[i]; k.ApiKey == saslHandshakeKey && k.MinVersion > 0 {
			k.MinVersion = 0
			changed = true
		}
	}
	if !changed {
		return nil, false
	}
	out := make([]byte, 8, len(frame)+8)
	copy(out[4:8], frame[4:8])
	out = resp.AppendTo(out)
	binary.BigEndian.PutUint32(out, uint32(len(out)-4))
	return out, true
}
