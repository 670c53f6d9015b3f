package control

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
)

// ErrUntrustedFile is wrapped by the refusal of a switches file another local user could
// have written: one owned by someone other than the server's user or root, or writable
// by group or others. A planted or edited file would otherwise switch the server.
var ErrUntrustedFile = errors.New("switches file not trusted")

// checkTrusted refuses a switches file (already open, so what is checked is what is
// read) that is not a regular file owned by this process's user or root, or that group
// or others may write.
func checkTrusted(path string, fi fs.FileInfo) error {
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%w: %s is not a regular file (mode %s)", ErrUntrustedFile, path, fi.Mode())
	}
	if perm := fi.Mode().Perm(); perm&0o022 != 0 {
		return fmt.Errorf("%w: %s has mode %04o, writable by group or others: chmod go-w it (the server writes it 0600)", ErrUntrustedFile, path, perm)
	}
	uid, ok := fileOwner(fi)
	if !ok {
		return nil // no owner to check on this platform
	}
	if me := os.Geteuid(); uid != 0 && int(uid) != me {
		return fmt.Errorf("%w: %s (mode %04o) is owned by uid %d, not this server's user (uid %d) or root", ErrUntrustedFile, path, fi.Mode().Perm(), uid, me)
	}
	return nil
}
