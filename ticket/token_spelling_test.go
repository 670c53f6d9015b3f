package ticket

import "testing"

// TestTokenHasOneSpelling guards the strict decoder: changing only the unused low bits of
// the last character must not open.
func TestTokenHasOneSpelling(t *testing.T) {
	sk := NewKey()
	s, _ := NewSealer(sk, 0)
	o, _ := NewOpener([][]byte{sk})
	tok := s.Seal(nil, &TicketToken{Ticket: 1, UID: 2})
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	var tt TicketToken
	opened := 0
	for i := 0; i < len(alphabet); i++ {
		tok[len(tok)-1] = alphabet[i]
		if o.Open(&tt, tok, make([]byte, TokenRawLen)) == nil {
			opened++
		}
	}
	if opened != 1 {
		t.Fatalf("%d spellings of the last character open, want exactly 1", opened)
	}
}
