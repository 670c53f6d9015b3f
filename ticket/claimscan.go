package ticket

import (
	"bytes"
	"encoding/base64"
	"time"
)

// ScanClaim decodes a claim written exactly as AppendJSON writes it (fixed field order,
// no white space, UTC times with milliseconds) into c, and reports whether it could.
// Whatever it accepts, ParseClaim accepts with the same result; anything else (another
// spelling of the same JSON, or no claim at all) is false, and the caller falls back on
// ParseClaim. It is for readers of many claims at once (a verifier rebuilding from the
// whole topic at start), where encoding/json costs ten times the rest of the check.
func ScanClaim(b []byte, c *Claim) bool {
	if len(b) > MaxClaimLen {
		return false
	}
	s := claimScanner{b: b}
	var campaign, ticket, currency, uid, issued, opened, mac, sig []byte
	var shard, round, amount uint64
	ok := s.lit(`{"v":1,"campaign":"`) && s.str(&campaign) &&
		s.lit(`","ticket":"`) && s.str(&ticket) &&
		s.lit(`","shard":`) && s.num(&shard) &&
		s.lit(`,"round":`) && s.num(&round) &&
		s.lit(`,"amount":`) && s.num(&amount) &&
		s.lit(`,"currency":"`) && s.str(&currency) &&
		s.lit(`","uid":"`) && s.str(&uid) &&
		s.lit(`","issued_at":"`) && s.str(&issued) &&
		s.lit(`","opened_at":"`) && s.str(&opened) &&
		s.lit(`","mac":"`) && s.str(&mac)
	if !ok {
		return false
	}
	// "sig" is last when present; a claim made before signatures has none.
	if s.lit(`","sig":"`) {
		if !s.str(&sig) {
			return false
		}
	}
	if !s.lit(`"}`) || s.i != len(b) {
		return false
	}
	if !ValidCurrency(string(currency)) || shard >= MaxShards || round >= 1<<16 || amount > MaxTicketAmount {
		return false
	}
	var n Claim
	var good bool
	if n.Ticket, good = parseCanonicalUint(ticket); !good || n.Ticket == 0 {
		return false
	}
	if n.UID, good = parseCanonicalUint(uid); !good {
		return false
	}
	if n.IssuedAt, good = scanWireTime(issued); !good {
		return false
	}
	if n.OpenedAt, good = scanWireTime(opened); !good {
		return false
	}
	if !decodeFixed(n.MAC[:], mac) || sig != nil && !decodeFixed(n.Sig[:], sig) {
		return false
	}
	n.Campaign = string(campaign)
	if CheckCampaign(n.Campaign) != nil {
		return false
	}
	if string(currency) == "CNY" {
		n.Currency = "CNY" // no allocation for the usual currency
	} else {
		n.Currency = string(currency)
	}
	n.Shard, n.Round, n.Amount = int(shard), int(round), int64(amount)
	*c = n
	return true
}

type claimScanner struct {
	b []byte
	i int
}

// lit consumes the literal l.
func (s *claimScanner) lit(l string) bool {
	if len(s.b)-s.i < len(l) || string(s.b[s.i:s.i+len(l)]) != l {
		return false
	}
	s.i += len(l)
	return true
}

// str consumes the inside of a JSON string up to its closing quote (not consumed). A
// backslash or a control character means another spelling: false.
func (s *claimScanner) str(out *[]byte) bool {
	j := bytes.IndexByte(s.b[s.i:], '"')
	if j < 0 {
		return false
	}
	v := s.b[s.i : s.i+j]
	for _, ch := range v {
		if ch == '\\' || ch < 0x20 || ch >= 0x80 {
			return false
		}
	}
	*out = v
	s.i += j
	return true
}

// num consumes a JSON number that is a canonical decimal uint64.
func (s *claimScanner) num(out *uint64) bool {
	j := s.i
	for j < len(s.b) && s.b[j] >= '0' && s.b[j] <= '9' {
		j++
	}
	v, ok := parseCanonicalUint(s.b[s.i:j])
	if !ok {
		return false
	}
	*out = v
	s.i = j
	return true
}

// parseCanonicalUint is ParseUintString on bytes.
func parseCanonicalUint(b []byte) (uint64, bool) {
	if len(b) == 0 || len(b) > 20 || (len(b) > 1 && b[0] == '0') {
		return 0, false
	}
	var n uint64
	for _, ch := range b {
		if ch < '0' || ch > '9' {
			return 0, false
		}
		d := uint64(ch - '0')
		if n > (1<<64-1-d)/10 {
			return 0, false
		}
		n = n*10 + d
	}
	return n, true
}

// decodeFixed decodes base64url (no padding) into exactly len(dst) bytes, as
// base64.RawURLEncoding.DecodeString does.
func decodeFixed(dst, src []byte) bool {
	if base64.RawURLEncoding.DecodedLen(len(src)) != len(dst) {
		return false
	}
	n, err := base64.RawURLEncoding.Decode(dst, src)
	return err == nil && n == len(dst)
}

// scanWireTime parses "2006-01-02T15:04:05.000Z", the form AppendJSON writes.
func scanWireTime(b []byte) (time.Time, bool) {
	if len(b) != len("2006-01-02T15:04:05.000Z") || b[4] != '-' || b[7] != '-' || b[10] != 'T' ||
		b[13] != ':' || b[16] != ':' || b[19] != '.' || b[23] != 'Z' {
		return time.Time{}, false
	}
	d := func(from, to int) (int, bool) {
		n := 0
		for _, ch := range b[from:to] {
			if ch < '0' || ch > '9' {
				return 0, false
			}
			n = n*10 + int(ch-'0')
		}
		return n, true
	}
	y, ok1 := d(0, 4)
	mo, ok2 := d(5, 7)
	dd, ok3 := d(8, 10)
	h, ok4 := d(11, 13)
	mi, ok5 := d(14, 16)
	sec, ok6 := d(17, 19)
	ms, ok7 := d(20, 23)
	if !(ok1 && ok2 && ok3 && ok4 && ok5 && ok6 && ok7) || mo < 1 || mo > 12 || h > 23 || mi > 59 || sec > 59 {
		return time.Time{}, false
	}
	t := time.Date(y, time.Month(mo), dd, h, mi, sec, ms*int(time.Millisecond), time.UTC)
	// time.Date normalises the 31st of a 30-day month into the next month: such a day
	// is not a date, and time.Parse refuses it too.
	if t.Day() != dd || int(t.Month()) != mo {
		return time.Time{}, false
	}
	return t, true
}
