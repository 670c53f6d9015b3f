package bench

import "bytes"

// The bench reads the few fields it needs from the servers' small, flat JSON answers
// by scanning, so classifying a response allocates nothing. It is not a JSON parser: it
// finds the first occurrence of "key" followed by a colon and returns the value's raw
// bytes (a string's content without quotes, or a bare number/literal).

var (
	keyResult       = []byte(`"result"`)
	keyToken        = []byte(`"token"`)
	keyError        = []byte(`"error"`)
	keyRetryAfterMS = []byte(`"retry_after_ms"`)
	keyTicket       = []byte(`"ticket"`)
	keyAmount       = []byte(`"amount"`)
	keyCampaign     = []byte(`"campaign"`)
	keyUID          = []byte(`"uid"`)
)

// jsonField returns the raw value of key (given with its quotes) in a flat JSON object,
// and whether it was found and well-formed. A string value must not contain escapes.
func jsonField(body, key []byte) ([]byte, bool) {
	for off := 0; off < len(body); {
		i := bytes.Index(body[off:], key)
		if i < 0 {
			return nil, false
		}
		j := off + i + len(key)
		off = j
		for j < len(body) && isSpace(body[j]) {
			j++
		}
		if j >= len(body) || body[j] != ':' {
			continue // the key text appeared as a value, keep looking
		}
		j++
		for j < len(body) && isSpace(body[j]) {
			j++
		}
		if j >= len(body) {
			return nil, false
		}
		if body[j] == '"' {
			k := bytes.IndexByte(body[j+1:], '"')
			if k < 0 {
				return nil, false
			}
			v := body[j+1 : j+1+k]
			if bytes.IndexByte(v, '\\') >= 0 {
				return nil, false
			}
			return v, true
		}
		k := j
		for k < len(body) && body[k] != ',' && body[k] != '}' && !isSpace(body[k]) {
			k++
		}
		if k == j {
			return nil, false
		}
		return body[j:k], true
	}
	return nil, false
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// parseInt parses a non-negative decimal integer of at most 18 digits.
func parseInt(b []byte) (int64, bool) {
	if len(b) == 0 || len(b) > 18 {
		return 0, false
	}
	var n int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}
