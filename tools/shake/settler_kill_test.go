package main

import (
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"shake/broker"
)

// TestSettlerKilledTwiceWithinSessionTimeout replays chaos seed 777's pattern against
// the embedded broker as `shake broker` runs it (group session timeouts of at least
// 6 s): a settler is killed, its replacement is killed while its JoinGroup is still
// parked (the first one's session has not expired yet, so the rebalance waits for it),
// and a third settler starts before that session expires. With kfake's dead-joiner bug
// and a watchdog that could not interrupt a blocked fetch, the second (dead) settler
// could keep its partitions for ever: about one such round in four left claims
// unsettled. Each of the rounds must have every claim posted within settleBound of
// the third settler's start. It runs beside the other whole-process tests (it mostly
// waits out sessions); each round logs how far apart its kills landed.
func TestSettlerKilledTwiceWithinSessionTimeout(t *testing.T) {
	t.Parallel()
	const (
		rounds   = 2
		perRound = 5_000
		// The dead settlers' sessions (6 s) and the rebalance that follows (its
		// rebalance timeout is the session timeout), the posting itself (a second or
		// two), and slack for a shared machine. A watchdog restart (--stall-timeout
		// 10 s here, plus a session timeout of grace) fits inside it too.
		settleBound = 40 * time.Second
	)
	e := newSettlerEnv(t, rounds*perRound)
	b, err := broker.Start(broker.Config{Listen: "127.0.0.1:0", Partitions: 8})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	e.broker = b.Addr()
	url := "sqlite://" + filepath.Join(e.dir, "ledger.db")
	flags := []string{"--session-timeout", "6s", "--stall-timeout", "10s"}
	start := func() (*exec.Cmd, string) {
		listen := freePort(t)
		cmd, _ := e.startSettler(t, url, listen, flags...)
		return cmd, listen
	}
	kill := func(cmd *exec.Cmd) {
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
	}
	cur, listen := start()
	for round := range rounds {
		lo := uint64(round*perRound + 1)
		e.produceClaims(t, lo, lo+perRound/2-1)
		// The current settler consumes, then dies.
		for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			if n, ok := metric(listen, "shake_settler_posted_total"); ok && n > 0 {
				break
			}
		}
		kill(cur)
		killedAt := time.Now()
		// Its replacement joins; the join is parked until the dead one's session ends.
		second, listen2 := start()
		time.Sleep(2 * time.Second)
		posted, _ := metric(listen2, "shake_settler_posted_total")
		kill(second)
		// The third one starts within the first one's session timeout.
		cur, listen = start()
		begun := time.Now()
		t.Logf("round %d: kills %.1fs apart (session timeout 6s); the second settler had posted %v",
			round, begun.Sub(killedAt).Seconds(), posted)
		e.produceClaims(t, lo+perRound/2, lo+perRound-1)
		want := int64(round+1) * perRound
		for settledTickets(t, url, e.m.Campaign) < want && time.Since(begun) < settleBound {
			time.Sleep(200 * time.Millisecond)
		}
		if got := settledTickets(t, url, e.m.Campaign); got < want {
			restarts, _ := metric(listen, "shake_settler_reader_restarts_total")
			t.Fatalf("round %d: %d of %d tickets settled %v after the third settler started (reader restarts %v)",
				round, got, want, settleBound, restarts)
		}
		restarts, _ := metric(listen, "shake_settler_reader_restarts_total")
		t.Logf("round %d: all %d tickets settled %.1fs after the third settler started (its reader restarts: %v)",
			round, want, time.Since(begun).Seconds(), restarts)
	}
	cur.Process.Signal(syscall.SIGTERM)
	if err := cur.Wait(); err != nil {
		t.Fatalf("settler after SIGTERM: %v", err)
	}
	code, rep := e.reconcile(t, url)
	if code != 0 || rep["ok"] != true || rep["settled_tickets"] != float64(rounds*perRound) || rep["duplicates"] != float64(0) {
		t.Fatalf("reconcile exit %d: %v", code, rep)
	}
}
