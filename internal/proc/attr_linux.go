package proc

import "syscall"

// sysProcAttr puts the child in its own process group and asks the kernel to SIGKILL
// it when its parent dies, so that a demo killed with SIGKILL leaves no edges, verifier
// or settler behind. Pdeathsig fires when the thread that started the child exits;
// the Go runtime does not end threads of ordinary goroutines, so in practice that is
// the death of the process.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
