//go:build !linux

package proc

import "syscall"

// sysProcAttr puts the child in its own process group. There is no parent-death
// signal outside Linux: a parent killed with SIGKILL leaves its children running
// (best effort: a clean stop, SIGTERM or Ctrl-C, still stops them in order).
func sysProcAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }
