package edge

import (
	"sync"
	"sync/atomic"
	"testing"
)

func TestPerUserLimitAndRelease(t *testing.T) {
	for _, limit := range []int{1, 3, MaxPerUser} {
		p := newPerUser(1024, limit)
		for i := 0; i < limit; i++ {
			if !p.acquire(42, 0) {
				t.Fatalf("limit %d: win %d refused", limit, i+1)
			}
		}
		if p.acquire(42, 0) {
			t.Fatalf("limit %d: win above the limit granted", limit)
		}
		if !p.acquire(42, 1) || !p.acquire(43, 0) {
			t.Fatalf("limit %d: other round or user refused", limit)
		}
		p.release(42, 0)
		if !p.acquire(42, 0) || p.acquire(42, 0) {
			t.Fatalf("limit %d: release did not give exactly one back", limit)
		}
	}
}

func TestPerUserConcurrentSameUser(t *testing.T) {
	p := newPerUser(4096, 2)
	var granted atomic.Int64
	var wg sync.WaitGroup
	for g := 0; g < 32; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 100; i++ {
				if p.acquire(7, 3) {
					granted.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if granted.Load() != 2 {
		t.Fatalf("granted %d, want 2", granted.Load())
	}
}

// The table is bounded: once full, new users are refused (a miss), never admitted
// beyond the limit, and users already in it keep their counts.
func TestPerUserFullRefuses(t *testing.T) {
	p := newPerUser(100, 1)
	admitted := 0
	for uid := uint64(1); uid <= 1000; uid++ {
		if p.acquire(uid, 0) {
			admitted++
		}
	}
	if admitted != 100 || p.used.Load() != 100 || p.full.Load() != 900 {
		t.Fatalf("admitted %d used %d full %d", admitted, p.used.Load(), p.full.Load())
	}
	for uid := uint64(1); uid <= 1000; uid++ {
		if p.acquire(uid, 0) {
			t.Fatalf("uid %d admitted twice or past a full table", uid)
		}
	}
}

func TestPerUserManyDistinct(t *testing.T) {
	const n = 200000
	p := newPerUser(n+n/4, 1)
	for uid := uint64(0); uid < n; uid++ {
		if !p.acquire(uid*2654435761, 0) {
			t.Fatalf("uid %d refused at load %.2f", uid, float64(uid)/float64(len(p.slots)))
		}
	}
	if p.full.Load() != 0 {
		t.Fatal("full refusals at load 0.8")
	}
}

func BenchmarkPerUserAcquire(b *testing.B) {
	p := newPerUser(b.N+b.N/4+64, 1)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		p.acquire(uint64(i), 0)
	}
}
