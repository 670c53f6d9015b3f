package chaos

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"shake/ticket"
)

// rawAnswer is what one raw request got: an HTTP status, or a closed connection (0).
type rawAnswer struct {
	status int
	body   []byte
	err    error
}

// rawRequest sends b on a new connection to addr (half-closing when closeWrite, as a
// client that gave up mid-request) and reads one answer, within timeout.
func rawRequest(addr string, b []byte, closeWrite bool, timeout time.Duration) rawAnswer {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return rawAnswer{err: err}
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(timeout))
	if _, err := c.Write(b); err != nil {
		return rawAnswer{err: err}
	}
	if closeWrite {
		_ = c.(*net.TCPConn).CloseWrite()
	}
	return readAnswer(c)
}

func readAnswer(c net.Conn) rawAnswer {
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return rawAnswer{err: err}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return rawAnswer{status: resp.StatusCode, body: body, err: err}
}

// slowRequest sends b one byte every gap (slowloris), for at most limit, and reads what
// the server answers (a slow client must be timed out, not served forever).
func slowRequest(addr string, b []byte, gap, limit time.Duration) rawAnswer {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return rawAnswer{err: err}
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(limit + 10*time.Second))
	end := time.Now().Add(limit)
	for i := 0; i < len(b) && time.Now().Before(end); i++ {
		if _, err := c.Write(b[i : i+1]); err != nil {
			break // the server hung up on us: read what it said, if anything
		}
		time.Sleep(gap)
	}
	return readAnswer(c)
}

func httpReq(method, path, auth, ctype string, body []byte, extra string) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: shake\r\nConnection: close\r\n", method, path)
	if auth != "" {
		fmt.Fprintf(&b, "Authorization: %s\r\n", auth)
	}
	if ctype != "" {
		fmt.Fprintf(&b, "Content-Type: %s\r\n", ctype)
	}
	b.WriteString(extra)
	fmt.Fprintf(&b, "Content-Length: %d\r\n\r\n", len(body))
	b.Write(body)
	return b.Bytes()
}

// tally counts answers by (category, outcome).
type tally struct {
	mu sync.Mutex
	m  map[string]map[string]int
}

func (t *tally) add(cat, outcome string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.m == nil {
		t.m = map[string]map[string]int{}
	}
	if t.m[cat] == nil {
		t.m[cat] = map[string]int{}
	}
	t.m[cat][outcome]++
}

func (t *tally) String() string {
	var lines []string
	total := 0
	for cat, m := range t.m {
		var parts []string
		for k, v := range m {
			parts = append(parts, fmt.Sprintf("%s=%d", k, v))
			total += v
		}
		sort.Strings(parts)
		lines = append(lines, fmt.Sprintf("  %-28s %s", cat, strings.Join(parts, " ")))
	}
	sort.Strings(lines)
	return fmt.Sprintf("%d requests\n%s", total, strings.Join(lines, "\n"))
}

