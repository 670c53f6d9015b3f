package api

import (
	"encoding/hex"
	"encoding/json"
	"os"
	"strconv"
	"testing"

	"shake/ticket"
)

// TestSessionVectors: the vectors (computed by an independent implementation, see
// README) are exactly what ticket.SessionKey mints, and Verify accepts the valid ones
// and refuses the others at their time.
func TestSessionVectors(t *testing.T) {
	b, err := os.ReadFile("testdata/session_vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Vectors []struct {
			KeyHex  string `json:"key_hex"`
			UID     string `json:"uid"`
			Expires int64  `json:"expires"`
			Now     int64  `json:"now"`
			Token   string `json:"token"`
			Valid   bool   `json:"valid"`
			Reason  string `json:"reason"`
		} `json:"vectors"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	var valid, invalid int
	for i, v := range doc.Vectors {
		key, err := hex.DecodeString(v.KeyHex)
		if err != nil {
			t.Fatalf("vector %d: %v", i, err)
		}
		k, err := ticket.NewSessionKey(key)
		if err != nil {
			t.Fatalf("vector %d: %v", i, err)
		}
		uid, verr := k.Verify([]byte(v.Token), v.Now)
		if v.Valid {
			valid++
			want, err := strconv.ParseUint(v.UID, 10, 64)
			if err != nil {
				t.Fatalf("vector %d: uid %q", i, v.UID)
			}
			if got := string(k.Mint(nil, want, v.Expires)); got != v.Token {
				t.Errorf("vector %d: Mint = %s, want %s", i, got, v.Token)
			}
			if verr != nil || uid != want {
				t.Errorf("vector %d: Verify = %d, %v; want %d", i, uid, verr, want)
			}
			continue
		}
		invalid++
		if verr == nil {
			t.Errorf("vector %d (%s): accepted as uid %d", i, v.Reason, uid)
		}
	}
	if valid < 3 || invalid < 3 {
		t.Fatalf("%d valid and %d invalid vectors: the file lost its cases", valid, invalid)
	}
}
