package bench

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"time"
)

// A minimal Redis client (RESP2) for the Redis baseline: a bounded connection pool,
// commands as byte-slice arguments, and replies read without allocating for the bulk
// strings the hot path needs. It supports what the baseline uses (PING, DEL, RPUSH,
// LPOP, LLEN) and any command whose reply is a simple string, error, integer, bulk
// string or nil; arrays are refused (ErrRESPUnsupported).

// RESP errors.
var (
	// ErrRESPProtocol reports a reply that is not valid RESP.
	ErrRESPProtocol = errors.New("redis: protocol error")
	// ErrRESPUnsupported reports a reply type this client does not read (arrays).
	ErrRESPUnsupported = errors.New("redis: unsupported reply type")
	// ErrRedisClosed reports a call on a closed client.
	ErrRedisClosed = errors.New("redis: client closed")
)

// RedisError is an error reply ("-ERR ...") from the server.
type RedisError string

func (e RedisError) Error() string { return "redis: " + string(e) }

// maxBulk bounds a bulk reply the client will read.
const maxBulk = 1 << 20

// Reply is one RESP reply. Bulk aliases the caller's buffer passed to Do.
type Reply struct {
	Type byte // '+', ':', '$' (bulk), '_' (nil)
	Int  int64
	Bulk []byte // simple string or bulk string content
}

// Nil reports a nil bulk reply (for example LPOP on an empty list).
func (r Reply) Nil() bool { return r.Type == '_' }

type respConn struct {
	c    net.Conn
	r    *bufio.Reader
	w    *bufio.Writer
	line []byte
}

// RedisClient is a pooled RESP client, safe for concurrent use.
type RedisClient struct {
	addr    string
	timeout time.Duration
	slots   chan struct{}  // one token per connection that may exist
	idle    chan *respConn // idle connections
	closed  chan struct{}
}

// NewRedisClient returns a client for addr (host:port) with at most maxConns
// connections; timeout bounds dialing and every call.
func NewRedisClient(addr string, maxConns int, timeout time.Duration) *RedisClient {
	if maxConns < 1 {
		maxConns = 1
	}
	c := &RedisClient{addr: addr, timeout: timeout, slots: make(chan struct{}, maxConns),
		idle: make(chan *respConn, maxConns), closed: make(chan struct{})}
	for i := 0; i < maxConns; i++ {
		c.slots <- struct{}{}
	}
	return c
}

// get returns an idle connection or dials a new one if the pool has room, waiting
// otherwise.
func (c *RedisClient) get() (*respConn, error) {
	select {
	case <-c.closed:
		return nil, ErrRedisClosed
	case rc := <-c.idle:
		return rc, nil
	default:
	}
	select {
	case rc := <-c.idle:
		return rc, nil
	case <-c.slots:
		nc, err := net.DialTimeout("tcp", c.addr, c.timeout)
		if err != nil {
			c.slots <- struct{}{}
			return nil, fmt.Errorf("redis: cannot connect to %s: %w", c.addr, err)
		}
		return &respConn{c: nc, r: bufio.NewReaderSize(nc, 16<<10), w: bufio.NewWriterSize(nc, 16<<10)}, nil
	case <-c.closed:
		return nil, ErrRedisClosed
	}
}

// put returns rc to the pool, or closes it (freeing its slot) after an I/O error.
func (c *RedisClient) put(rc *respConn, broken bool) {
	if broken {
		rc.c.Close()
		c.slots <- struct{}{}
		return
	}
	select {
	case <-c.closed:
		rc.c.Close()
		c.slots <- struct{}{}
	default:
		c.idle <- rc // never blocks: at most maxConns connections exist
	}
}

// Close closes the idle connections; connections in use close when returned.
func (c *RedisClient) Close() error {
	select {
	case <-c.closed:
		return nil
	default:
	}
	close(c.closed)
	for {
		select {
		case rc := <-c.idle:
			rc.c.Close()
			c.slots <- struct{}{}
		default:
			return nil
		}
	}
}

// Do sends one command and reads its reply; a bulk reply is appended to buf[:0] and
// Reply.Bulk aliases it. A RedisError is returned for an error reply (the connection
// stays usable).
func (c *RedisClient) Do(buf []byte, args ...[]byte) (Reply, error) {
	rep, err := c.Pipeline(1, buf, func(w *bufio.Writer) { writeCommand(w, args...) })
	if err != nil {
		return Reply{}, err
	}
	return rep, nil
}

