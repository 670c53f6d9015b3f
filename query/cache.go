package query

import (
	"context"
	"sync"
	"time"
)

// answer is a prebuilt response: status and JSON body.
type answer struct {
	status int
	body   []byte
}

// pageCache holds each campaign page's answer for ttl and makes sure that however many
// requests ask at once, one load runs per campaign per ttl: the first asker loads, the
// others wait for its result (no thundering herd), and everyone within ttl after it
// gets the same bytes. Unknown campaigns and failures are cached the same way, so a
// stampede on a bad id or a sick database costs it one query a second too.
type pageCache struct {
	ttl  time.Duration
	max  int
	now  func() time.Time
	load func(ctx context.Context, id string) answer

	mu sync.Mutex
	m  map[string]*pageEntry
}

type pageEntry struct {
	done chan struct{} // closed once ans is set
	ans  answer
	at   time.Time // when ans was loaded
}

func newPageCache(ttl time.Duration, max int, now func() time.Time, load func(context.Context, string) answer) *pageCache {
	return &pageCache{ttl: ttl, max: max, now: now, load: load, m: make(map[string]*pageEntry)}
}

// get returns the answer for id, loading it at most once per ttl; hit says it came
// from the cache or another caller's load. A caller whose ctx ends while it waits gets
// ok false; the load itself runs on, bounded by loadTimeout, for the others.
func (c *pageCache) get(ctx context.Context, id []byte, loadTimeout time.Duration) (ans answer, hit, ok bool) {
	now := c.now()
	c.mu.Lock()
	e := c.m[string(id)]
	if e != nil {
		select {
		case <-e.done:
			if now.Sub(e.at) < c.ttl {
				c.mu.Unlock()
				return e.ans, true, true
			}
			e = nil // stale: this caller reloads it
		default: // loading: wait for it below
		}
	}
	if e != nil {
		c.mu.Unlock()
		select {
		case <-e.done:
			return e.ans, true, true
		case <-ctx.Done():
			return answer{}, true, false
		}
	}
	if len(c.m) >= c.max {
		c.evict(now)
	}
	key := string(id)
	e = &pageEntry{done: make(chan struct{})}
	c.m[key] = e
	c.mu.Unlock()
	c.fill(ctx, e, key, loadTimeout)
	return e.ans, false, true
}

// fill loads e. The load is everyone's, not this caller's: it must not end when this
// request does. Whatever happens (a panic included), the waiters are released.
func (c *pageCache) fill(ctx context.Context, e *pageEntry, key string, loadTimeout time.Duration) {
	lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), loadTimeout)
	defer func() {
		cancel()
		if e.ans.status == 0 {
			e.ans = answer{status: 500, body: bodyInternal}
		}
		e.at = c.now()
		close(e.done)
	}()
	e.ans = c.load(lctx, key)
}

// evict drops the loaded entries that are stale; if every entry is fresh (a flood of
// distinct ids within one ttl) it drops the loaded ones anyway, so the map stays
// bounded by max plus the loads in flight. Called with mu held.
func (c *pageCache) evict(now time.Time) {
	for k, e := range c.m {
		select {
		case <-e.done:
			if now.Sub(e.at) >= c.ttl {
				delete(c.m, k)
			}
		default:
		}
	}
	if len(c.m) < c.max {
		return
	}
	for k, e := range c.m {
		select {
		case <-e.done:
			delete(c.m, k)
		default:
		}
	}
}
