//go:build !(linux || darwin || freebsd || openbsd || netbsd || dragonfly)

package testbin

import "errors"

// lock is a no-op where flock is missing: concurrent test processes may then build the
// same entry twice (each into its own temporary name, renamed into place), and nothing
// is pruned.
func lock(path string, wait bool) (unlock func(), err error) {
	if !wait {
		return nil, errors.New("no file locking on this platform")
	}
	return func() {}, nil
}
