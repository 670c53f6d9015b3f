package ticket

import (
	"errors"
	"strings"
	"testing"
)

func TestParseSwitchesDefaultsAndRoundTrip(t *testing.T) {
	d, err := ParseSwitches([]byte(`{"version":3}`))
	if err != nil {
		t.Fatal(err)
	}
	want := `{"version":3,"edge":{"paused":false,"closed_rounds":[],"pace_factor":1,"shed_ratio":0,"retry_after_ms":1000,"per_user":null},"verifier":{"open_paused":false,"revoked_shards":[],"message":""},"settler":{"paused":false}}`
	if got := string(d.JSON()); got != want {
		t.Fatalf("defaults:\n%s\nwant\n%s", got, want)
	}
	full := `{"version":7,"edge":{"paused":true,"closed_rounds":[3,1,3],"pace_factor":0.5,"shed_ratio":0.25,"retry_after_ms":2000,"per_user":2},` +
		`"verifier":{"open_paused":true,"revoked_shards":[4],"message":"稍后再试"},"settler":{"paused":true}}`
	d, err = ParseSwitches([]byte(full))
	if err != nil {
		t.Fatal(err)
	}
	if d.Edge.ClosedRounds[0] != 1 || len(d.Edge.ClosedRounds) != 2 || *d.Edge.PerUser != 2 || d.Verifier.Message != "稍后再试" {
		t.Fatalf("parsed %+v", d)
	}
	again, err := ParseSwitches(d.JSON())
	if err != nil || string(again.JSON()) != string(d.JSON()) {
		t.Fatalf("round trip: %v %s", err, again.JSON())
	}
}

func TestParseSwitchesRefusalsNameTheField(t *testing.T) {
	for _, c := range []struct{ doc, field string }{
		{`[]`, "document"},
		{`{"version":1,"x":1}`, "x"},
		{`{"version":-1}`, "version"},
		{`{"version":1.5}`, "version"},
		{`{"version":1,"version":2}`, "version"},
		{`{"edge":{"paused":1}}`, "edge.paused"},
		{`{"edge":{"paused":null}}`, "edge.paused"},
		{`{"edge":[]}`, "edge"},
		{`{"edge":{"closed_rounds":[70000]}}`, "edge.closed_rounds"},
		{`{"edge":{"closed_rounds":null}}`, "edge.closed_rounds"},
		{`{"edge":{"pace_factor":1.01}}`, "edge.pace_factor"},
		{`{"edge":{"pace_factor":-0.5}}`, "edge.pace_factor"},
		{`{"edge":{"shed_ratio":1}}`, "edge.shed_ratio"},
		{`{"edge":{"shed_ratio":-0.1}}`, "edge.shed_ratio"},
		{`{"edge":{"retry_after_ms":3600001}}`, "edge.retry_after_ms"},
		{`{"edge":{"per_user":4096}}`, "edge.per_user"},
		{`{"edge":{"per_user":"1"}}`, "edge.per_user"},
		{`{"edge":{"unknown":1}}`, "edge.unknown"},
		{`{"verifier":{"revoked_shards":[-1]}}`, "verifier.revoked_shards"},
		{`{"verifier":{"message":"` + strings.Repeat("x", MaxSwitchMessage+1) + `"}}`, "verifier.message"},
		{`{"verifier":{"message":"a\nb"}}`, "verifier.message"},
		{`{"verifier":{"message":"\ud800"}}`, "verifier.message"},
		{`{"settler":{"paused":true,"resume":true}}`, "settler.resume"},
		{`{"version":1} {}`, "document"},
	} {
		_, err := ParseSwitches([]byte(c.doc))
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Field != c.field {
			t.Errorf("%s: %v, want a FieldError naming %q", c.doc, err, c.field)
		}
	}
}

func TestSwitchesSet(t *testing.T) {
	d := DefaultSwitches()
	for _, kv := range [][2]string{
		{"edge.shed_ratio", "0.5"}, {"edge.closed_rounds", "2,0"}, {"edge.per_user", "3"},
		{"verifier.message", `back "soon"`}, {"verifier.revoked_shards", "[1]"}, {"settler.paused", "true"},
	} {
		if err := d.Set(kv[0], kv[1]); err != nil {
			t.Fatalf("Set(%s=%s): %v", kv[0], kv[1], err)
		}
	}
	if d.Edge.ShedRatio != 0.5 || len(d.Edge.ClosedRounds) != 2 || *d.Edge.PerUser != 3 || d.Verifier.Message != `back "soon"` ||
		d.Verifier.RevokedShards[0] != 1 || !d.Settler.Paused {
		t.Fatalf("after Set: %s", d.JSON())
	}
	if err := d.Set("edge.per_user", "null"); err != nil || d.Edge.PerUser != nil {
		t.Fatalf("per_user=null: %v", err)
	}
	if err := d.Set("edge.closed_rounds", ""); err != nil || len(d.Edge.ClosedRounds) != 0 {
		t.Fatalf("closed_rounds=: %v", err)
	}
	before := string(d.JSON())
	for _, kv := range [][2]string{{"edge.shed", "1"}, {"edge.shed_ratio", "2"}, {"edge.paused", "yes"}, {"version", "9"}} {
		var fe *FieldError
		if err := d.Set(kv[0], kv[1]); !errors.As(err, &fe) || !strings.HasPrefix(fe.Field, kv[0][:4]) {
			t.Errorf("Set(%s=%s): %v", kv[0], kv[1], err)
		}
	}
	if string(d.JSON()) != before {
		t.Error("a refused Set changed the document")
	}
}

func TestSwitchesFieldsCoverEveryKey(t *testing.T) {
	f := DefaultSwitches().Fields()
	if len(f) != 1+len(SwitchKeys()) {
		t.Fatalf("%d fields for %d keys", len(f), len(SwitchKeys()))
	}
	for i, k := range SwitchKeys() {
		if f[i+1].Key != k || f[i+1].Value == "" {
			t.Errorf("field %d: %+v, want key %s with a value", i+1, f[i+1], k)
		}
	}
}

func TestAdminToken(t *testing.T) {
	// HMAC-SHA256(32 zero bytes, "shake-admin-v1"), base64url without padding: a fixed
	// vector so that another implementation (a deploy script) can check itself.
	got := AdminToken(make([]byte, 32))
	if got != "QSLt4PXii3BAx1hgbXOQC5PcRkLVBuxB9c0dVqPbDh8" {
		t.Fatalf("token %q, want the vector computed independently (Python hmac)", got)
	}
	if AdminToken(make([]byte, 32)) != got || AdminToken(NewKey()) == got {
		t.Fatal("the token is not a function of the key")
	}
}

// FuzzParseSwitches: any input is accepted or refused with a FieldError, never a panic,
// and what is accepted survives its own JSON.
func FuzzParseSwitches(f *testing.F) {
	f.Add([]byte(`{"version":1,"edge":{"paused":true,"closed_rounds":[0]}}`))
	f.Add([]byte(`{"verifier":{"message":"x","revoked_shards":[1,2]},"settler":{"paused":false}}`))
	f.Add([]byte(`{"edge":{"per_user":null,"pace_factor":0.5}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := ParseSwitches(b)
		if err != nil {
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("not a FieldError: %v", err)
			}
			return
		}
		again, err := ParseSwitches(d.JSON())
		if err != nil || string(again.JSON()) != string(d.JSON()) {
			t.Fatalf("accepted %q but not its own JSON %s: %v", b, d.JSON(), err)
		}
	})
}
