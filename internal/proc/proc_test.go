package proc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// The test binary re-executes itself as the child: with PROC_TEST_CHILD set it serves
// /ready on the given address (or exits at once) and stops cleanly on SIGTERM.
func TestMain(m *testing.M) {
	switch os.Getenv("PROC_TEST_CHILD") {
	case "serve":
		l, err := net.Listen("tcp", os.Getenv("PROC_TEST_ADDR"))
		if err != nil {
			os.Exit(3)
		}
		fmt.Println("child up")
		go http.Serve(l, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
		select {} // until SIGTERM's default action ends the process
	case "exit":
		os.Exit(7)
	}
	os.Exit(m.Run())
}

func TestStartReadyStop(t *testing.T) {
	addr, err := FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("PROC_TEST_CHILD", "serve")
	t.Setenv("PROC_TEST_ADDR", addr)
	log := filepath.Join(t.TempDir(), "child.log")
	p, err := Start("child", os.Args[0], nil, log)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.WaitReady(context.Background(), "http://"+addr+"/ready", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if p.ExitCode() != -1 {
		t.Fatal("running process reports an exit code")
	}
	if err := p.Stop(5 * time.Second); err == nil {
		t.Fatal("a process ended by SIGTERM's default action must report it")
	}
	b, _ := os.ReadFile(log)
	if string(b) != "child up\n" {
		t.Fatalf("log = %q", b)
	}
}

func TestWaitReadyReportsEarlyExit(t *testing.T) {
	t.Setenv("PROC_TEST_CHILD", "exit")
	p, err := Start("child", os.Args[0], nil, filepath.Join(t.TempDir(), "c.log"))
	if err != nil {
		t.Fatal(err)
	}
	err = p.WaitReady(context.Background(), "http://127.0.0.1:1/ready", 10*time.Second)
	if !errors.Is(err, ErrNotReady) {
		t.Fatalf("err = %v", err)
	}
	<-p.Done()
	if p.ExitCode() != 7 {
		t.Fatalf("exit code %d", p.ExitCode())
	}
}

func TestKill(t *testing.T) {
	addr, _ := FreeAddr()
	t.Setenv("PROC_TEST_CHILD", "serve")
	t.Setenv("PROC_TEST_ADDR", addr)
	p, err := Start("child", os.Args[0], nil, filepath.Join(t.TempDir(), "c.log"))
	if err != nil {
		t.Fatal(err)
	}
	p.Kill()
	if p.ExitCode() != -1 || p.Err() == nil {
		t.Fatalf("killed child: code %d err %v", p.ExitCode(), p.Err())
	}
}
