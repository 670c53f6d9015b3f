//go:build unix && !linux

package obs

import (
	"os"
	"syscall"
)

// readProcStats reports what portable Unix calls give without cgo: CPU time
// (getrusage), the descriptor limit, and open descriptors from /dev/fd (macOS and the
// BSDs list them there). Resident and virtual memory need platform calls (mach on
// macOS) and are left out; the start time falls back to the package's init.
func readProcStats() procStats {
	p := unknownProcStats()
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		p.cpu = float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
	}
	var lim syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim) == nil {
		p.maxFDs = float64(lim.Cur)
	}
	if d, err := os.Open("/dev/fd"); err == nil {
		names, err := d.Readdirnames(-1)
		d.Close()
		if err == nil {
			p.openFDs = float64(len(names) - 1)
		}
	}
	return p
}
