//go:build linux || darwin || freebsd || openbsd || netbsd || dragonfly

package testbin

import (
	"os"
	"syscall"
)

// lock takes an exclusive flock on path (created if missing), waiting for it when wait
// is set and failing at once otherwise. It re-checks after locking that path still names
// the file it locked: a prune may have removed the lock file while this process waited
// on it.
func lock(path string, wait bool) (unlock func(), err error) {
	how := syscall.LOCK_EX
	if !wait {
		how |= syscall.LOCK_NB
	}
	for {
		f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o600)
		if err != nil {
			return nil, err
		}
		for {
			err = syscall.Flock(int(f.Fd()), how)
			if err != syscall.EINTR {
				break
			}
		}
		if err != nil {
			f.Close()
			return nil, err
		}
		held, herr := f.Stat()
		named, nerr := os.Stat(path)
		if herr == nil && nerr == nil && os.SameFile(held, named) {
			return func() { f.Close() }, nil
		}
		f.Close()
		if !wait {
			return nil, os.ErrNotExist
		}
	}
}
