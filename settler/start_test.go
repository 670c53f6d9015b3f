package settler

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"shake/settler/ledger"
	"shake/ticket"
)

// refusedErr is a real connection-refused error, as an unreachable ledger gives.
func refusedErr(t *testing.T) error {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	_, err = net.Dial("tcp", addr)
	if err == nil {
		t.Fatal("dialled a closed port")
	}
	return fmt.Errorf("cannot connect to postgres ledger: %w", err)
}

func testManifest(t *testing.T) *ticket.Manifest {
	return makeCampaign(t, t.TempDir(), "wait", []uint64{10}, time.Now().Add(time.Hour)).manifest
}

func TestOpenLedgerRetriesTransient(t *testing.T) {
	m := testManifest(t)
	refused := refusedErr(t)
	var attempts int
	var waited []bool
	open := func(ctx context.Context, url string) (ledger.Ledger, error) {
		attempts++
		if attempts < 4 {
			return nil, refused
		}
		return ledger.Open(ctx, url)
	}
	l, err := OpenLedger(context.Background(), "sqlite://"+t.TempDir()+"/l.db", m, LedgerStart{
		Wait: 10 * time.Second, BackoffMin: time.Millisecond, BackoffMax: 4 * time.Millisecond, Open: open,
		Waiting: func(b bool) { waited = append(waited, b) }})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if attempts != 4 || len(waited) != 4 || !waited[0] || waited[3] {
		t.Fatalf("attempts %d, waiting calls %v: want 4 attempts, 3 waits then ready", attempts, waited)
	}
	if _, ok, err := l.Registered(context.Background(), m.Campaign); !ok || err != nil {
		t.Fatalf("campaign not registered after OpenLedger: %v", err)
	}
}

func TestOpenLedgerPermanentAndBound(t *testing.T) {
	m := testManifest(t)
	var attempts int
	_, err := OpenLedger(context.Background(), "x", m, LedgerStart{Wait: time.Minute, Open: func(context.Context, string) (ledger.Ledger, error) {
		attempts++
		return nil, fmt.Errorf("migrate: %w", ledger.ErrSchemaNewer)
	}})
	if !errors.Is(err, ledger.ErrSchemaNewer) || attempts != 1 {
		t.Fatalf("permanent error: %v after %d attempts, want ErrSchemaNewer after 1", err, attempts)
	}
	refused := refusedErr(t)
	attempts = 0
	start := time.Now()
	_, err = OpenLedger(context.Background(), "x", m, LedgerStart{Wait: 200 * time.Millisecond, BackoffMin: 10 * time.Millisecond,
		Open: func(context.Context, string) (ledger.Ledger, error) { attempts++; return nil, refused }})
	if !errors.Is(err, ErrLedgerUnreachable) || attempts < 3 || time.Since(start) > 2*time.Second {
		t.Fatalf("unreachable for the whole wait: %v after %d attempts in %v", err, attempts, time.Since(start))
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() { time.Sleep(50 * time.Millisecond); cancel() }()
	start = time.Now()
	_, err = OpenLedger(ctx, "x", m, LedgerStart{Wait: time.Minute, BackoffMin: 10 * time.Second,
		Open: func(context.Context, string) (ledger.Ledger, error) { return nil, refused }})
	if !errors.Is(err, context.Canceled) || time.Since(start) > time.Second {
		t.Fatalf("cancelled during the wait: %v after %v", err, time.Since(start))
	}
}
