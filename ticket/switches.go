package ticket

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// The switches document (docs/switches.md): what an operator may
// change in a running event, the same document on every server, each acting on its own
// section. Parse is strict: an unknown field or an out-of-range value is refused with
// the field named, so a typo never silently does nothing.

// Limits of the switches document.
const (
	// MaxSwitchesBytes bounds a switches document on the wire and on disk.
	MaxSwitchesBytes = 64 << 10
	// MaxSwitchList bounds closed_rounds and revoked_shards.
	MaxSwitchList = 4096
	// MaxSwitchPerUser is the largest edge.per_user override (the edge's table counts
	// up to 4095 wins per user and round).
	MaxSwitchPerUser = 4095
	// MaxSwitchRetryAfterMs bounds edge.retry_after_ms (one hour).
	MaxSwitchRetryAfterMs = 3_600_000
	// MaxSwitchMessage bounds verifier.message, in bytes.
	MaxSwitchMessage = 256
	// MaxSwitchesVersion is the highest version a document may carry (2^53-1: every
	// JSON reader holds it exactly), far below where ctl's "one above the current" wraps.
	MaxSwitchesVersion = 1<<53 - 1
	// MaxSwitchesVersionStep is the most a PUT may raise the version above the current:
	// one stolen key cannot push a server's version out of the operator's reach in one
	// request (reaching MaxSwitchesVersion takes 2^33 of them).
	MaxSwitchesVersionStep = 1 << 20
	// adminTokenLabel is the HMAC message of the admin token.
	adminTokenLabel = "shake-admin-v1"
)

// Switches is the whole document.
type Switches struct {
	Version  uint64           `json:"version"`
	Edge     EdgeSwitches     `json:"edge"`
	Verifier VerifierSwitches `json:"verifier"`
	Settler  SettlerSwitches  `json:"settler"`
}

// EdgeSwitches is the edge's section.
type EdgeSwitches struct {
	Paused       bool    `json:"paused"`         // every shake answers closed
	ClosedRounds []int   `json:"closed_rounds"`  // these rounds answer closed
	PaceFactor   float64 `json:"pace_factor"`    // (0, 1]: scales the paced release
	ShedRatio    float64 `json:"shed_ratio"`     // [0, 1): this share of shakes gets 429 retry
	RetryAfterMs int64   `json:"retry_after_ms"` // the retry hint of a shed 429
	PerUser      *int    `json:"per_user"`       // nil: the shard's (or --per-user) rule
}

// VerifierSwitches is the verifier's section.
type VerifierSwitches struct {
	OpenPaused    bool   `json:"open_paused"`    // every open answers 503 with Message
	RevokedShards []int  `json:"revoked_shards"` // tokens sealed with these shards' keys: 422 revoked
	Message       string `json:"message"`        // shown to users while open_paused
}

// SettlerSwitches is the settler's section.
type SettlerSwitches struct {
	Paused bool `json:"paused"` // stop consuming; nothing is committed or skipped
}

// DefaultSwitches returns the document every server starts from without a file:
// version 0, nothing switched.
func DefaultSwitches() *Switches {
	return &Switches{
		Edge:     EdgeSwitches{ClosedRounds: []int{}, PaceFactor: 1, RetryAfterMs: 1000},
		Verifier: VerifierSwitches{RevokedShards: []int{}},
	}
}

// FieldError is a refused switches document: Field names the offending field
// ("edge.shed_ratio"), Reason says why.
type FieldError struct {
	Field  string
	Reason string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Reason }

// ErrSwitches is wrapped by every FieldError-free parse failure (not JSON at all).
var ErrSwitches = errors.New("bad switches document")