// TestMalformedRequests starts a real edge and a real verifier (with a real broker) and
// replays a few thousand malformed requests over raw TCP (truncated, oversized bodies and
// headers, slow clients, wrong content types, bit-flipped and other users' tokens,
// garbage), interleaved with good ones. No answer may be a 5xx other than those docs/api.md
// names (the verifier's 503), every answer must be JSON, both servers must stay up, and
// every good request must be answered correctly.
func TestMalformedRequests(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes; skipped with -short")
	}
	bin := shakeBinary(t)
	dir := t.TempDir()
	c := newCampaign(t, bin, filepath.Join(dir, "campaign"), "malformed", 6000, 2, 1, 1)
	logs := filepath.Join(dir, "logs")
	ctx := context.Background()
	mk := func(name string, args []string, http bool) *service {
		s, err := newService(name, bin, args, logs, http)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	if err := os.MkdirAll(logs, 0o755); err != nil {
		t.Fatal(err)
	}
	brk := mk("broker", []string{"broker", "--partitions", "2", "--log-format", "json"}, false)
	edge := mk("edge-000", c.edgeArgs(0), true)
	ver := mk("verifier", c.verifierArgs(brk.addr), true)
	for _, s := range []*service{brk, edge, ver} {
		if err := s.start(ctx); err != nil {
			t.Fatalf("starting %s: %v (log %s)", s.name, err, s.logPath)
		}
		defer func(s *service) {
			if err := s.stop(30 * time.Second); err != nil {
				t.Errorf("%s did not exit 0 on SIGTERM after the malformed requests: %v", s.name, err)
			}
		}(s)
	}

	rng := rand.New(rand.NewPCG(7, 11))
	var rngMu sync.Mutex
	intn := func(n int) int { rngMu.Lock(); defer rngMu.Unlock(); return rng.IntN(n) }
	exp := time.Now().Add(time.Hour).Unix()
	bearer := func(uid uint64) string { return "Bearer " + string(c.sess.Mint(nil, uid, exp)) }

	var tl tally
	var failMu sync.Mutex
	failures := 0
	fail := func(format string, args ...any) {
		failMu.Lock()
		defer failMu.Unlock()
		failures++
		if failures <= 30 {
			t.Errorf(format, args...)
		}
	}
	// check applies the rules every answer must follow and counts it.
	check := func(server, cat string, a rawAnswer, allowed ...int) {
		if a.status == 0 {
			tl.add(server+" "+cat, "no-answer")
			return
		}
		tl.add(server+" "+cat, strconv.Itoa(a.status))
		if a.status >= 500 && !(server == "verifier" && a.status == 503) {
			fail("%s %s: status %d, a 5xx docs/api.md does not name: %s", server, cat, a.status, a.body)
		}
		if !json.Valid(a.body) {
			fail("%s %s: status %d with a body that is not JSON: %q", server, cat, a.status, a.body)
		}
		ok := len(allowed) == 0
		for _, s := range allowed {
			ok = ok || s == a.status
		}
		if !ok {
			fail("%s %s: status %d, want one of %v: %s", server, cat, a.status, allowed, a.body)
		}
	}

	// Good requests: a shake by a fresh user, and opening what was won.
	type won struct {
		uid uint64
		tok string
		t   ticket.TicketToken
	}
	var poolMu sync.Mutex
	var pool []won
	var nextUID uint64 = 1000
	newUID := func() uint64 { poolMu.Lock(); defer poolMu.Unlock(); nextUID++; return nextUID }
	takeWon := func() (won, bool) {
		poolMu.Lock()
		defer poolMu.Unlock()
		if len(pool) == 0 {
			return won{}, false
		}
		w := pool[len(pool)-1]
		pool = pool[:len(pool)-1]
		return w, true
	}
	goodShake := func() {
		uid := newUID()
		a := rawRequest(edge.addr, httpReq("POST", "/v1/shake", bearer(uid), "", nil, ""), false, 15*time.Second)
		check("edge", "good shake", a, 200, 429)
		if a.status != 200 {
			if a.status == 0 {
				fail("good shake got no answer: %v", a.err)
			}
			return
		}
		var ans struct{ Result, Token string }
		if err := json.Unmarshal(a.body, &ans); err != nil {
			fail("good shake: %v: %s", err, a.body)
			return
		}
		switch ans.Result {
		case "miss":
		case "won":
			var tt ticket.TicketToken
			if err := c.opener.Open(&tt, []byte(ans.Token), make([]byte, 0, ticket.TokenRawLen)); err != nil || tt.UID != uid {
				fail("good shake: won token does not open for uid %d: %v", uid, err)
				return
			}
			poolMu.Lock()
			pool = append(pool, won{uid, ans.Token, tt})
			poolMu.Unlock()
		default:
			fail("good shake: unexpected answer %s", a.body)
		}
	}
	openBody := func(tok string) []byte { return []byte(`{"token":"` + tok + `"}`) }
	goodOpen := func(w won) {
		for attempt := 0; ; attempt++ {
			a := rawRequest(ver.addr, httpReq("POST", "/v1/open", bearer(w.uid), "application/json", openBody(w.tok), ""), false, 15*time.Second)
			check("verifier", "good open", a, 200, 503)
			if a.status == 503 && attempt < 5 {
				time.Sleep(time.Second) // the verifier's own retry_after_ms hint
				continue
			}
			var ans struct {
				Result, Ticket string
				Amount         int64
			}
			if a.status != 200 || json.Unmarshal(a.body, &ans) != nil || ans.Result != "opened" ||
				ans.Ticket != strconv.FormatUint(w.t.Ticket, 10) || ans.Amount != int64(w.t.Amount) {
				fail("good open of ticket %d (uid %d, amount %d): status %d %s %v", w.t.Ticket, w.uid, w.t.Amount, a.status, a.body, a.err)
			}
			return
		}
	}
	// Seed the pool so that token-based malformed requests have material.
	for i := 0; i < 60; i++ {
		goodShake()
	}

	long := strings.Repeat("a", 70<<10)
	garbage := func() []byte {
		b := make([]byte, 1+intn(4096))
		rngMu.Lock()
		for i := range b {
			b[i] = byte(rng.UintN(256))
		}
		rngMu.Unlock()
		return b
	}
	truncate := func(b []byte) []byte { return b[:1+intn(len(b)-1)] }
	flip := func(s string) string {
		b := []byte(s)
		i := intn(len(b))
		b[i] ^= byte(1 << intn(8))
		return string(b)
	}
	// flipSession flips one bit of the session token itself: flipping a letter's case
	// in the "Bearer" scheme would be no tampering (the scheme is case-insensitive).
	flipSession := func(uid uint64) string { return "Bearer " + flip(string(c.sess.Mint(nil, uid, exp))) }
	// Each malformed kind sends one request and checks its answer. Those that use a
	// won token put it back unopened (or open it properly) so that every genuine ticket
	// is finally opened by its owner with the right answer.
	kinds := []func(){
		func() { // truncated shake
			a := rawRequest(edge.addr, truncate(httpReq("POST", "/v1/shake", bearer(newUID()), "", nil, "")), true, 15*time.Second)
			check("edge", "truncated", a, 400, 408, 200, 429)
		},
		func() { // truncated open
			w, ok := takeWon()
			if !ok {
				return
			}
			a := rawRequest(ver.addr, truncate(httpReq("POST", "/v1/open", bearer(w.uid), "application/json", openBody(w.tok), "")), true, 15*time.Second)
			check("verifier", "truncated", a, 400, 408, 200, 503)
			goodOpen(w) // whatever the cut request did, the owner still opens it
		},
		func() { // oversized body
			a := rawRequest(edge.addr, httpReq("POST", "/v1/shake", bearer(newUID()), "application/json", []byte(long), ""), false, 15*time.Second)
			check("edge", "oversized body", a, 413)
			a = rawRequest(ver.addr, httpReq("POST", "/v1/open", bearer(newUID()), "application/json", []byte(`{"token":"`+long+`"}`), ""), false, 15*time.Second)
			check("verifier", "oversized body", a, 413)
		},
		func() { // oversized headers
			extra := "X-Junk: " + long + "\r\n"
			check("edge", "oversized header", rawRequest(edge.addr, httpReq("POST", "/v1/shake", bearer(newUID()), "", nil, extra), false, 15*time.Second), 431, 413, 400)
			check("verifier", "oversized header", rawRequest(ver.addr, httpReq("POST", "/v1/open", bearer(newUID()), "", []byte("{}"), extra), false, 15*time.Second), 431, 413, 400)
		},
		func() { // wrong content types, genuine token: the content type is not what opens
			w, ok := takeWon()
			if !ok {
				return
			}
			ct := []string{"text/plain", "multipart/form-data; boundary=x", "application/x-www-form-urlencoded", "application/json; charset=utf-16", "\x01\x02"}[intn(5)]
			a := rawRequest(ver.addr, httpReq("POST", "/v1/open", bearer(w.uid), ct, openBody(w.tok), ""), false, 15*time.Second)
			check("verifier", "wrong content type", a, 200, 400, 503)
			goodOpen(w)
			// A control character in a header is a malformed request (400), not a type.
			check("edge", "wrong content type", rawRequest(edge.addr, httpReq("POST", "/v1/shake", bearer(newUID()), ct, nil, ""), false, 15*time.Second), 200, 429, 400)
		},
		func() { // bit-flipped token, then the owner opens the real one
			w, ok := takeWon()
			if !ok {
				return
			}
			f := flip(w.tok)
			a := rawRequest(ver.addr, httpReq("POST", "/v1/open", bearer(w.uid), "application/json", openBody(f), ""), false, 15*time.Second)
			if f != w.tok {
				check("verifier", "bit-flipped token", a, 422, 400)
			}
			goodOpen(w)
		},
		func() { // another user's token: 403, and it must not have claimed the ticket
			w, ok := takeWon()
			if !ok {
				return
			}
			a := rawRequest(ver.addr, httpReq("POST", "/v1/open", bearer(w.uid+1_000_000), "application/json", openBody(w.tok), ""), false, 15*time.Second)
			check("verifier", "other user's token", a, 403)
			goodOpen(w)
		},
		func() { // bit-flipped session
			check("edge", "bit-flipped session", rawRequest(edge.addr, httpReq("POST", "/v1/shake", flipSession(newUID()), "", nil, ""), false, 15*time.Second), 401, 400)
			check("verifier", "bit-flipped session", rawRequest(ver.addr, httpReq("POST", "/v1/open", flipSession(newUID()), "application/json", []byte(`{"token":"x"}`), ""), false, 15*time.Second), 401, 400)
		},
		func() { // expired session
			old := "Bearer " + string(c.sess.Mint(nil, newUID(), time.Now().Add(-time.Minute).Unix()))
			check("edge", "expired session", rawRequest(edge.addr, httpReq("POST", "/v1/shake", old, "", nil, ""), false, 15*time.Second), 401)
			check("verifier", "expired session", rawRequest(ver.addr, httpReq("POST", "/v1/open", old, "application/json", []byte(`{"token":"x"}`), ""), false, 15*time.Second), 401)
		},
		func() { // bad JSON bodies
			bodies := []string{``, `{`, `null`, `[]`, `{"token":12}`, `{"token":"\u0000"}`, `{"tok":"a"}`, "\xff\xfe", `{"token":"a","token":"b"}`}
			b := bodies[intn(len(bodies))]
			check("verifier", "bad json", rawRequest(ver.addr, httpReq("POST", "/v1/open", bearer(newUID()), "application/json", []byte(b), ""), false, 15*time.Second), 400, 422)
		},
		func() { // wrong method or path
			m := []string{"GET", "PUT", "DELETE", "PATCH", "OPTIONS"}[intn(5)]
			check("edge", "wrong method", rawRequest(edge.addr, httpReq(m, "/v1/shake", bearer(newUID()), "", nil, ""), false, 15*time.Second), 405)
			check("verifier", "wrong method", rawRequest(ver.addr, httpReq(m, "/v1/open", bearer(newUID()), "", nil, ""), false, 15*time.Second), 405)
			p := []string{"/", "/v1", "/v1/shake/x", "/v1/open", "/%2e%2e/etc/passwd", "/v1/shake?" + strings.Repeat("q", 2000)}[intn(6)]
			check("edge", "unknown path", rawRequest(edge.addr, httpReq("POST", p, bearer(newUID()), "", nil, ""), false, 15*time.Second), 404, 200, 429)
			check("verifier", "unknown path", rawRequest(ver.addr, httpReq("POST", strings.Replace(p, "open", "shake", 1), bearer(newUID()), "", nil, ""), false, 15*time.Second), 404, 405, 400, 401)
		},
		func() { // garbage bytes
			check("edge", "garbage", rawRequest(edge.addr, garbage(), true, 15*time.Second), 400, 408, 431, 413)
			check("verifier", "garbage", rawRequest(ver.addr, garbage(), true, 15*time.Second), 400, 408, 431, 413)
		},
		func() { // chunked body and a lying Content-Length
			chunked := []byte("POST /v1/shake HTTP/1.1\r\nHost: s\r\nAuthorization: " + bearer(newUID()) + "\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
			check("edge", "chunked body", rawRequest(edge.addr, chunked, false, 15*time.Second), 413, 400)
			lying := []byte("POST /v1/open HTTP/1.1\r\nHost: s\r\nAuthorization: " + bearer(newUID()) + "\r\nContent-Length: 50\r\nConnection: close\r\n\r\n{}")
			check("verifier", "short body", rawRequest(ver.addr, lying, true, 15*time.Second), 400, 408)
		},
	}

	// Slow clients (slowloris, bounded): a handful at a time, each at most 8 s, while the
	// rest goes on; each must be cut off by the server's read timeout or served, never
	// crash it.
	var slowWG sync.WaitGroup
	for i := 0; i < 8; i++ {
		slowWG.Add(1)
		go func(i int) {
			defer slowWG.Done()
			addr, server := edge.addr, "edge"
			req := httpReq("POST", "/v1/shake", bearer(newUID()), "", nil, "")
			if i%2 == 1 {
				addr, server = ver.addr, "verifier"
				req = httpReq("POST", "/v1/open", bearer(newUID()), "application/json", []byte(`{"token":"x"}`), "")
			}
			check(server, "slow client", slowRequest(addr, req, 50*time.Millisecond, 8*time.Second), 408, 400, 401, 422, 200, 429)
		}(i)
	}

	// The malformed requests, interleaved with good ones, from a few workers.
	const total = 2400
	var wg sync.WaitGroup
	jobs := make(chan int)
	for w := 0; w < 6; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				switch {
				case i%5 == 0:
					goodShake()
				case i%11 == 0:
					if w, ok := takeWon(); ok {
						goodOpen(w)
					}
				default:
					kinds[intn(len(kinds))]()
				}
			}
		}()
	}
	for i := 0; i < total; i++ {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	slowWG.Wait()
	// Open whatever is still unopened: every genuine ticket must open for its owner.
	for {
		w, ok := takeWon()
		if !ok {
			break
		}
		goodOpen(w)
	}

	// Both servers alive and healthy, and no crash in their logs.
	for _, s := range []*service{edge, ver} {
		if !s.running() {
			t.Errorf("%s is not running after the malformed requests", s.name)
			continue
		}
		resp, err := http.Get("http://" + s.addr + "/healthz")
		if err != nil || resp.StatusCode != 200 {
			t.Errorf("%s /healthz after the malformed requests: %v %v", s.name, err, resp)
		}
		if resp != nil {
			resp.Body.Close()
		}
		if fds, err := fdCount(s.current().Pid()); err == nil && fds >= 1000 {
			t.Errorf("%s holds %d file descriptors after the malformed requests (bound 1000)", s.name, fds)
		}
	}
	for _, s := range []*service{brk, edge, ver} {
		hits, err := scanLog(s.logPath, 5)
		if err != nil && !errors.Is(err, io.EOF) {
			t.Error(err)
		}
		for _, h := range hits {
			t.Errorf("%s log: %s", s.name, h)
		}
	}
	t.Logf("answers by kind:\n%s", tl.String())
	if failures > 30 {
		t.Errorf("%d failures in all (first 30 shown)", failures)
	}
}
