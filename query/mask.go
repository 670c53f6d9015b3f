package query

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
