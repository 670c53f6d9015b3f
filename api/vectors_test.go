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
// docs/sessions.md) are exactly what ticket.SessionKey mints, with and without the device
// and risk attributes, and VerifySession accepts the valid ones with their attributes and
// refuses the others at their time.
func TestSessionVectors(t *testing.T) {
	b, err := os.ReadFile("testdata/session_vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Vectors []struct {
			KeyHex  string  `json:"key_hex"`
			UID     string  `json:"uid"`
			Expires int64   `json:"expires"`
			Now     int64   `json:"now"`
			Device  *string `json:"device"`
			Risk    *int    `json:"risk"`
			Token   string  `json:"token"`
			Valid   bool    `json:"valid"`
			Reason  string  `json:"reason"`
		} `json:"vectors"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	var valid, invalid, attrs int
	for i, v := range doc.Vectors {
		key, err := hex.DecodeString(v.KeyHex)
		if err != nil {
			t.Fatalf("vector %d: %v", i, err)
		}
		k, err := ticket.NewSessionKey(key)
		if err != nil {
			t.Fatalf("vector %d: %v", i, err)
		}
		var s ticket.Session
		verr := k.VerifySession([]byte(v.Token), v.Now, &s)
		uid := s.UID
		if v.Valid {
			valid++
			want, err := strconv.ParseUint(v.UID, 10, 64)
			if err != nil {
				t.Fatalf("vector %d: uid %q", i, v.UID)
			}
			var device []byte
			var risk uint8
			if v.Device != nil && *v.Device != "" {
				device = []byte(*v.Device)
			}
			if v.Risk != nil {
				risk = uint8(*v.Risk)
				attrs++
			}
			if got := string(k.MintAttrs(nil, want, v.Expires, device, risk)); got != v.Token {
				t.Errorf("vector %d: Mint = %s, want %s", i, got, v.Token)
			}
			if verr != nil || uid != want || string(s.Device) != string(device) || s.Risk != risk {
				t.Errorf("vector %d: Verify = %d %q %d, %v; want %d %q %d", i, uid, s.Device, s.Risk, verr, want, device, risk)
			}
			continue
		}
		invalid++
		if verr == nil {
			t.Errorf("vector %d (%s): accepted as uid %d", i, v.Reason, uid)
		}
	}
	if valid < 3 || invalid < 3 || attrs < 3 {
		t.Fatalf("%d valid (%d with attributes) and %d invalid vectors: the file lost its cases", valid, attrs, invalid)
	}
}
