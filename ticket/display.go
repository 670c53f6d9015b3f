package ticket

import "strconv"

// FormatAmount formats an amount in minor units for people, with two decimals,
// thousands separators and the currency: "¥4,334.56" for CNY, "1,200.00 USD" for any
// other code. Every report and summary the project prints uses it, so one page never
// mixes yuan and fen.
func FormatAmount(amountMinor int64, currency string) string {
	b := make([]byte, 0, 32)
	neg := amountMinor < 0
	u := uint64(amountMinor)
	if neg {
		b = append(b, '-')
		u = -u
	}
	if currency == "CNY" {
		b = append(b, "¥"...)
	}
	whole := strconv.FormatUint(u/100, 10)
	for i := range len(whole) {
		if i > 0 && (len(whole)-i)%3 == 0 {
			b = append(b, ',')
		}
		b = append(b, whole[i])
	}
	frac := u % 100
	b = append(b, '.', byte('0'+frac/10), byte('0'+frac%10))
	if currency != "CNY" && currency != "" {
		b = append(b, ' ')
		b = append(b, currency...)
	}
	return string(b)
}

// MaskUID appends the public form of a uid to dst. The rule: a uid of six digits or
// more shows its first two and last two digits around four stars ("13****89"); a
// shorter one shows only its last digit after four stars ("****7"). Four stars
// whatever the length, so the mask does not tell how long the uid is beyond "short or
// not", and at most four of its digits are ever shown. Anything that is not a plain
// run of digits (a corrupt ledger row) is shown as four stars alone.
func MaskUID(dst []byte, uid string) []byte {
	for i := 0; i < len(uid); i++ {
		if uid[i] < '0' || uid[i] > '9' {
			return append(dst, "****"...)
		}
	}
	switch n := len(uid); {
	case n >= 6:
		dst = append(dst, uid[:2]...)
		dst = append(dst, "****"...)
		return append(dst, uid[n-2:]...)
	case n >= 1:
		dst = append(dst, "****"...)
		return append(dst, uid[n-1:]...)
	}
	return append(dst, "****"...)
}
