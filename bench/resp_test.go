package bench

import (
	"bufio"
	"context"
	"errors"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// redisAddr returns the test Redis address, skipping when it is not reachable.
func redisAddr(t testing.TB) string {
	t.Helper()
	addr := os.Getenv("SHAKE_TEST_REDIS")
	if addr == "" {
		addr = DefaultRedisAddr
	}
	addr = strings.TrimPrefix(addr, "redis://")
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		if os.Getenv("SHAKE_TEST_REDIS") != "" {
			t.Fatalf("SHAKE_TEST_REDIS=%s is set but not reachable: %v", addr, err)
		}
		t.Skipf("skipping: Redis not reachable at %s and SHAKE_TEST_REDIS unset (%v)", addr, err)
	}
	c.Close()
	return addr
}

func TestReadReply(t *testing.T) {
	tests := []struct {
		in   string
		want Reply
		err  error
	}{
		{"+OK\r\n", Reply{Type: '+', Bulk: []byte("OK")}, nil},
		{":42\r\n", Reply{Type: ':', Int: 42}, nil},
		{":-3\r\n", Reply{Type: ':', Int: -3}, nil},
		{"$5\r\nhello\r\n", Reply{Type: '$', Bulk: []byte("hello")}, nil},
		{"$0\r\n\r\n", Reply{Type: '$', Bulk: []byte{}}, nil},
		{"$-1\r\n", Reply{Type: '_'}, nil},
		{"*-1\r\n", Reply{Type: '_'}, nil},
		{"_\r\n", Reply{Type: '_'}, nil},
		{"-ERR wrong type\r\n", Reply{}, RedisError("ERR wrong type")},
		{"*2\r\n$1\r\na\r\n$1\r\nb\r\n", Reply{}, ErrRESPUnsupported},
		{"$5\r\nhel\r\n", Reply{}, errors.New("short")},
		{"$3\r\nhelXX", Reply{}, ErrRESPProtocol},
		{"$x\r\n", Reply{}, ErrRESPProtocol},
		{"$99999999\r\n", Reply{}, ErrRESPProtocol},
		{":1.5\r\n", Reply{}, ErrRESPProtocol},
		{"?\r\n", Reply{}, ErrRESPProtocol},
		{"+OK\n", Reply{}, ErrRESPProtocol},
		{"\r\n", Reply{}, ErrRESPProtocol},
		{"", Reply{}, errors.New("eof")},
	}
	for _, tc := range tests {
		rc := &respConn{r: bufio.NewReader(strings.NewReader(tc.in))}
		got, err := rc.readReply(nil)
		switch {
		case tc.err == nil && err != nil:
			t.Errorf("%q: %v", tc.in, err)
		case tc.err != nil && err == nil:
			t.Errorf("%q: no error, got %+v", tc.in, got)
		case tc.err != nil:
			var re RedisError
			if (errors.Is(tc.err, ErrRESPProtocol) && !errors.Is(err, ErrRESPProtocol)) ||
				(errors.Is(tc.err, ErrRESPUnsupported) && !errors.Is(err, ErrRESPUnsupported)) ||
				(errors.As(tc.err, &re) && err.Error() != tc.err.Error()) {
				t.Errorf("%q: error %v, want %v", tc.in, err, tc.err)
			}
		case got.Type != tc.want.Type || got.Int != tc.want.Int || string(got.Bulk) != string(tc.want.Bulk):
			t.Errorf("%q: got %+v want %+v", tc.in, got, tc.want)
		}
	}
}

func TestWriteCommand(t *testing.T) {
	var sb strings.Builder
	w := bufio.NewWriter(&sb)
	writeCommand(w, []byte("LPOP"), []byte("k\r\n"))
	w.Flush()
	if sb.String() != "*2\r\n$4\r\nLPOP\r\n$3\r\nk\r\n\r\n" {
		t.Fatalf("%q", sb.String())
	}
}

