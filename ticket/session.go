package ticket

import (
	"bytes"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
)

// Session errors. All of them map to 401 on the wire; they are distinct so that logs and
// metrics can tell a forgery from an expired login.
var (
	ErrSessionMalformed = errors.New("session token is malformed")
	ErrSessionForged    = errors.New("session token signature does not match")
	ErrSessionExpired   = errors.New("session token has expired")
)

const (
	sessionLabel     = "shake-session-v1|"
	sessionAttrLabel = "shake-session-v2|"
)

// sessionSigLen is the base64url (no padding) length of an HMAC-SHA256.
const sessionSigLen = 43

// Session attributes: a device id of 1..MaxDeviceLen characters [A-Za-z0-9_-], and a
// risk level 0..MaxRisk.
const (
	MaxDeviceLen = 64
	MaxRisk      = 9
)

// MaxSessionLen bounds a session token: 20-digit uid, '.', 20-digit expiry, '.', the
// attributes (device, '~', risk digit) and '.', signature.
const MaxSessionLen = 20 + 1 + 20 + 1 + MaxDeviceLen + 2 + 1 + sessionSigLen

// Every message signed fits the pooled HMAC state's buffer.
var _ = [1]struct{}{}[len(hmacState{}.msg)/(len(sessionAttrLabel)+20+1+20+1+MaxDeviceLen+1+1)-1]

// Session is what a valid session token says: the user, and the attributes the login or
// risk system signed into it (no device: Device empty; no risk given: 0). Device aliases
// the token's bytes: it is valid as long as they are.
type Session struct {
	UID    uint64
	Device []byte
	Risk   uint8
}

