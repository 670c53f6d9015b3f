package bench

import (
	"bytes"
	"testing"
)

func TestJSONField(t *testing.T) {
	tests := []struct {
		body, key string
		want      string
		ok        bool
	}{
		{`{"result":"won","token":"abc"}`, `"result"`, "won", true},
		{`{"result":"won","token":"abc"}`, `"token"`, "abc", true},
		{`{ "result" : "miss" }`, `"result"`, "miss", true},
		{`{"result":"retry","retry_after_ms":250}`, `"retry_after_ms"`, "250", true},
		{`{"retry_after_ms": 7 }`, `"retry_after_ms"`, "7", true},
		{`{"next_round_at":null}`, `"next_round_at"`, "null", true},
		{`{"error":"result","result":"x"}`, `"result"`, "x", true}, // key text as a value first
		{`{"result":"a\"b"}`, `"result"`, "", false},               // escapes are refused
		{`{"result":"unterminated`, `"result"`, "", false},
		{`{"result":}`, `"result"`, "", false},
		{`{"result"`, `"result"`, "", false},
		{`{"other":"won"}`, `"result"`, "", false},
		{``, `"result"`, "", false},
	}
	for _, tc := range tests {
		got, ok := jsonField([]byte(tc.body), []byte(tc.key))
		if ok != tc.ok || string(got) != tc.want {
			t.Errorf("jsonField(%s, %s) = %q, %v; want %q, %v", tc.body, tc.key, got, ok, tc.want, tc.ok)
		}
	}
}

func TestParseInt(t *testing.T) {
	for s, want := range map[string]int64{"0": 0, "7": 7, "123456789012345678": 123456789012345678} {
		if got, ok := parseInt([]byte(s)); !ok || got != want {
			t.Errorf("parseInt(%q) = %d, %v", s, got, ok)
		}
	}
	for _, s := range []string{"", "-1", "1.5", "1234567890123456789", "x"} {
		if _, ok := parseInt([]byte(s)); ok {
			t.Errorf("parseInt(%q) accepted", s)
		}
	}
}

func FuzzJSONField(f *testing.F) {
	f.Add([]byte(`{"result":"won","token":"abc","expires_at":"2026-01-01T00:00:00Z"}`), []byte(`"token"`))
	f.Add([]byte(`{"result":"retry","retry_after_ms":250}`), []byte(`"retry_after_ms"`))
	f.Fuzz(func(t *testing.T, body, key []byte) {
		v, ok := jsonField(body, key)
		if !ok {
			return
		}
		// Whatever is returned lies inside the body and never holds an escape or a quote.
		if len(v) > len(body) || bytes.IndexByte(v, '"') >= 0 || bytes.IndexByte(v, '\\') >= 0 {
			t.Fatalf("jsonField(%q, %q) = %q", body, key, v)
		}
	})
}

// Every error code of the verifier's documented answers is counted under its own name; the
// revoked_shards switch's 422 "revoked" was counted as http_error before.
func TestErrorKindSpecCodes(t *testing.T) {
	for _, code := range []string{"unauthorized", "not_your_ticket", "expired", "invalid_token", "already_opened",
		"bad_request", "unavailable", "limit_reached", "misdirected", "revoked"} {
		if k := errorKind([]byte(code)); k == errHTTP || errorNames[k] != code {
			t.Errorf("errorKind(%q) = %q, want its own kind", code, errorNames[k])
		}
	}
	if k := errorKind([]byte("no_such_code")); k != errHTTP {
		t.Errorf("an unknown code counts as %q, want http_error", errorNames[k])
	}
}
