package control

import (
	"context"
	"errors"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

type ver struct{ n int64 }

// TestLiveNoAnswerUnderAnOldValue is the promise of Publish: once it returns for
// version k, no request still answers under a version below k. Readers check it at
// their "answer" while a writer publishes as fast as it can.
func TestLiveNoAnswerUnderAnOldValue(t *testing.T) {
	l := NewLive(&ver{0})
	var confirmed atomic.Int64 // the last version whose Publish returned
	var stop atomic.Bool
	var violations, answers atomic.Int64
	var wg sync.WaitGroup
	// Twice as many readers as cores, so that readers are preempted inside; 100
	// publishes. (8 readers and 300 publishes took 1 s alone but 15-30 s beside the
	// rest of the suite: every Publish waits out readers the OS has descheduled.)
	for r := 0; r < 2*runtime.GOMAXPROCS(0); r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				v, e := l.Enter()
				for i := 0; i < 50; i++ { // some work under the value
					_ = i * i
				}
				if confirmed.Load() > v.n {
					violations.Add(1)
				}
				answers.Add(1)
				l.Exit(e)
			}
		}()
	}
	for k := int64(1); k <= 100; k++ {
		if err := l.Publish(context.Background(), &ver{k}); err != nil {
			t.Fatal(err)
		}
		confirmed.Store(k)
	}
	stop.Store(true)
	wg.Wait()
	if violations.Load() != 0 {
		t.Fatalf("%d of %d answers given under a value older than a confirmed Publish", violations.Load(), answers.Load())
	}
	if l.Load().n != 100 {
		t.Fatalf("value %d", l.Load().n)
	}
}

// TestLivePublishWaitsAndTimesOut: a request that entered before waits Publish out; one
// that never leaves makes Publish fail at its deadline, the new value already in force.
func TestLivePublishWaitsAndTimesOut(t *testing.T) {
	l := NewLive(&ver{0})
	_, e := l.Enter()
	done := make(chan error, 1)
	go func() { done <- l.Publish(context.Background(), &ver{1}) }()
	select {
	case <-done:
		t.Fatal("Publish returned while an old request was inside")
	case <-time.After(50 * time.Millisecond):
	}
	if v, e2 := l.Enter(); v.n != 1 {
		t.Fatalf("a new request got version %d", v.n)
	} else {
		l.Exit(e2)
	}
	l.Exit(e)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	_, stuck := l.Enter()
	defer l.Exit(stuck)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	if err := l.Publish(ctx, &ver{2}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Publish with a stuck request: %v", err)
	}
	if l.Load().n != 2 {
		t.Fatal("the value was not published")
	}
}

func TestLiveEnterAllocatesNothing(t *testing.T) {
	l := NewLive(&ver{1})
	if n := testing.AllocsPerRun(1000, func() { _, e := l.Enter(); l.Exit(e) }); n != 0 {
		t.Fatalf("%v allocs", n)
	}
}

func BenchmarkLiveEnterExit(b *testing.B) {
	l := NewLive(&ver{1})
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			_, e := l.Enter()
			l.Exit(e)
		}
	})
}
