//go:build !linux

package edge

import "os"

// fdatasync falls back to File.Sync where there is no fdatasync(2): on macOS that is
// fcntl(F_FULLFSYNC), which is what reaching stable storage takes there.
func fdatasync(f *os.File) error { return f.Sync() }
