package obs

import (
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Connection limits. A server's connections are capped below its descriptor limit
// (RLIMIT_NOFILE) so that a flood of idle connections cannot leave it without a
// descriptor for its files, its Kafka connections or its admin listener.
const (
	// DefaultMaxConnsPerIP bounds the connections one client IP address may hold open on
	// a public listener. A load balancer in front of the edges is one IP for all of its
	// users: set --max-conns-per-ip accordingly (0 = no per-IP limit).
	DefaultMaxConnsPerIP = 4096
	// adminMaxConns is the admin listener's own connection budget, kept apart from the
	// public one so that /healthz and /metrics answer during a flood.
	adminMaxConns = 64
	// adminMaxConnsPerIP bounds one client's share of the admin budget: a reconnecting
	// client holds at most this many, and operators, probes and scrapers get the rest.
	adminMaxConnsPerIP = 8
	// adminReadTimeout bounds reading one admin request (headers and body: documents of
	// at most 64 KiB), so that a connection that sends nothing gives its slot back soon.
	adminReadTimeout = 2 * time.Second
	// adminIdleTimeout bounds an idle keep-alive connection on an admin listener.
	adminIdleTimeout = 5 * time.Second
	// minFDHeadroom is the fewest descriptors kept back from the connection cap for
	// files (shard, state, spool segments, logs), Kafka connections and the runtime.
	minFDHeadroom = 48
	// maxAutoConns caps the automatic connection limit even under a huge RLIMIT_NOFILE.
	maxAutoConns     = 1 << 20
	acceptBackoffMin = 5 * time.Millisecond
	acceptBackoffMax = time.Second
)

// FDLimit returns the process's soft RLIMIT_NOFILE, or 0 when it cannot be read.
func FDLimit() uint64 {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0
	}
	return rl.Cur
}

// AutoMaxConns is the connection cap of a public listener derived from the descriptor
// limit: a quarter (at least minFDHeadroom) is kept back for everything else the
// process opens, and the admin listener's budget is taken off the rest.
func AutoMaxConns(fdLimit uint64) int {
	if fdLimit == 0 || fdLimit > 4*maxAutoConns {
		return maxAutoConns
	}
	headroom := max(fdLimit/4, minFDHeadroom)
	if fdLimit <= headroom+adminMaxConns+8 {
		return 8 // a tiny limit: still serve a few, the rest is refused
	}
	return int(fdLimit - headroom - adminMaxConns)
}

// listenerStats are the counters of one guarded listener, exported as metrics.
type listenerStats struct {
	open         atomic.Int64  // connections currently open
	accepted     atomic.Uint64 // connections accepted and handed to the server
	refused      atomic.Uint64 // connections closed at once because the cap was reached
	refusedIP    atomic.Uint64 // connections closed at once because their IP had too many
	acceptErrors atomic.Uint64 // temporary accept errors survived (EMFILE, ENFILE, ...)
}

// guardedListener wraps a TCP listener for fasthttp, whose accept loop gives up (and
// so ends Serve and the process) on any error that is not a timeout: it retries the
// errors that go away by themselves (out of descriptors, an aborted handshake) with a
// backoff, and it closes connections beyond maxConns at once with a 503 instead of
// letting them use up the process's descriptors.
type guardedListener struct {
	net.Listener
	maxConns int64
	perIP    int // 0: no per-IP limit
	stats    *listenerStats
	log      *slog.Logger
	name     string
	closed   atomic.Bool
	sleep    func(time.Duration) // time.Sleep; tests shorten it
	lastLog  atomic.Int64        // unix nanoseconds of the last accept-error log line

	mu   sync.Mutex // guards byIP; taken once per accept and per close, never per request
	byIP map[netip.Addr]int
}

func newGuardedListener(ln net.Listener, name string, maxConns, perIP int, stats *listenerStats, log *slog.Logger) *guardedListener {
	return &guardedListener{Listener: ln, maxConns: int64(maxConns), perIP: perIP, stats: stats, log: log, name: name,
		sleep: time.Sleep, byIP: make(map[netip.Addr]int)}
}