func FuzzReadReply(f *testing.F) {
	for _, s := range []string{"+OK\r\n", ":1\r\n", "$3\r\nabc\r\n", "$-1\r\n", "-ERR x\r\n", "*1\r\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		rc := &respConn{r: bufio.NewReaderSize(strings.NewReader(string(in)), 16)}
		rep, err := rc.readReply(make([]byte, 0, 8))
		if err == nil && len(rep.Bulk) > len(in) {
			t.Fatalf("reply %+v longer than input %q", rep, in)
		}
	})
}

func TestRedisClientAgainstRedis(t *testing.T) {
	addr := redisAddr(t)
	c := NewRedisClient(addr, 4, 2*time.Second)
	defer c.Close()
	key := []byte("shake:bench:test:" + time.Now().Format("150405.000000000"))
	defer c.Do(nil, []byte("DEL"), key)
	if rep, err := c.Do(nil, []byte("PING")); err != nil || string(rep.Bulk) != "PONG" {
		t.Fatalf("PING: %+v %v", rep, err)
	}
	if rep, err := c.Do(nil, []byte("RPUSH"), key, []byte("a"), []byte("b\x00\r\n")); err != nil || rep.Int != 2 {
		t.Fatalf("RPUSH: %+v %v", rep, err)
	}
	if rep, err := c.Do(nil, []byte("LPOP"), key); err != nil || string(rep.Bulk) != "a" {
		t.Fatalf("LPOP: %+v %v", rep, err)
	}
	buf := make([]byte, 0, 64)
	if rep, err := c.Do(buf, []byte("LPOP"), key); err != nil || string(rep.Bulk) != "b\x00\r\n" {
		t.Fatalf("LPOP binary: %+v %v", rep, err)
	}
	if rep, err := c.Do(nil, []byte("LPOP"), key); err != nil || !rep.Nil() {
		t.Fatalf("LPOP empty: %+v %v", rep, err)
	}
	// An error reply leaves the connection usable.
	c.Do(nil, []byte("SET"), key, []byte("x"))
	var re RedisError
	if _, err := c.Do(nil, []byte("LPOP"), key); !errors.As(err, &re) {
		t.Fatalf("LPOP on a string: %v", err)
	}
	if _, err := c.Do(nil, []byte("PING")); err != nil {
		t.Fatalf("connection unusable after an error reply: %v", err)
	}
}

func TestRedisClientPoolBound(t *testing.T) {
	addr := redisAddr(t)
	c := NewRedisClient(addr, 2, 2*time.Second)
	var wg sync.WaitGroup
	for i := 0; i < 50; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := c.Do(nil, []byte("PING")); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	// Never more than two connections were opened: both are idle now, no slot is left.
	if len(c.idle) > 2 || len(c.idle)+len(c.slots) != 2 {
		t.Fatalf("idle %d free slots %d, want a total of 2", len(c.idle), len(c.slots))
	}
	c.Close()
	if _, err := c.Do(nil, []byte("PING")); !errors.Is(err, ErrRedisClosed) {
		t.Fatalf("after Close: %v", err)
	}
}

func TestRedisClientUnreachable(t *testing.T) {
	c := NewRedisClient("127.0.0.1:1", 1, time.Second)
	if _, err := c.Do(nil, []byte("PING")); err == nil {
		t.Fatal("no error from an unreachable Redis")
	}
	if len(c.slots) != 1 {
		t.Fatal("a failed dial leaked its pool slot")
	}
}

func TestRedisDispenser(t *testing.T) {
	addr := redisAddr(t)
	ctx := context.Background()
	d, err := NewRedisDispenser(ctx, addr, 2500, 4)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if n, err := d.Len(); err != nil || n != 2500 {
		t.Fatalf("list holds %d, %v", n, err)
	}
	seen := map[uint64]bool{}
	for i := 0; i < 2500; i++ {
		id, amount, _, err := d.take(ctx, 1)
		if err != nil || seen[id] || amount != baselineAmount(id) || id < 1 || id > 2500 {
			t.Fatalf("take %d: id %d amount %d err %v", i, id, amount, err)
		}
		seen[id] = true
	}
	if _, _, _, err := d.take(ctx, 1); !errors.Is(err, errNoTicket) {
		t.Fatalf("take from an empty list: %v", err)
	}
}
