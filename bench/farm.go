package bench

import (
	"fmt"
	"html"
	"io"
	"sync/atomic"
	"time"
)

// Farm is a red-packet farm: Accounts accounts on Devices devices (account k on device
// k mod Devices), each session token naming its device. Every Every it shakes once with
// every account, in the same order and at the same moment each time (bots have a fixed
// rank and latency, unlike people), for the whole run. Its accounts are uids
// Users+1..Users+Accounts.
type Farm struct {
	Accounts int
	Devices  int
	// Every is the period of the farm's waves; default DefaultFarmEvery.
	Every time.Duration
}

// DefaultFarmEvery is the period of a farm's waves: every account shakes once a second.
const DefaultFarmEvery = time.Second

// MaxFarmAccounts bounds a farm's accounts (they are minted sessions, like the users).
const MaxFarmAccounts = 1 << 20

// FarmResult is what the farm got: its shakes, the tickets it won and opened, and its
// share of all the tickets won and of all the money opened.
type FarmResult struct {
	Accounts int   `json:"accounts"`
	Devices  int   `json:"devices"`
	Shakes   int64 `json:"shakes"`
	Won      int64 `json:"won"`
	// Opened and Amount count the farm's opened tickets and their money (0 without a
	// verifier).
	Opened int64 `json:"opened"`
	Amount int64 `json:"amount"`
	// TicketShare is Won over every ticket won in the run; MoneyShare Amount over every
	// amount opened (0 when nothing was opened).
	TicketShare float64 `json:"ticket_share"`
	MoneyShare  float64 `json:"money_share"`
}

// farmState is the farm of a run in progress.
type farmState struct {
	cfg                          Farm
	first                        uint64 // the first account's uid
	nextAt                       time.Duration
	shakes, won, opened, amounts atomic.Int64
}

func (f *Farm) check() error {
	if f.Every == 0 {
		f.Every = DefaultFarmEvery
	}
	switch {
	case f.Accounts < 1 || f.Accounts > MaxFarmAccounts:
		return fmt.Errorf("%w: farm accounts must be in 1..%d", ErrConfig, MaxFarmAccounts)
	case f.Devices < 1 || f.Devices > f.Accounts:
		return fmt.Errorf("%w: farm devices must be in 1..accounts", ErrConfig)
	case f.Every < time.Millisecond:
		return fmt.Errorf("%w: farm period must be at least 1ms", ErrConfig)
	}
	return nil
}

// farmDevice is the device id of farm account k (0-based).
func farmDevice(dst []byte, k, devices int) []byte {
	return fmt.Appendf(dst[:0], "farm-device-%04d", k%devices)
}

// isFarm reports whether uid is one of the farm's accounts.
func (r *runner) isFarm(uid uint64) bool {
	return r.farm != nil && uid >= r.farm.first
}

// farmWave dispatches the farm's due waves at offset off into the run: every account
// shakes, in account order. It returns when the next wave is due (-1: no more).
func (r *runner) farmWave(now time.Time, off time.Duration) time.Duration {
	f := r.farm
	if f == nil || f.nextAt < 0 {
		return -1
	}
	for f.nextAt >= 0 && f.nextAt <= off {
		intended := r.start.Add(f.nextAt)
		for k := 0; k < f.cfg.Accounts; k++ {
			j := job{intended: intended, uid: f.first + uint64(k), kind: kindShake}
			r.arrivals.Add(1)
			f.shakes.Add(1)
			r.dispatch(&j, now)
		}
		f.nextAt += f.cfg.Every
		if f.nextAt >= r.cfg.Duration {
			f.nextAt = -1
		}
	}
	return f.nextAt
}

func (r *runner) farmResult(res *Result) {
	f := r.farm
	if f == nil {
		return
	}
	fr := &FarmResult{Accounts: f.cfg.Accounts, Devices: f.cfg.Devices, Shakes: f.shakes.Load(), Won: f.won.Load(),
		Opened: f.opened.Load(), Amount: f.amounts.Load()}
	if won := res.Shake.Results["won"]; won > 0 {
		fr.TicketShare = float64(fr.Won) / float64(won)
	}
	if res.OpenedSum > 0 {
		fr.MoneyShare = float64(fr.Amount) / float64(res.OpenedSum)
	}
	res.Farm = fr
}

// writeFarmText is the farm's line of the text report.
func writeFarmText(w io.Writer, f *FarmResult) {
	if f == nil {
		return
	}
	fmt.Fprintf(w, "farm: %d accounts on %d devices, %d shakes, won %d tickets (%.1f%% of all won), opened %d worth %d (%.1f%% of the money)\n",
		f.Accounts, f.Devices, f.Shakes, f.Won, 100*f.TicketShare, f.Opened, f.Amount, 100*f.MoneyShare)
}

// farmHTML is the farm's section of the HTML report ("" without a farm).
func farmHTML(f *FarmResult) string {
	if f == nil {
		return ""
	}
	return "<h2>Farm</h2><p>" + html.EscapeString(fmt.Sprintf(
		"%d accounts on %d devices shook %d times and won %d tickets (%.1f%% of all won); opened %d worth %d (%.1f%% of the money opened).",
		f.Accounts, f.Devices, f.Shakes, f.Won, 100*f.TicketShare, f.Opened, f.Amount, 100*f.MoneyShare)) + "</p>\n"
}

// untilNext is wait, or less when an event due at offset at (-1: none) comes sooner
// than off + wait.
func untilNext(wait, at, off time.Duration) time.Duration {
	if at < 0 {
		return wait
	}
	return min(wait, at-off)
}