// tooManyConns is written, best effort, to a connection refused for the cap.
var tooManyConns = []byte("HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n" +
	"Retry-After: 1\r\nConnection: close\r\nContent-Length: 32\r\n\r\n{\"error\":\"too_many_connections\"}")

// Accept returns the next connection under the cap. It returns an error only once the
// listener is closed or on an error that retrying cannot fix.
func (l *guardedListener) Accept() (net.Conn, error) {
	backoff := time.Duration(0)
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			if l.closed.Load() || errors.Is(err, net.ErrClosed) || !temporaryAcceptError(err) {
				return nil, err
			}
			l.stats.acceptErrors.Add(1)
			backoff = min(max(2*backoff, acceptBackoffMin), acceptBackoffMax)
			// One line a second at most: a flood must not turn into a log flood.
			if now := time.Now().UnixNano(); now-l.lastLog.Load() > int64(time.Second) {
				l.lastLog.Store(now)
				l.log.Warn("accept failed, retrying", "listener", l.name, "err", err, "backoff", backoff,
					"open_conns", l.stats.open.Load(), "errors_total", l.stats.acceptErrors.Load())
			}
			l.sleep(backoff)
			continue
		}
		backoff = 0
		if l.stats.open.Add(1) > l.maxConns {
			l.stats.open.Add(-1)
			l.stats.refused.Add(1)
			refuse(c)
			continue
		}
		cc := &countedConn{Conn: c, l: l}
		if l.perIP > 0 {
			if ap, err := netip.ParseAddrPort(c.RemoteAddr().String()); err == nil {
				cc.ip = ap.Addr().Unmap()
				l.mu.Lock()
				n := l.byIP[cc.ip]
				if n >= l.perIP {
					l.mu.Unlock()
					l.stats.open.Add(-1)
					l.stats.refusedIP.Add(1)
					refuse(c)
					continue
				}
				l.byIP[cc.ip] = n + 1
				l.mu.Unlock()
				cc.counted = true
			}
		}
		l.stats.accepted.Add(1)
		return cc, nil
	}
}

// refuse tells a connection beyond a cap why, best effort without waiting, and closes it.
func refuse(c net.Conn) {
	_ = c.SetWriteDeadline(time.Now().Add(10 * time.Millisecond))
	_, _ = c.Write(tooManyConns)
	_ = c.Close()
}

// Close stops accepting; Accept then returns the listener's error.
func (l *guardedListener) Close() error {
	l.closed.Store(true)
	return l.Listener.Close()
}

// temporaryAcceptError reports whether err is one that goes away by itself: the process
// or the system is out of descriptors or buffers, or a client gave up during the
// handshake. fasthttp would end Serve on any of these.
func temporaryAcceptError(err error) bool {
	var errno syscall.Errno
	if errors.As(err, &errno) {
		switch errno {
		case syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM,
			syscall.ECONNABORTED, syscall.ECONNRESET, syscall.EINTR, syscall.EAGAIN, syscall.EPROTO, syscall.EPERM:
			return true
		}
	}
	var nerr net.Error
	return errors.As(err, &nerr) && nerr.Timeout()
}

// countedConn gives its slots back to the listener's counts when closed, once.
type countedConn struct {
	net.Conn
	l       *guardedListener
	ip      netip.Addr
	counted bool // holds a per-IP slot
	once    sync.Once
}

func (c *countedConn) Close() error {
	c.once.Do(func() {
		c.l.stats.open.Add(-1)
		if c.counted {
			c.l.mu.Lock()
			if n := c.l.byIP[c.ip] - 1; n > 0 {
				c.l.byIP[c.ip] = n
			} else {
				delete(c.l.byIP, c.ip)
			}
			c.l.mu.Unlock()
		}
	})
	return c.Conn.Close()
}
