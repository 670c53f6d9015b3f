package edge

import (
	"os"
	"syscall"
)

// fdatasync flushes the file's data (and the metadata needed to read it back) to
// stable storage: cheaper than fsync on Linux because the slot size never changes.
func fdatasync(f *os.File) error {
	for {
		err := syscall.Fdatasync(int(f.Fd()))
		if err != syscall.EINTR {
			return err
		}
	}
}
