//go:build !unix

package obs

// readProcStats has no portable source outside Unix: only the start time (from the
// package's init) is exported there.
func readProcStats() procStats { return unknownProcStats() }
