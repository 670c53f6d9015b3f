package ticket

import (
	"errors"
	"fmt"
	"strconv"
)

// DefaultCurrency is the currency of a campaign that names none.
const DefaultCurrency = "CNY"

// MaxCampaignLen is the longest campaign id the contract allows (docs/cli.md, gen).
const MaxCampaignLen = 32

// MaxTicketAmount is the largest amount one ticket may carry, in minor units. Tickets store
// amounts as uint32; the bound keeps every sum of a shard far from int64 overflow.
const MaxTicketAmount = 1<<31 - 1

// ErrBadCampaign reports a campaign id that does not match [a-z0-9][a-z0-9-]{0,31}.
var ErrBadCampaign = errors.New("campaign id must match [a-z0-9][a-z0-9-]{0,31}")

// ValidCampaign reports whether s is a well-formed campaign id.
func ValidCampaign(s string) bool {
	if len(s) == 0 || len(s) > MaxCampaignLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case c == '-' && i > 0:
		default:
			return false
		}
	}
	return true
}

// CheckCampaign returns ErrBadCampaign (wrapped with the offending id) unless s is valid.
func CheckCampaign(s string) error {
	if !ValidCampaign(s) {
		return fmt.Errorf("%w: %q", ErrBadCampaign, s)
	}
	return nil
}

// ValidCurrency reports whether s looks like an ISO 4217 code (three upper-case letters).
func ValidCurrency(s string) bool {
	if len(s) != 3 {
		return false
	}
	for i := 0; i < 3; i++ {
		if s[i] < 'A' || s[i] > 'Z' {
			return false
		}
	}
	return true
}

// ParseUint parses a canonical decimal uint64 (no sign, no leading zeros, at most 20
// digits) without allocating. It is used for uids, ticket ids and unix times on the wire.
func ParseUint(b []byte) (uint64, bool) {
	if len(b) == 0 || len(b) > 20 || (len(b) > 1 && b[0] == '0') {
		return 0, false
	}
	var n uint64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		d := uint64(c - '0')
		if n > (1<<64-1-d)/10 {
			return 0, false
		}
		n = n*10 + d
	}
	return n, true
}

// ParseUintString is ParseUint for a string.
func ParseUintString(s string) (uint64, bool) {
	if len(s) == 0 || len(s) > 20 || (len(s) > 1 && s[0] == '0') {
		return 0, false
	}
	n, err := strconv.ParseUint(s, 10, 64)
	return n, err == nil
}
