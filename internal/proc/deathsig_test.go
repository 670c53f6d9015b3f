package proc

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// With PROC_TEST_CHILD=parent the test binary is a parent like the demo: it starts a
// serving child with Start, prints the child's pid and waits to be killed.
func init() {
	if os.Getenv("PROC_TEST_CHILD") != "parent" {
		return
	}
	os.Setenv("PROC_TEST_CHILD", "serve")
	p, err := Start("child", os.Args[0], nil, os.DevNull)
	if err != nil {
		fmt.Println("error", err)
		os.Exit(3)
	}
	fmt.Println(p.Pid())
	select {}
}

// alive reports whether pid runs (a zombie waiting for a reaper counts as dead).
func alive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(b), ')')
	return i < 0 || i+2 >= len(b) || b[i+2] != 'Z'
}

// TestChildDiesWithParentKill9 kills a parent with SIGKILL, which it cannot catch, and
// checks that the kernel kills its child too (the demo's servers must not outlive it).
func TestChildDiesWithParentKill9(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the parent-death signal is Linux only; elsewhere children of a killed demo survive")
	}
	addr, err := FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	parent := exec.Command(os.Args[0], "-test.run=^$")
	parent.Env = append(os.Environ(), "PROC_TEST_CHILD=parent", "PROC_TEST_ADDR="+addr)
	out, err := parent.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := parent.Start(); err != nil {
		t.Fatal(err)
	}
	defer parent.Process.Kill()
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("parent: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil {
		t.Fatalf("parent said %q", line)
	}
	defer syscall.Kill(pid, syscall.SIGKILL)
	if !alive(pid) {
		t.Fatalf("child %d is not running", pid)
	}
	parent.Process.Signal(syscall.SIGKILL)
	parent.Wait()
	for deadline := time.Now().Add(5 * time.Second); alive(pid); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("child %d still runs 5s after its parent was killed with SIGKILL", pid)
		}
	}
}
