package obs

import (
	"bytes"
	"os"
	"strconv"
	"syscall"
)

// userHZ is the kernel's USER_HZ, the unit of /proc/self/stat's times: 100 on every
// Linux architecture Go supports (the prometheus/procfs library assumes the same).
const userHZ = 100

// readProcStats reads /proc/self/stat, /proc/stat (boot time), the fd directory and
// the RLIMIT_NOFILE limit, as client_golang's process collector does.
func readProcStats() procStats {
	p := unknownProcStats()
	if data, err := os.ReadFile("/proc/self/stat"); err == nil {
		// The command name (field 2) is in parentheses and may contain spaces.
		if i := bytes.LastIndexByte(data, ')'); i >= 0 {
			f := bytes.Fields(data[i+1:])
			// f[0] is field 3 (state): utime is field 14, stime 15, starttime 22,
			// vsize 23, rss 24 (pages).
			if len(f) > 21 {
				ut, e1 := strconv.ParseUint(string(f[11]), 10, 64)
				st, e2 := strconv.ParseUint(string(f[12]), 10, 64)
				if e1 == nil && e2 == nil {
					p.cpu = float64(ut+st) / userHZ
				}
				if vs, err := strconv.ParseUint(string(f[20]), 10, 64); err == nil {
					p.vsize = float64(vs)
				}
				if rss, err := strconv.ParseInt(string(f[21]), 10, 64); err == nil {
					p.rss = float64(rss) * float64(os.Getpagesize())
				}
				if start, err := strconv.ParseUint(string(f[19]), 10, 64); err == nil {
					if bt := bootTime(); bt > 0 {
						p.start = bt + float64(start)/userHZ
					}
				}
			}
		}
	}
	if d, err := os.Open("/proc/self/fd"); err == nil {
		names, err := d.Readdirnames(-1)
		d.Close()
		if err == nil {
			p.openFDs = float64(len(names) - 1) // minus the directory's own descriptor
		}
	}
	var lim syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim) == nil {
		p.maxFDs = float64(lim.Cur)
	}
	return p
}

// bootTime returns the btime line of /proc/stat (seconds since the epoch), or 0.
func bootTime() float64 {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	for _, line := range bytes.Split(data, []byte("\n")) {
		if v, ok := bytes.CutPrefix(line, []byte("btime ")); ok {
			bt, err := strconv.ParseUint(string(bytes.TrimSpace(v)), 10, 64)
			if err == nil {
				return float64(bt)
			}
		}
	}
	return 0
}