// ParseSwitches decodes and validates a document strictly. Absent fields take their
// defaults; an unknown field, a wrong type or an out-of-range value is a *FieldError.
// Lists come back sorted without duplicates.
func ParseSwitches(b []byte) (*Switches, error) {
	if len(b) > MaxSwitchesBytes {
		return nil, &FieldError{Field: "document", Reason: fmt.Sprintf("larger than %d bytes", MaxSwitchesBytes)}
	}
	top, err := object(b, "document")
	if err != nil {
		return nil, err
	}
	d := DefaultSwitches()
	for k, v := range top {
		switch k {
		case "version":
			if err = field(v, k, &d.Version); err == nil && d.Version > MaxSwitchesVersion {
				err = &FieldError{Field: k, Reason: fmt.Sprintf("%d is above the highest version %d (2^53-1)", d.Version, uint64(MaxSwitchesVersion))}
			}
		case "edge":
			err = d.Edge.parse(v)
		case "verifier":
			err = d.Verifier.parse(v)
		case "settler":
			err = d.Settler.parse(v)
		default:
			err = &FieldError{Field: k, Reason: "unknown field"}
		}
		if err != nil {
			return nil, err
		}
	}
	return d, nil
}

func (e *EdgeSwitches) parse(b []byte) error {
	m, err := object(b, "edge")
	if err != nil {
		return err
	}
	for k, v := range m {
		name := "edge." + k
		switch k {
		case "paused":
			err = field(v, name, &e.Paused)
		case "closed_rounds":
			e.ClosedRounds, err = intList(v, name, 0, math.MaxUint16)
		case "pace_factor":
			if err = field(v, name, &e.PaceFactor); err == nil && !(e.PaceFactor > 0 && e.PaceFactor <= 1) {
				err = &FieldError{Field: name, Reason: "must be in (0, 1]"}
			}
		case "shed_ratio":
			if err = field(v, name, &e.ShedRatio); err == nil && !(e.ShedRatio >= 0 && e.ShedRatio < 1) {
				err = &FieldError{Field: name, Reason: "must be in [0, 1)"}
			}
		case "retry_after_ms":
			if err = field(v, name, &e.RetryAfterMs); err == nil && (e.RetryAfterMs < 1 || e.RetryAfterMs > MaxSwitchRetryAfterMs) {
				err = &FieldError{Field: name, Reason: fmt.Sprintf("must be in 1..%d", MaxSwitchRetryAfterMs)}
			}
		case "per_user":
			e.PerUser = nil
			if !bytes.Equal(bytes.TrimSpace(v), []byte("null")) {
				var n int
				if err = field(v, name, &n); err == nil && (n < 0 || n > MaxSwitchPerUser) {
					err = &FieldError{Field: name, Reason: fmt.Sprintf("must be null or in 0..%d", MaxSwitchPerUser)}
				}
				e.PerUser = &n
			}
		default:
			err = &FieldError{Field: name, Reason: "unknown field"}
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (v *VerifierSwitches) parse(b []byte) error {
	m, err := object(b, "verifier")
	if err != nil {
		return err
	}
	for k, raw := range m {
		name := "verifier." + k
		switch k {
		case "open_paused":
			err = field(raw, name, &v.OpenPaused)
		case "revoked_shards":
			v.RevokedShards, err = intList(raw, name, 0, math.MaxUint16)
		case "message":
			if err = field(raw, name, &v.Message); err == nil {
				err = checkMessage(name, v.Message)
			}
		default:
			err = &FieldError{Field: name, Reason: "unknown field"}
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func (s *SettlerSwitches) parse(b []byte) error {
	m, err := object(b, "settler")
	if err != nil {
		return err
	}
	for k, raw := range m {
		name := "settler." + k
		switch k {
		case "paused":
			err = field(raw, name, &s.Paused)
		default:
			err = &FieldError{Field: name, Reason: "unknown field"}
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// checkMessage keeps the user-facing message short, valid UTF-8 and free of control
// characters (it is copied into every 503 while opens are paused).
func checkMessage(name, s string) error {
	if len(s) > MaxSwitchMessage {
		return &FieldError{Field: name, Reason: fmt.Sprintf("longer than %d bytes", MaxSwitchMessage)}
	}
	if !utf8.ValidString(s) || strings.ContainsRune(s, utf8.RuneError) {
		return &FieldError{Field: name, Reason: "not valid UTF-8"}
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return &FieldError{Field: name, Reason: "contains a control character"}
		}
	}
	return nil
}

// object decodes one JSON object into its raw members, refusing duplicates (which a
// plain map would silently resolve to the last one).
func object(b []byte, name string) (map[string]json.RawMessage, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	tok, err := dec.Token()
	if err != nil || tok != json.Delim('{') {
		return nil, &FieldError{Field: name, Reason: "must be a JSON object"}
	}
	m := make(map[string]json.RawMessage)
	for dec.More() {
		kt, err := dec.Token()
		if err != nil {
			return nil, &FieldError{Field: name, Reason: "malformed JSON"}
		}
		k := kt.(string)
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, &FieldError{Field: qualify(name, k), Reason: "malformed JSON"}
		}
		if _, dup := m[k]; dup {
			return nil, &FieldError{Field: qualify(name, k), Reason: "given twice"}
		}
		m[k] = v
	}
	if _, err := dec.Token(); err != nil {
		return nil, &FieldError{Field: name, Reason: "malformed JSON"}
	}
	if _, err := dec.Token(); err == nil {
		return nil, &FieldError{Field: name, Reason: "trailing data after the object"}
	}
	return m, nil
}

func qualify(parent, k string) string {
	if parent == "document" {
		return k
	}
	return parent + "." + k
}

// field decodes one member into dst (a bool, number or string), naming it on failure.
func field(raw []byte, name string, dst any) error {
	if bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
		return &FieldError{Field: name, Reason: "must not be null"}
	}
	if err := json.Unmarshal(raw, dst); err != nil {
		return &FieldError{Field: name, Reason: "wrong type or out of range: " + kindOf(dst)}
	}
	return nil
}

func kindOf(dst any) string {
	switch dst.(type) {
	case *bool:
		return "want true or false"
	case *string:
		return "want a string"
	case *uint64:
		return "want an integer >= 0"
	case *int, *int64:
		return "want an integer"
	default:
		return "want a number"
	}
}

// intList decodes a list of integers in [lo, hi], sorted, duplicates removed.
func intList(raw []byte, name string, lo, hi int) ([]int, error) {
	var l []int
	if err := json.Unmarshal(raw, &l); err != nil || l == nil {
		return nil, &FieldError{Field: name, Reason: "want a list of integers"}
	}
	if len(l) > MaxSwitchList {
		return nil, &FieldError{Field: name, Reason: fmt.Sprintf("more than %d entries", MaxSwitchList)}
	}
	for _, n := range l {
		if n < lo || n > hi {
			return nil, &FieldError{Field: name, Reason: fmt.Sprintf("entry %d outside %d..%d", n, lo, hi)}
		}
	}
	slices.Sort(l)
	return slices.Compact(l), nil
}

// JSON returns the document as one JSON object (lists never null).
func (d *Switches) JSON() []byte {
	c := *d
	if c.Edge.ClosedRounds == nil {
		c.Edge.ClosedRounds = []int{}
	}
	if c.Verifier.RevokedShards == nil {
		c.Verifier.RevokedShards = []int{}
	}
	b, err := json.Marshal(&c)
	if err != nil {
		panic("BUG: switches do not marshal: " + err.Error())
	}
	return b
}

// SwitchField is one switch of a flattened document: its key ("edge.shed_ratio") and
// its value as JSON.
type SwitchField struct {
	Key, Value string
}

// Fields flattens the document into its switches, in document order (version first).
func (d *Switches) Fields() []SwitchField {
	var top map[string]json.RawMessage
	_ = json.Unmarshal(d.JSON(), &top)
	out := []SwitchField{{Key: "version", Value: strconv.FormatUint(d.Version, 10)}}
	for _, sec := range []string{"edge", "verifier", "settler"} {
		keys := switchKeys[sec]
		var m map[string]json.RawMessage
		_ = json.Unmarshal(top[sec], &m)
		for _, k := range keys {
			out = append(out, SwitchField{Key: sec + "." + k, Value: string(m[k])})
		}
	}
	return out
}

// switchKeys are the keys of each section, in document order.
var switchKeys = map[string][]string{
	"edge":     {"paused", "closed_rounds", "pace_factor", "shed_ratio", "retry_after_ms", "per_user"},
	"verifier": {"open_paused", "revoked_shards", "message"},
	"settler":  {"paused"},
}

// Set changes one switch from its command-line spelling (shake ctl set KEY=VALUE):
// booleans and numbers as JSON, lists as "1,2,3" (or "" / "[]" for none), per_user as
// a number or "null", the message as plain text. The result is validated as a whole.
func (d *Switches) Set(key, value string) error {
	sec, k, ok := strings.Cut(key, ".")
	if !ok || !slices.Contains(switchKeys[sec], k) {
		return &FieldError{Field: key, Reason: "unknown switch (want one of " + strings.Join(SwitchKeys(), ", ") + ")"}
	}
	raw := value
	switch {
	case k == "message":
		q, _ := json.Marshal(value)
		raw = string(q)
	case k == "closed_rounds" || k == "revoked_shards":
		v := strings.TrimSpace(value)
		if !strings.HasPrefix(v, "[") {
			v = "[" + v + "]"
		}
		raw = v
	}
	var top map[string]json.RawMessage
	_ = json.Unmarshal(d.JSON(), &top)
	var m map[string]json.RawMessage
	_ = json.Unmarshal(top[sec], &m)
	if !json.Valid([]byte(raw)) {
		return &FieldError{Field: key, Reason: fmt.Sprintf("%q is not a valid value", value)}
	}
	m[k] = json.RawMessage(raw)
	b, _ := json.Marshal(m)
	top[sec] = b
	all, _ := json.Marshal(top)
	nd, err := ParseSwitches(all)
	if err != nil {
		return err
	}
	*d = *nd
	return nil
}

// SwitchKeys lists every switch key, "section.name".
func SwitchKeys() []string {
	var out []string
	for _, sec := range []string{"edge", "verifier", "settler"} {
		for _, k := range switchKeys[sec] {
			out = append(out, sec+"."+k)
		}
	}
	return out
}

// AdminToken is the bearer token of the admin listeners: base64url without padding of
// HMAC-SHA256(admin.key, "shake-admin-v1").
func AdminToken(adminKey []byte) string {
	m := hmac.New(sha256.New, adminKey)
	m.Write([]byte(adminTokenLabel))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// CheckAgainst refuses a document that names a round or a shard the campaign does not
// have (a typo while revoking a leaked key must not leave the key working): rounds is
// the campaign's number of rounds (a campaign without timed rounds has the one round
// 0), shards its number of shards; a negative count is not known to the caller and not
// checked. The error is a *FieldError naming the field.
func (d *Switches) CheckAgainst(rounds, shards int) error {
	if rounds >= 0 {
		rounds = max(rounds, 1)
		for _, r := range d.Edge.ClosedRounds {
			if r >= rounds {
				return &FieldError{Field: "edge.closed_rounds", Reason: fmt.Sprintf("round %d is not in the campaign (its rounds are 0..%d)", r, rounds-1)}
			}
		}
	}
	if shards >= 0 {
		for _, s := range d.Verifier.RevokedShards {
			if s >= shards {
				return &FieldError{Field: "verifier.revoked_shards", Reason: fmt.Sprintf("shard %d is not in the campaign (its shards are 0..%d)", s, shards-1)}
			}
		}
	}
	return nil
}
