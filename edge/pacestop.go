package edge

import (
	"math"
	"sort"
	"sync"
)

// Pause stops the paced clock: the paced release of a round counts only the time the
// round could hand tickets out. Time spent paused (switch edge.paused) or with the round
// closed (edge.closed_rounds) is taken off the clock the release reads, so that after a
// resume the edge hands out at the paced rate instead of releasing what the pause held
// back in one burst. The round's window does not move: what the stopped time would have
// released stays in the pool (and is refunded at expiry).
//
// The history lives in memory: an edge restarted after a pause counts the paused time
// before its restart as running time.

// stop is a span of stopped time, unix nanoseconds [from, to).
type stop struct{ from, to int64 }

// stopClock records when each round's release was stopped, across switch changes.
type stopClock struct {
	mu          sync.Mutex
	pausedSince int64    // when the current pause began (0: not paused)
	closedSince []int64  // per round, when the current closure began (0: open)
	done        [][]stop // per round, finished stopped spans
}

// record notes the switches coming into force at nowNs and returns each round's stopped
// spans (the one in progress, if any, runs to the end of time), or nil when no round has
// ever been stopped: the hot path then pays one branch.
func (c *stopClock) record(nowNs int64, paused bool, closed []bool, rounds int) [][]stop {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done == nil {
		c.done = make([][]stop, rounds)
		c.closedSince = make([]int64, rounds)
	}
	switch {
	case paused && c.pausedSince == 0:
		c.pausedSince = nowNs
	case !paused && c.pausedSince != 0:
		for i := range c.done {
			c.done[i] = append(c.done[i], stop{c.pausedSince, nowNs})
		}
		c.pausedSince = 0
	}
	for i := range c.closedSince {
		isClosed := closed != nil && closed[i]
		switch {
		case isClosed && c.closedSince[i] == 0:
			c.closedSince[i] = nowNs
		case !isClosed && c.closedSince[i] != 0:
			c.done[i] = append(c.done[i], stop{c.closedSince[i], nowNs})
			c.closedSince[i] = 0
		}
	}
	var out [][]stop
	for i := range c.done {
		spans := append([]stop(nil), c.done[i]...)
		if c.pausedSince != 0 {
			spans = append(spans, stop{c.pausedSince, math.MaxInt64})
		}
		if c.closedSince[i] != 0 {
			spans = append(spans, stop{c.closedSince[i], math.MaxInt64})
		}
		// stoppedWithin wants them in the order they began (a closure that began before
		// a pause may end after it).
		sort.Slice(spans, func(a, b int) bool { return spans[a].from < spans[b].from })
		if len(spans) > 0 && out == nil {
			out = make([][]stop, len(c.done))
		}
		if out != nil {
			out[i] = spans
		}
	}
	return out
}

// stoppedWithin is how much of [fromNs, toNs) the spans cover. Spans may overlap (a
// pause while the round was closed): overlapping parts count once.
func stoppedWithin(spans []stop, fromNs, toNs int64) int64 {
	var total, coveredTo int64 = 0, fromNs
	for _, s := range spans { // sorted by from
		lo, hi := max(s.from, coveredTo), min(s.to, toNs)
		if hi > lo {
			total += hi - lo
			coveredTo = hi
		}
	}
	return total
}
