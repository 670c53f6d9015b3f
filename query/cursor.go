package query

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"hash"
	"sync"

	"shake/ticket"
)

// The paging cursor is opaque to clients:
//
//	base64url(version 1 | settled_at int64 | ticket uint64 | len u8 | campaign | mac[12])
//
// where mac is HMAC-SHA256(cursor key, everything before it | uid u64 | len u8 | the
// campaign filter)[:12] and the cursor key is HMAC-SHA256(session.key,
// "shake-query-cursor-v1"). The MAC binds a cursor to the user and the filter it was
// issued for, so a cursor is either one this service issued for this very listing or a
// 400: nothing a client invents reaches the database. Every query server holding the
// same session.key accepts every other's cursors.
const (
	cursorVersion = 1
	cursorMACLen  = 12
	cursorLabel   = "shake-query-cursor-v1"
	// maxCursorRaw is the longest decoded cursor: a 32-byte campaign id.
	maxCursorRaw = 1 + 8 + 8 + 1 + ticket.MaxCampaignLen + cursorMACLen
	// MaxCursorLen is the longest cursor text (base64url without padding).
	MaxCursorLen = (maxCursorRaw*8 + 5) / 6
)

// ErrBadCursor reports a cursor this service did not issue for this user and filter.
var ErrBadCursor = errors.New("bad cursor")

var cursorEncoding = base64.RawURLEncoding.Strict()

// cursorKey signs and checks cursors. Its hash states and scratch buffers are pooled
// together: bytes written through the hash.Hash interface escape, so buffers on the
// stack would cost an allocation per page.
type cursorKey struct{ pool sync.Pool }

type cursorState struct {
	h    hash.Hash
	raw  [maxCursorRaw + 3]byte
	tail [8 + 1 + ticket.MaxCampaignLen]byte
	sum  [sha256.Size]byte
}

func newCursorKey(sessionKey []byte) *cursorKey {
	m := hmac.New(sha256.New, sessionKey)
	m.Write([]byte(cursorLabel))
	k := m.Sum(nil)
	ck := &cursorKey{}
	ck.pool.New = func() any { return &cursorState{h: hmac.New(sha256.New, k)} }
	return ck
}

// mac computes into st.sum the cursor MAC of st.raw[:n] (the cursor before its MAC)
// for uid and filter.
func (st *cursorState) mac(n int, uid uint64, filter string) {
	st.h.Reset()
	st.h.Write(st.raw[:n])
	binary.BigEndian.PutUint64(st.tail[:8], uid)
	st.tail[8] = byte(len(filter))
	t := 9 + copy(st.tail[9:], filter)
	st.h.Write(st.tail[:t])
	st.h.Sum(st.sum[:0])
}

// appendCursor appends the cursor for pos, issued to uid for filter, to dst.
func (k *cursorKey) appendCursor(dst []byte, pos *Position, uid uint64, filter string) []byte {
	st := k.pool.Get().(*cursorState)
	raw := st.raw[:]
	raw[0] = cursorVersion
	binary.BigEndian.PutUint64(raw[1:], uint64(pos.SettledAt))
	binary.BigEndian.PutUint64(raw[9:], pos.Ticket)
	raw[17] = byte(len(pos.Campaign))
	n := 18 + copy(raw[18:18+ticket.MaxCampaignLen], pos.Campaign)
	st.mac(n, uid, filter)
	n += copy(raw[n:], st.sum[:cursorMACLen])
	dst = cursorEncoding.AppendEncode(dst, raw[:n])
	k.pool.Put(st)
	return dst
}

// parseCursor checks that text is a cursor issued to uid for filter and returns its
// position; anything else is ErrBadCursor.
func (k *cursorKey) parseCursor(text []byte, uid uint64, filter string) (Position, error) {
	if len(text) == 0 || len(text) > MaxCursorLen {
		return Position{}, ErrBadCursor
	}
	st := k.pool.Get().(*cursorState)
	defer k.pool.Put(st)
	raw := st.raw[:]
	n, err := cursorEncoding.Decode(raw, text)
	if err != nil || n < 18+1+cursorMACLen || raw[0] != cursorVersion {
		return Position{}, ErrBadCursor
	}
	cl := int(raw[17])
	if cl < 1 || cl > ticket.MaxCampaignLen || n != 18+cl+cursorMACLen {
		return Position{}, ErrBadCursor
	}
	var got [cursorMACLen]byte
	copy(got[:], raw[18+cl:n])
	st.mac(18+cl, uid, filter)
	if !hmac.Equal(st.sum[:cursorMACLen], got[:]) {
		return Position{}, ErrBadCursor
	}
	pos := Position{
		SettledAt: int64(binary.BigEndian.Uint64(raw[1:])),
		Ticket:    binary.BigEndian.Uint64(raw[9:]),
		Campaign:  string(raw[18 : 18+cl]),
	}
	// A MAC'd cursor was issued by a server with our key; check anyway that it names a
	// real position, so a bug elsewhere cannot turn into a strange query.
	if pos.SettledAt < 0 || pos.Ticket == 0 || pos.Ticket > 1<<63-1 || !ticket.ValidCampaign(pos.Campaign) {
		return Position{}, ErrBadCursor
	}
	return pos, nil
}
