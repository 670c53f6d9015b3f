package ticket

import (
	"bytes"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"strconv"
)

// Session errors. All of them map to 401 on the wire; they are distinct so that logs and
// metrics can tell a forgery from an expired login.
var (
	ErrSessionMalformed = errors.New("session token is malformed")
	ErrSessionForged    = errors.New("session token signature does not match")
	ErrSessionExpired   = errors.New("session token has expired")
)

const sessionLabel = "shake-session-v1|"

// sessionSigLen is the base64url (no padding) length of an HMAC-SHA256.
const sessionSigLen = 43

// MaxSessionLen bounds a session token: 20-digit uid, '.', 20-digit expiry, '.', signature.
const MaxSessionLen = 20 + 1 + 20 + 1 + sessionSigLen

// SessionKey mints and verifies session tokens of the form
// `<uid>.<expires_unix>.<sig>`, sig = base64url(HMAC-SHA256(key,
// "shake-session-v1|<uid>|<expires_unix>")) without padding. The key is shared with the
// app's login system.
type SessionKey struct{ pool *hmacPool }

// NewSessionKey returns a SessionKey for the 32-byte session.key.
func NewSessionKey(key []byte) (*SessionKey, error) {
	if len(key) != KeySize {
		return nil, ErrKeySize
	}
	return &SessionKey{pool: newHMACPool(key)}, nil
}

// sign writes the HMAC of (uid, exp), given as their canonical decimal digits, into s.sum.
func (k *SessionKey) sign(s *hmacState, uid, exp []byte) []byte {
	n := copy(s.msg[:], sessionLabel)
	n += copy(s.msg[n:], uid)
	s.msg[n] = '|'
	n++
	n += copy(s.msg[n:], exp)
	return s.compute(n)
}

// Mint appends a session token for uid expiring at expiresUnix to dst.
func (k *SessionKey) Mint(dst []byte, uid uint64, expiresUnix int64) []byte {
	if expiresUnix < 0 {
		expiresUnix = 0
	}
	start := len(dst)
	dst = strconv.AppendUint(dst, uid, 10)
	mid := len(dst)
	dst = append(dst, '.')
	dst = strconv.AppendInt(dst, expiresUnix, 10)
	end := len(dst)
	s := k.pool.get()
	sum := k.sign(s, dst[start:mid], dst[mid+1:end])
	dst = append(dst, '.')
	dst = base64.RawURLEncoding.AppendEncode(dst, sum)
	k.pool.put(s)
	return dst
}

// Verify checks tok at time nowUnix and returns its uid. It runs in constant time with
// respect to the signature and allocates nothing.
func (k *SessionKey) Verify(tok []byte, nowUnix int64) (uint64, error) {
	if len(tok) > MaxSessionLen {
		return 0, ErrSessionMalformed
	}
	i := bytes.IndexByte(tok, '.')
	if i < 0 {
		return 0, ErrSessionMalformed
	}
	j := bytes.IndexByte(tok[i+1:], '.')
	if j < 0 {
		return 0, ErrSessionMalformed
	}
	j += i + 1
	uidB, expB, sigB := tok[:i], tok[i+1:j], tok[j+1:]
	uid, ok := ParseUint(uidB)
	if !ok {
		return 0, ErrSessionMalformed
	}
	exp, ok := ParseUint(expB)
	if !ok || exp > 1<<62 || len(sigB) != sessionSigLen {
		return 0, ErrSessionMalformed
	}
	s := k.pool.get()
	var got [32]byte
	n, err := tokenEncoding.Decode(got[:], sigB)
	if err != nil || n != 32 {
		k.pool.put(s)
		return 0, ErrSessionMalformed
	}
	want := k.sign(s, uidB, expB)
	eq := subtle.ConstantTimeCompare(want, got[:]) == 1
	k.pool.put(s)
	if !eq {
		return 0, ErrSessionForged
	}
	if int64(exp) <= nowUnix {
		return 0, ErrSessionExpired
	}
	return uid, nil
}

// BearerToken extracts the token from an `Authorization: Bearer <token>` header value.
func BearerToken(h []byte) ([]byte, bool) {
	const p = "Bearer "
	if len(h) <= len(p) || !bytes.EqualFold(h[:len(p)], []byte(p)) {
		return nil, false
	}
	return bytes.TrimSpace(h[len(p):]), true
}
