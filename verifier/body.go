package verifier

// MaxBodySize bounds the body of POST /v1/open. A token is ticket.TokenLen (88)
// characters; the rest leaves room for whitespace a client's JSON encoder may add.
const MaxBodySize = 512

// parseOpenBody extracts the token from a body of the form {"token":"..."} without
// allocating: the returned slice aliases b. JSON whitespace is allowed around every
// token. The token string must be free of escapes and control characters (a sealed
// token is base64url, which no JSON encoder escapes), and no other member is accepted:
// the endpoint takes one field, so anything else is a client bug worth a 400.
func parseOpenBody(b []byte) ([]byte, bool) {
	i := skipWS(b, 0)
	if i >= len(b) || b[i] != '{' {
		return nil, false
	}
	i = skipWS(b, i+1)
	const key = `"token"`
	if len(b)-i < len(key) || string(b[i:i+len(key)]) != key {
		return nil, false
	}
	i = skipWS(b, i+len(key))
	if i >= len(b) || b[i] != ':' {
		return nil, false
	}
	i = skipWS(b, i+1)
	if i >= len(b) || b[i] != '"' {
		return nil, false
	}
	i++
	start := i
	for i < len(b) && b[i] != '"' {
		if b[i] < 0x20 || b[i] == '\\' {
			return nil, false
		}
		i++
	}
	if i >= len(b) {
		return nil, false
	}
	tok := b[start:i]
	i = skipWS(b, i+1)
	if i >= len(b) || b[i] != '}' {
		return nil, false
	}
	if skipWS(b, i+1) != len(b) {
		return nil, false
	}
	return tok, true
}

func skipWS(b []byte, i int) int {
	for i < len(b) {
		switch b[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}
