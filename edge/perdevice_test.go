package edge

import (
	"bytes"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"shake/ticket"
)

// mintAttrs is "Bearer " and a session for uid with a device and a risk level.
func (f *fixture) mintAttrs(uid uint64, device string, risk uint8) string {
	var dev []byte
	if device != "" {
		dev = []byte(device)
	}
	return "Bearer " + string(f.sess.MintAttrs(nil, uid, time.Now().Add(time.Hour).Unix(), dev, risk))
}

func (f *fixture) shakeResult(t *testing.T, h fasthttp.RequestHandler, auth string) string {
	t.Helper()
	code, body, _ := do(h, "POST", "/v1/shake", auth, nil)
	if code != 200 {
		t.Fatalf("%d %s", code, body)
	}
	return decode(t, body).Result
}

// The device rule from the shard header: at most per_device wins per device per round,
// whatever the uids; other devices and sessions without a device are not counted; a
// refusal is an ordinary miss, counted by reason.
func TestPerDeviceRule(t *testing.T) {
	f := newFixture(t, shardSpec{count: 100, perDevice: 2})
	s := startEdge(t, f, func(c *Config) { c.PerDevice = PerDeviceFromShard })
	h := s.Handler()
	won := 0
	for uid := uint64(1); uid <= 10; uid++ {
		switch r := f.shakeResult(t, h, f.mintAttrs(uid, "farm-phone-1", 0)); r {
		case "won":
			won++
		case "miss":
		default:
			t.Fatalf("uid %d: %s", uid, r)
		}
	}
	if won != 2 {
		t.Fatalf("one device won %d times, per_device 2", won)
	}
	if r := f.shakeResult(t, h, f.mintAttrs(11, "other-phone", 0)); r != "won" {
		t.Fatalf("another device: %s", r)
	}
	for uid := uint64(20); uid < 25; uid++ {
		if r := f.shakeResult(t, h, "Bearer "+f.session(uid)); r != "won" {
			t.Fatalf("a session without a device: %s", r)
		}
	}
	if got := s.m.refusedDevice.Value(); got != 8 {
		t.Fatalf("refused per_device %d, want 8", got)
	}
	// The refused shakes left no per-user entry behind: those users can still win on
	// another device.
	if r := f.shakeResult(t, h, f.mintAttrs(3, "their-own-phone", 0)); r != "won" {
		t.Fatalf("a user refused for the farm's device, on their own: %s", r)
	}
	// --per-device overrides the header; 0 turns the rule off.
	f2 := newFixture(t, shardSpec{count: 100, perDevice: 2})
	s2 := startEdge(t, f2, func(c *Config) { c.PerDevice = 0 })
	for uid := uint64(1); uid <= 5; uid++ {
		if r := f2.shakeResult(t, s2.Handler(), f2.mintAttrs(uid, "farm-phone-1", 0)); r != "won" {
			t.Fatalf("no device rule: uid %d %s", uid, r)
		}
	}
}

// The risk policy: sessions above the campaign's max_risk get miss, counted by reason;
// at or below it they win.
func TestRiskPolicy(t *testing.T) {
	three := 3
	f := newFixture(t, shardSpec{count: 100, maxRisk: &three})
	s := startEdge(t, f, nil)
	h := s.Handler()
	for risk := uint8(0); risk <= ticket.MaxRisk; risk++ {
		want := "won"
		if risk > 3 {
			want = "miss"
		}
		if r := f.shakeResult(t, h, f.mintAttrs(uint64(100+risk), "", risk)); r != want {
			t.Errorf("risk %d: %s, want %s", risk, r, want)
		}
	}
	if got := s.m.refusedRisk.Value(); got != 6 {
		t.Fatalf("refused risk %d, want 6", got)
	}
	var b bytes.Buffer
	s.reg.WriteTo(&b)
	for _, want := range []string{`shake_edge_refused_total{reason="risk"} 6`, `shake_edge_refused_total{reason="per_device"} 0`, `shake_edge_refused_total{reason="per_user"} 0`} {
		if !bytes.Contains(b.Bytes(), []byte(want)) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

// A win with a device session under the device rule allocates nothing either.
func TestDeviceWinPathAllocatesNothing(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are not meaningful under -race (sync.Pool drops items)")
	}
	const n = 2000
	f := newFixture(t, shardSpec{count: n + 100, perDevice: 1})
	s := startEdge(t, f, func(c *Config) { c.PerDevice = PerDeviceFromShard })
	h := s.Handler()
	auths := make([][]byte, n+1)
	for i := range auths {
		auths[i] = []byte(f.mintAttrs(uint64(i+1), "device-"+strconv.Itoa(i), uint8(i%3)))
	}
	if a := winAllocs(t, h, auths); a != 0 {
		t.Fatalf("device win path: %.2f allocs per request", a)
	}
}

func BenchmarkPerDeviceAcquire(b *testing.B) {
	p := newPerUser(b.N+b.N/4+64, 1)
	devs := make([][]byte, 4096)
	for i := range devs {
		devs[i] = []byte(fmt.Sprintf("device-%016x", i*2654435761))
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		p.acquire(deviceKey(p.seed, devs[i%len(devs)])+uint64(i), 0)
	}
}