// ValidDevice reports whether d is a device id: 1..64 characters of [A-Za-z0-9_-].
func ValidDevice(d []byte) bool {
	if len(d) == 0 || len(d) > MaxDeviceLen {
		return false
	}
	for _, c := range d {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// SessionKey mints and verifies session tokens. A token without attributes is
// `<uid>.<expires_unix>.<sig>`, sig = base64url(HMAC-SHA256(key,
// "shake-session-v1|<uid>|<expires_unix>")) without padding. A token with attributes is
// `<uid>.<expires_unix>.<device>~<risk>.<sig>` (device may be empty, risk one digit),
// sig = base64url(HMAC-SHA256(key, "shake-session-v2|<uid>|<expires_unix>|<device>|<risk>")):
// another label, so neither form's signature is valid for the other. The key is shared
// with the app's login system. A SessionKey may hold several keys during a rotation: it
// mints with the first and accepts a token signed with any.
type SessionKey struct{ pools []*hmacPool }

// NewSessionKey returns a SessionKey for the 32-byte session.key.
func NewSessionKey(key []byte) (*SessionKey, error) {
	return NewSessionKeys([][]byte{key})
}

// NewSessionKeys returns a SessionKey that mints with keys[0] and accepts tokens signed
// with any of keys (a new and an old session.key during a rotation).
func NewSessionKeys(keys [][]byte) (*SessionKey, error) {
	if len(keys) == 0 {
		return nil, ErrKeySize
	}
	k := &SessionKey{}
	for _, key := range keys {
		if len(key) != KeySize {
			return nil, ErrKeySize
		}
		k.pools = append(k.pools, newHMACPool(key))
	}
	return k, nil
}

// LoadSessionKeys reads session.key files (first: the one new tokens are minted with;
// more: further keys accepted during a rotation) and returns their SessionKey. Errors name
// the file.
func LoadSessionKeys(first string, more []string) (*SessionKey, error) {
	var keys [][]byte
	for _, p := range append([]string{first}, more...) {
		k, err := ReadKeyFile(p)
		if err != nil {
			return nil, err
		}
		if len(k) != KeySize {
			return nil, fmt.Errorf("session key %s: %w", p, ErrKeySize)
		}
		keys = append(keys, k)
	}
	return NewSessionKeys(keys)
}

// sign writes the HMAC of (uid, exp) or, when attrs, of (uid, exp, device, risk), given
// as their canonical digits, into s.sum.
func sign(s *hmacState, uid, exp []byte, attrs bool, device []byte, risk byte) []byte {
	label := sessionLabel
	if attrs {
		label = sessionAttrLabel
	}
	n := copy(s.msg[:], label)
	n += copy(s.msg[n:], uid)
	s.msg[n] = '|'
	n++
	n += copy(s.msg[n:], exp)
	if attrs {
		s.msg[n] = '|'
		n++
		n += copy(s.msg[n:], device)
		s.msg[n] = '|'
		s.msg[n+1] = risk
		n += 2
	}
	return s.compute(n)
}

// Mint appends a session token for uid expiring at expiresUnix to dst, without
// attributes.
func (k *SessionKey) Mint(dst []byte, uid uint64, expiresUnix int64) []byte {
	return k.MintAttrs(dst, uid, expiresUnix, nil, 0)
}

// MintAttrs appends a session token for uid expiring at expiresUnix with a device id
// (nil: none) and a risk level to dst. With no device and risk 0 it is the token without
// attributes, which every server has always accepted. The caller passes a valid device
// (ValidDevice) and a risk of at most MaxRisk; anything else is a programming error.
func (k *SessionKey) MintAttrs(dst []byte, uid uint64, expiresUnix int64, device []byte, risk uint8) []byte {
	if (device != nil && !ValidDevice(device)) || risk > MaxRisk {
		panic("BUG: MintAttrs: invalid device id or risk level")
	}
	if expiresUnix < 0 {
		expiresUnix = 0
	}
	attrs := len(device) > 0 || risk > 0
	start := len(dst)
	dst = strconv.AppendUint(dst, uid, 10)
	mid := len(dst)
	dst = append(dst, '.')
	dst = strconv.AppendInt(dst, expiresUnix, 10)
	end := len(dst)
	s := k.pools[0].get()
	sum := sign(s, dst[start:mid], dst[mid+1:end], attrs, device, '0'+risk)
	if attrs {
		dst = append(dst, '.')
		dst = append(dst, device...)
		dst = append(dst, '~', '0'+risk)
	}
	dst = append(dst, '.')
	dst = base64.RawURLEncoding.AppendEncode(dst, sum)
	k.pools[0].put(s)
	return dst
}

// Verify checks tok at time nowUnix and returns its uid. It runs in constant time with
// respect to the signature and allocates nothing.
func (k *SessionKey) Verify(tok []byte, nowUnix int64) (uint64, error) {
	var s Session
	err := k.VerifySession(tok, nowUnix, &s)
	return s.UID, err
}

// VerifySession checks tok at time nowUnix and fills out with its uid and attributes
// (out.Device aliases tok). It runs in constant time with respect to the signature, tries
// each key of a rotation in turn, and allocates nothing.
func (k *SessionKey) VerifySession(tok []byte, nowUnix int64, out *Session) error {
	*out = Session{}
	if len(tok) > MaxSessionLen {
		return ErrSessionMalformed
	}
	i := bytes.IndexByte(tok, '.')
	if i < 0 {
		return ErrSessionMalformed
	}
	j := bytes.IndexByte(tok[i+1:], '.')
	if j < 0 {
		return ErrSessionMalformed
	}
	j += i + 1
	uidB, expB, sigB := tok[:i], tok[i+1:j], tok[j+1:]
	var device []byte
	risk := byte('0')
	attrs := false
	if a := bytes.IndexByte(sigB, '.'); a >= 0 {
		// <device>~<risk>.<sig>
		attrB := sigB[:a]
		sigB = sigB[a+1:]
		t := len(attrB) - 2
		if t < 0 || attrB[t] != '~' || attrB[t+1] < '0' || attrB[t+1] > '0'+MaxRisk || (t > 0 && !ValidDevice(attrB[:t])) {
			return ErrSessionMalformed
		}
		attrs, risk = true, attrB[t+1]
		if t > 0 {
			device = attrB[:t]
		}
	}
	uid, ok := ParseUint(uidB)
	if !ok {
		return ErrSessionMalformed
	}
	exp, ok := ParseUint(expB)
	if !ok || exp > 1<<62 || len(sigB) != sessionSigLen {
		return ErrSessionMalformed
	}
	var got [32]byte
	n, err := tokenEncoding.Decode(got[:], sigB)
	if err != nil || n != 32 {
		return ErrSessionMalformed
	}
	eq := false
	for _, p := range k.pools {
		s := p.get()
		want := sign(s, uidB, expB, attrs, device, risk)
		eq = subtle.ConstantTimeCompare(want, got[:]) == 1
		p.put(s)
		if eq {
			break
		}
	}
	if !eq {
		return ErrSessionForged
	}
	if int64(exp) <= nowUnix {
		return ErrSessionExpired
	}
	out.UID, out.Device, out.Risk = uid, device, risk-'0'
	return nil
}

// BearerToken extracts the token from an `Authorization: Bearer <token>` header value.
func BearerToken(h []byte) ([]byte, bool) {
	const p = "Bearer "
	if len(h) <= len(p) || !bytes.EqualFold(h[:len(p)], []byte(p)) {
		return nil, false
	}
	return bytes.TrimSpace(h[len(p):]), true
}
