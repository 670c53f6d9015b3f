package query

import "shake/ticket"

// MaskUID appends the public form of a uid to dst: ticket.MaskUID, the one rule every
// page that shows other people's uids follows.
func MaskUID(dst []byte, uid string) []byte { return ticket.MaskUID(dst, uid) }
