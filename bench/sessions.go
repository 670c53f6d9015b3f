package bench

import (
	"fmt"
	"time"

	"shake/ticket"
)

// mintSessions mints every user's session token once, valid well past the run.
func (r *runner) mintSessions() error {
	sk, err := ticket.NewSessionKey(r.cfg.SessionKey)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrConfig, err)
	}
	exp := r.cfg.Now().Add(r.cfg.Duration + r.cfg.Think + time.Hour).Unix()
	n := r.cfg.Users
	if f := r.cfg.Farm; f != nil {
		// The farm's accounts follow the users, each session naming its device.
		r.farm = &farmState{cfg: *f, first: uint64(n) + 1}
		n += f.Accounts
	}
	r.sessions = make([]byte, 0, n*64)
	r.sessOff = make([]uint32, n+1)
	var dev []byte
	for uid := 1; uid <= n; uid++ {
		if r.isFarm(uint64(uid)) {
			dev = farmDevice(dev, uid-r.cfg.Users-1, r.farm.cfg.Devices)
			r.sessions = sk.MintAttrs(r.sessions, uint64(uid), exp, dev, 0)
		} else {
			r.sessions = sk.Mint(r.sessions, uint64(uid), exp)
		}
		r.sessOff[uid] = uint32(len(r.sessions))
	}
	return nil
}

func (r *runner) session(uid uint64) []byte {
	return r.sessions[r.sessOff[uid-1]:r.sessOff[uid]]
}
