// Package proc supervises shake's own child processes for the demo and the whole-chain
// tests: start a subcommand of the running binary, wait until it is ready, stop it with
// SIGTERM (or kill it with SIGKILL), and keep its output in a log file.
package proc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// ErrNotReady is returned when a child does not become ready in time.
var ErrNotReady = errors.New("process did not become ready")

// Proc is one running child process.
type Proc struct {
	Name string
	cmd  *exec.Cmd
	log  *os.File
	done chan struct{}
	mu   sync.Mutex
	err  error
}

// FreeAddr returns a loopback address with a port that was free a moment ago. The port is
// released before returning, so a race with another process is possible but harmless on
// loopback in tests: the child then fails to bind and its start reports it.
func FreeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	addr := l.Addr().String()
	l.Close()
	return addr, nil
}

// Start runs bin with args, its stdout and stderr appended to logPath.
func Start(name, bin string, args []string, logPath string) (*Proc, error) {
	lf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("cannot open log for %s: %w", name, err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = lf, lf
	// A process group of its own, so a Ctrl-C on the terminal reaches only the parent,
	// which then stops its children in order; on Linux the kernel also kills the child
	// when the parent dies, even by SIGKILL (see sysProcAttr).
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, fmt.Errorf("cannot start %s: %w", name, err)
	}
	p := &Proc{Name: name, cmd: cmd, log: lf, done: make(chan struct{})}
	go func() {
		err := cmd.Wait()
		p.mu.Lock()
		p.err = err
		p.mu.Unlock()
		lf.Close()
		close(p.done)
	}()
	return p, nil
}

// Pid returns the child's process id.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Done is closed when the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Err returns the exit error once Done is closed (nil for exit 0).
func (p *Proc) Err() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// ExitCode returns the exit code, or -1 if the process is running or died by a signal.
func (p *Proc) ExitCode() int {
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode()
	default:
		return -1
	}
}

// WaitReady polls url until it answers 200, the process exits, or timeout passes.
func (p *Proc) WaitReady(ctx context.Context, url string, timeout time.Duration) error {
	return p.WaitReadyFunc(ctx, url, timeout, func(status int, _ []byte) bool { return status == http.StatusOK })
}

// WaitReadyFunc polls url until ready says its answer (status, first 4 KiB of the body)
// means ready, the process exits, or timeout passes.
func (p *Proc) WaitReadyFunc(ctx context.Context, url string, timeout time.Duration, ready func(status int, body []byte) bool) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	client := &http.Client{Timeout: time.Second}
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if resp, err := client.Do(req); err == nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if ready(resp.StatusCode, body) {
				return nil
			}
		}
		select {
		case <-p.done:
			return fmt.Errorf("%s exited before it was ready (%v): %w", p.Name, p.Err(), ErrNotReady)
		case <-ctx.Done():
			return fmt.Errorf("%s at %s: %w", p.Name, url, ErrNotReady)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Stop sends SIGTERM and waits up to timeout, then kills. It returns the exit error.
func (p *Proc) Stop(timeout time.Duration) error {
	select {
	case <-p.done:
		return p.Err()
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return p.Err()
	case <-time.After(timeout):
		_ = p.cmd.Process.Kill()
		<-p.done
		return fmt.Errorf("%s did not stop within %v after SIGTERM and was killed", p.Name, timeout)
	}
}

// Kill sends SIGKILL and waits for the process to be gone.
func (p *Proc) Kill() {
	_ = p.cmd.Process.Kill()
	<-p.done
}
