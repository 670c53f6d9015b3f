package main

import (
	"net"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"shake/internal/proc"
)

// TestBrokerSIGTERMRightAfterListen stops a broker the moment its port accepts
// connections, which is how a supervisor (and the chaos suite) sees it started: it must
// exit 0. The port is bound before the cluster loads its --data directory, so a SIGTERM
// in that window used to kill the process by signal (chaos seed 8: "broker did not exit 0
// on SIGTERM: signal: terminated").
func TestBrokerSIGTERMRightAfterListen(t *testing.T) {
	bin := shakeBinary(t)
	data := filepath.Join(t.TempDir(), "data")
	for i := 0; i < 3; i++ {
		addr, err := proc.FreeAddr()
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bin, "broker", "--listen", addr, "--data", data, "--log-format", "json")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(30 * time.Second)
		for {
			if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
				c.Close()
				break
			}
			if time.Now().After(deadline) {
				cmd.Process.Kill()
				t.Fatalf("start %d: the broker did not listen on %s within 30 s", i, addr)
			}
			time.Sleep(time.Millisecond)
		}
		if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		if err := cmd.Wait(); err != nil {
			t.Fatalf("start %d: SIGTERM as soon as the port accepted: %v, want exit 0", i, err)
		}
	}
}
