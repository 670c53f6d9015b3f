package bench

import (
	"sync"
	"time"
)

// pendingQueue holds follow-up jobs (opens after the think time, retries) until their
// intended time: a bounded binary min-heap on intended time, preallocated so that push
// and pop allocate nothing. container/heap would box every job in an interface.
type pendingQueue struct {
	mu  sync.Mutex
	max int
	h   []job
}

func (q *pendingQueue) init(max int) {
	q.max = max
	q.h = make([]job, 0, min(max, 4096))
}

// push adds j; it returns false when the queue already holds max jobs.
func (q *pendingQueue) push(j *job) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.h) >= q.max {
		return false
	}
	q.h = append(q.h, *j)
	i := len(q.h) - 1
	for i > 0 {
		p := (i - 1) / 2
		if !q.h[i].intended.Before(q.h[p].intended) {
			break
		}
		q.h[i], q.h[p] = q.h[p], q.h[i]
		i = p
	}
	return true
}

// popDue moves the earliest job into out if it is due at now.
func (q *pendingQueue) popDue(now time.Time, out *job) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.h) == 0 || q.h[0].intended.After(now) {
		return false
	}
	*out = q.h[0]
	last := len(q.h) - 1
	q.h[0] = q.h[last]
	q.h = q.h[:last]
	i := 0
	for {
		l, s := 2*i+1, i
		if l < len(q.h) && q.h[l].intended.Before(q.h[s].intended) {
			s = l
		}
		if r := l + 1; r < len(q.h) && q.h[r].intended.Before(q.h[s].intended) {
			s = r
		}
		if s == i {
			break
		}
		q.h[i], q.h[s] = q.h[s], q.h[i]
		i = s
	}
	return true
}

// nextDue returns the earliest intended time, if any job is queued.
func (q *pendingQueue) nextDue() (time.Time, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.h) == 0 {
		return time.Time{}, false
	}
	return q.h[0].intended, true
}

func (q *pendingQueue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.h)
}

func (q *pendingQueue) clear() {
	q.mu.Lock()
	q.h = q.h[:0]
	q.mu.Unlock()
}