// Pipeline writes n commands with write, then reads their n replies and returns the
// last one (earlier bulk replies are discarded). The first error reply is returned.
func (c *RedisClient) Pipeline(n int, buf []byte, write func(w *bufio.Writer)) (Reply, error) {
	rc, err := c.get()
	if err != nil {
		return Reply{}, err
	}
	rc.c.SetDeadline(time.Now().Add(c.timeout))
	write(rc.w)
	if err := rc.w.Flush(); err != nil {
		c.put(rc, true)
		return Reply{}, fmt.Errorf("redis: write: %w", err)
	}
	var last Reply
	var firstErr error
	for i := 0; i < n; i++ {
		rep, err := rc.readReply(buf)
		var re RedisError
		switch {
		case errors.As(err, &re):
			if firstErr == nil {
				firstErr = err
			}
		case err != nil:
			c.put(rc, true)
			return Reply{}, err
		}
		last = rep
	}
	c.put(rc, false)
	return last, firstErr
}

// writeCommand writes one command as a RESP array of bulk strings.
func writeCommand(w *bufio.Writer, args ...[]byte) {
	var num [20]byte
	w.WriteByte('*')
	w.Write(strconv.AppendInt(num[:0], int64(len(args)), 10))
	w.WriteString("\r\n")
	for _, a := range args {
		w.WriteByte('$')
		w.Write(strconv.AppendInt(num[:0], int64(len(a)), 10))
		w.WriteString("\r\n")
		w.Write(a)
		w.WriteString("\r\n")
	}
}

// readLine reads one CRLF-terminated line without the CRLF.
func (rc *respConn) readLine() ([]byte, error) {
	line, err := rc.r.ReadSlice('\n')
	if err != nil {
		if errors.Is(err, bufio.ErrBufferFull) {
			return nil, fmt.Errorf("%w: line too long", ErrRESPProtocol)
		}
		return nil, fmt.Errorf("redis: read: %w", err)
	}
	if len(line) < 2 || line[len(line)-2] != '\r' {
		return nil, fmt.Errorf("%w: line not CRLF-terminated", ErrRESPProtocol)
	}
	return line[:len(line)-2], nil
}

func (rc *respConn) readReply(buf []byte) (Reply, error) {
	return readReply(rc.r, buf, rc.readLine)
}

// readReply decodes one reply from r (readLine reads r's next line).
func readReply(r *bufio.Reader, buf []byte, readLine func() ([]byte, error)) (Reply, error) {
	line, err := readLine()
	if err != nil {
		return Reply{}, err
	}
	if len(line) == 0 {
		return Reply{}, fmt.Errorf("%w: empty line", ErrRESPProtocol)
	}
	body := line[1:]
	switch line[0] {
	case '+':
		return Reply{Type: '+', Bulk: append(buf[:0], body...)}, nil
	case '-':
		return Reply{}, RedisError(body)
	case ':':
		n, err := strconv.ParseInt(string(body), 10, 64)
		if err != nil {
			return Reply{}, fmt.Errorf("%w: bad integer %q", ErrRESPProtocol, body)
		}
		return Reply{Type: ':', Int: n}, nil
	case '$':
		n, err := strconv.Atoi(string(body))
		if err != nil || n < -1 || n > maxBulk {
			return Reply{}, fmt.Errorf("%w: bad bulk length %q", ErrRESPProtocol, body)
		}
		if n == -1 {
			return Reply{Type: '_'}, nil
		}
		if cap(buf) < n+2 {
			buf = make([]byte, n+2)
		}
		b := buf[:n+2]
		if _, err := io.ReadFull(r, b); err != nil {
			return Reply{}, fmt.Errorf("redis: read: %w", err)
		}
		if b[n] != '\r' || b[n+1] != '\n' {
			return Reply{}, fmt.Errorf("%w: bulk not CRLF-terminated", ErrRESPProtocol)
		}
		return Reply{Type: '$', Bulk: b[:n]}, nil
	case '*':
		if string(body) == "-1" {
			return Reply{Type: '_'}, nil
		}
		return Reply{}, ErrRESPUnsupported
	case '_':
		return Reply{Type: '_'}, nil
	}
	return Reply{}, fmt.Errorf("%w: unknown reply type %q", ErrRESPProtocol, line[0])
}
