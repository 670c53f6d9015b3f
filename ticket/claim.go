package ticket

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strconv"
	"time"
)

// ClaimVersion is the version ("v") of the claim message.
const ClaimVersion = 1

// MaxClaimLen bounds an encoded claim; consumers reject anything larger.
const MaxClaimLen = 1024

// wireTime is the RFC 3339 layout claims use: UTC, millisecond precision.
const wireTime = "2006-01-02T15:04:05.000Z07:00"

// Claim is the record the verifier makes durable in Kafka (key = ticket id) and the settler
// posts to the ledger. Its JSON is fixed by docs/formats.md; "mac" (the generator's ticket MAC,
// base64url) lets the settler re-check the amount with the MAC key, and "sig" (the
// verifier's ClaimSigner signature over every other field, base64url, always last) lets
// it refuse a claim that no verifier made. Times travel with millisecond precision, and
// ParseClaim truncates to it, so the signed value is exactly the one on the wire.
type Claim struct {
	Campaign string
	Ticket   uint64
	Shard    int
	Round    int
	Amount   int64
	Currency string
	UID      uint64
	IssuedAt time.Time
	OpenedAt time.Time
	MAC      [MACSize]byte
	// Sig is the verifier's signature (see ClaimSigner); zero when the claim carried none.
	Sig [ClaimSigSize]byte
}

// AppendJSON appends the claim's JSON to dst without allocating (given capacity).
func (c *Claim) AppendJSON(dst []byte) []byte {
	dst = append(dst, `{"v":1,"campaign":"`...)
	dst = append(dst, c.Campaign...) // campaign ids need no escaping
	dst = append(dst, `","ticket":"`...)
	dst = strconv.AppendUint(dst, c.Ticket, 10)
	dst = append(dst, `","shard":`...)
	dst = strconv.AppendInt(dst, int64(c.Shard), 10)
	dst = append(dst, `,"round":`...)
	dst = strconv.AppendInt(dst, int64(c.Round), 10)
	dst = append(dst, `,"amount":`...)
	dst = strconv.AppendInt(dst, c.Amount, 10)
	dst = append(dst, `,"currency":"`...)
	dst = append(dst, c.Currency...)
	dst = append(dst, `","uid":"`...)
	dst = strconv.AppendUint(dst, c.UID, 10)
	dst = append(dst, `","issued_at":"`...)
	dst = c.IssuedAt.UTC().AppendFormat(dst, wireTime)
	dst = append(dst, `","opened_at":"`...)
	dst = c.OpenedAt.UTC().AppendFormat(dst, wireTime)
	dst = append(dst, `","mac":"`...)
	dst = base64.RawURLEncoding.AppendEncode(dst, c.MAC[:])
	dst = append(dst, `","sig":"`...)
	dst = base64.RawURLEncoding.AppendEncode(dst, c.Sig[:])
	dst = append(dst, `"}`...)
	return dst
}

// AppendKey appends the Kafka message key (the decimal ticket id) to dst.
func (c *Claim) AppendKey(dst []byte) []byte { return strconv.AppendUint(dst, c.Ticket, 10) }

type wireClaim struct {
	V        *int    `json:"v"`
	Campaign string  `json:"campaign"`
	Ticket   string  `json:"ticket"`
	Shard    *int    `json:"shard"`
	Round    *int    `json:"round"`
	Amount   *int64  `json:"amount"`
	Currency string  `json:"currency"`
	UID      string  `json:"uid"`
	IssuedAt string  `json:"issued_at"`
	OpenedAt string  `json:"opened_at"`
	MAC      *string `json:"mac"`
	Sig      wireSig `json:"sig"`
}

// strictB64 is base64url without padding that refuses non-canonical trailing bits.
var strictB64 = base64.RawURLEncoding.Strict()

// wireSig decodes "sig" straight into its array: no string and no slice per claim.
type wireSig [ClaimSigSize]byte

// UnmarshalText decodes canonical base64url without padding of exactly ClaimSigSize bytes.
func (s *wireSig) UnmarshalText(b []byte) error {
	if base64.RawURLEncoding.EncodedLen(ClaimSigSize) != len(b) {
		return fmt.Errorf("bad sig")
	}
	if n, err := strictB64.Decode(s[:], b); err != nil || n != ClaimSigSize {
		return fmt.Errorf("bad sig")
	}
	return nil
}

// ParseClaim decodes and checks a claim message. It checks the form only; whether the claim
// agrees with the campaign's manifest is the settler's second check.
func ParseClaim(b []byte) (Claim, error) {
	var c Claim
	if len(b) > MaxClaimLen {
		return c, fmt.Errorf("claim larger than %d bytes", MaxClaimLen)
	}
	var w wireClaim
	if err := json.Unmarshal(b, &w); err != nil {
		return c, fmt.Errorf("claim is not JSON: %v", err)
	}
	if w.V == nil || *w.V != ClaimVersion {
		return c, fmt.Errorf("claim version missing or not %d", ClaimVersion)
	}
	if err := CheckCampaign(w.Campaign); err != nil {
		return c, err
	}
	var ok bool
	if c.Ticket, ok = ParseUintString(w.Ticket); !ok || c.Ticket == 0 {
		return c, fmt.Errorf("bad ticket id %q", w.Ticket)
	}
	if c.UID, ok = ParseUintString(w.UID); !ok {
		return c, fmt.Errorf("bad uid %q", w.UID)
	}
	if w.Shard == nil || *w.Shard < 0 || *w.Shard >= MaxShards || w.Round == nil || *w.Round < 0 || *w.Round >= 1<<16 {
		return c, fmt.Errorf("bad or missing shard/round")
	}
	if w.Amount == nil || *w.Amount < 0 || *w.Amount > MaxTicketAmount {
		return c, fmt.Errorf("bad or missing amount")
	}
	if !ValidCurrency(w.Currency) {
		return c, fmt.Errorf("bad currency %q", w.Currency)
	}
	var err error
	if c.IssuedAt, err = time.Parse(time.RFC3339, w.IssuedAt); err != nil {
		return c, fmt.Errorf("bad issued_at: %v", err)
	}
	if c.OpenedAt, err = time.Parse(time.RFC3339, w.OpenedAt); err != nil {
		return c, fmt.Errorf("bad opened_at: %v", err)
	}
	if w.MAC != nil {
		m, err := base64.RawURLEncoding.DecodeString(*w.MAC)
		if err != nil || len(m) != MACSize {
			return c, fmt.Errorf("bad mac")
		}
		copy(c.MAC[:], m)
	}
	c.Sig = w.Sig
	// The wire carries milliseconds and the signature covers them; anything finer would
	// be unsigned, so it is dropped here.
	c.IssuedAt = c.IssuedAt.Truncate(time.Millisecond)
	c.OpenedAt = c.OpenedAt.Truncate(time.Millisecond)
	c.Campaign, c.Currency = w.Campaign, w.Currency
	c.Shard, c.Round, c.Amount = *w.Shard, *w.Round, *w.Amount
	return c, nil
}

// HasMAC reports whether the claim carried a ticket MAC.
func (c *Claim) HasMAC() bool { return c.MAC != [MACSize]byte{} }

// HasSig reports whether the claim carried a verifier signature.
func (c *Claim) HasSig() bool { return c.Sig != [ClaimSigSize]byte{} }
