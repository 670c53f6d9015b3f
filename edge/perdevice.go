package edge

import (
	"github.com/valyala/fasthttp"

	"shake/internal/obs"
	"shake/ticket"
)

// PerDeviceFromShard as Config.PerDevice takes the campaign's rule (per_device in the
// shard header, the CLI default).
const PerDeviceFromShard = -1

// The device rule and the risk policy. A session token may carry a device id and a risk
// level signed by the login or risk system (ticket.Session). The edge refuses, with the
// same "miss" any shaker gets, so a farm cannot tell it was detected:
//
//   - a session whose risk is above the campaign's max_risk (reason "risk");
//   - a win that would give one device more than PerDevice wins in a round on this edge
//     (reason "per_device").
//
// The device table is the per-user table (perUser) keyed by a keyed 64-bit hash of the
// device id instead of the uid: the same fixed size, lock-free, 0-allocation structure at
// the same cost. A session without a device is not counted by the device rule. The rule
// holds per edge: a device shaking at E edges can win E x PerDevice a round; claims carry
// the device so that what crosses it fleet-wide can be counted downstream.

// deviceKey hashes a device id into the table's 64-bit key: FNV-1a over the bytes from a
// per-edge random seed, then the splitmix finaliser. It allocates nothing.
func deviceKey(seed uint64, dev []byte) uint64 {
	h := seed ^ 0xcbf29ce484222325
	for _, c := range dev {
		h ^= uint64(c)
		h *= 0x100000001b3
	}
	return mix(h)
}

// setupTables builds the per-user table (perUser wins per user per round; 0: none) and
// the device table, both of Config.PerUserCapacity entries (default 1.25 x the shard's
// tickets), and applies the campaign's risk limit.
func (s *Server) setupTables(perUser int) {
	capacity := s.cfg.PerUserCapacity
	if capacity == 0 {
		capacity = int(min(max(s.hdr.Count+s.hdr.Count/4, 4096), maxPerUserCapacity))
	}
	if perUser > 0 {
		s.per = newPerUser(capacity, perUser)
	}
	s.maxRisk = uint8(ticket.RiskLimit(s.hdr.MaxRisk))
	limit := s.cfg.PerDevice
	if limit == PerDeviceFromShard {
		limit = s.hdr.PerDevice
		if limit > MaxPerUser {
			s.log.Warn("the campaign's per_device is above what the edge's table counts: no device rule on this edge",
				"per_device", limit, "max", MaxPerUser)
			limit = 0
		}
		s.cfg.PerDevice = limit
	}
	if limit > 0 {
		s.perDev = newPerUser(capacity, limit)
	}
}

// admit applies the risk policy, the per-user rule (per, nil: none) and the device rule
// to a shake in round index, counting a win in each table. On false it has answered the
// shake (miss) and counted nothing. devKey is what giveBack needs.
func (s *Server) admit(ctx *fasthttp.RequestCtx, sess *ticket.Session, index int, per *perUser) (devKey uint64, ok bool) {
	switch {
	case sess.Risk > s.maxRisk:
		s.m.refusedRisk.Inc()
	case per != nil && !per.acquire(sess.UID, index):
		s.m.refusedUser.Inc()
	default:
		if s.perDev == nil || len(sess.Device) == 0 {
			return 0, true
		}
		devKey = deviceKey(s.perDev.seed, sess.Device)
		if s.perDev.acquire(devKey, index) {
			return devKey, true
		}
		if per != nil {
			per.release(sess.UID, index)
		}
		s.m.refusedDevice.Inc()
	}
	s.m.miss.Inc()
	obs.WriteJSON(ctx, fasthttp.StatusOK, bodyMiss)
	return 0, false
}

// giveBack undoes admit's counting for a shake that did not win after all.
func (s *Server) giveBack(sess *ticket.Session, index int, per *perUser, devKey uint64) {
	if per != nil {
		per.release(sess.UID, index)
	}
	if s.perDev != nil && len(sess.Device) > 0 {
		s.perDev.release(devKey, index)
	}
}

// registerDeviceMetrics exports the refusals by reason and the device table.
func (s *Server) registerDeviceMetrics() {
	r := s.reg
	const name, help = "shake_edge_refused_total", "Shakes answered miss by a rule, by reason: per_user, per_device, risk (above the campaign's max_risk)."
	s.m.refusedUser = r.Counter(name, help, "reason", "per_user")
	s.m.refusedDevice = r.Counter(name, help, "reason", "per_device")
	s.m.refusedRisk = r.Counter(name, help, "reason", "risk")
	if p := s.perDev; p != nil {
		r.GaugeFunc("shake_edge_per_device_entries", "Occupied (device, round) entries of the per-device table.", func() float64 { return float64(p.used.Load()) })
		r.CounterFunc("shake_edge_per_device_full_total", "Shakes answered miss because the per-device table had no room.", func() float64 { return float64(p.full.Load()) })
	}
}
