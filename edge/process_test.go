package edge

import (
	"bufio"
	"encoding/json"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"shake/internal/testbin"
)

// The whole-process tests drive the real binary (`shake edge`), built once.
func TestMain(m *testing.M) {
	code := m.Run()
	testbin.Remove()
	os.Exit(code)
}

func needBinary(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("whole-process test skipped in -short mode")
	}
	testbin.Shake(t)
}

type edgeProc struct {
	cmd   *exec.Cmd
	addr  string
	admin string // the admin listener: /metrics
	done  chan error
	log   *strings.Builder
	mu    *sync.Mutex
}

var (
	addrRE  = regexp.MustCompile(`msg="edge ready".* addr=(\S+)`)
	adminRE = regexp.MustCompile(`msg="admin listening".* addr=(\S+)`)
)

// startProc starts `shake edge` on f with extra flags and waits until it is ready.
func startProc(t *testing.T, f *fixture, state string, extra ...string) *edgeProc {
	t.Helper()
	args := append([]string{"edge", "--tickets", f.tickets, "--key", f.key, "--session-key", f.sessPath,
		"--state", state, "--listen", "127.0.0.1:0"}, extra...)
	cmd := exec.Command(testbin.Shake(t), args...)
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &edgeProc{cmd: cmd, done: make(chan error, 1), log: &strings.Builder{}, mu: &sync.Mutex{}}
	addrc := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			p.log.WriteString(line + "\n")
			p.mu.Unlock()
			if m := adminRE.FindStringSubmatch(line); m != nil {
				addrc <- m[1]
			}
		}
		p.done <- cmd.Wait()
	}()
	select {
	case p.admin = <-addrc:
		m := addrRE.FindStringSubmatch(p.logs())
		if m == nil {
			t.Fatalf("admin listening before the edge was ready:\n%s", p.logs())
		}
		p.addr = m[1]
	case err := <-p.done:
		t.Fatalf("edge exited before ready: %v\n%s", err, p.logs())
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("edge not ready in time:\n%s", p.logs())
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
		}
	})
	return p
}

// firstStart returns args with --init-state in front when first is set: only a
// shard's very first start creates its state file.
func firstStart(first bool, args ...string) []string {
	if first {
		return append([]string{"--init-state"}, args...)
	}
	return args
}

func (p *edgeProc) logs() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.log.String()
}

// metric reads one unlabelled (or fully labelled) sample from /metrics.
func (p *edgeProc) metric(t *testing.T, name string) uint64 {
	t.Helper()
	code, body, err := fasthttp.GetTimeout(nil, "http://"+p.admin+"/metrics", 5*time.Second)
	if err != nil || code != 200 {
		t.Fatalf("metrics: %d %v", code, err)
	}
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			n, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("metric %s: %q", name, v)
			}
			return uint64(n)
		}
	}
	t.Fatalf("metric %s missing", name)
	return 0
}

// crowd is a population of simulated users shaking one edge.
type crowd struct {
	f      *fixture
	auths  []string
	client *fasthttp.Client
	mu     sync.Mutex
	tokens map[string]uint64 // token -> uid
	failed atomic.Int64      // requests that got no answer (edge killed under them)
	other  atomic.Int64      // unexpected answers
}

func newCrowd(f *fixture, users int) *crowd {
	c := &crowd{f: f, tokens: map[string]uint64{},
		client: &fasthttp.Client{MaxConnsPerHost: users + 10, ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second}}
	for i := 0; i < users; i++ {
		c.auths = append(c.auths, "Bearer "+f.session(uint64(i+1)))
	}
	return c
}

// shakeUntil runs every user concurrently until the pool is empty (each user stops at
// its first miss) or stop is closed, or the edge goes away.
func (c *crowd) shakeUntil(addr string, stop <-chan struct{}) {
	var wg sync.WaitGroup
	for i := range c.auths {
		wg.Add(1)
		go func(uid uint64, auth string) {
			defer wg.Done()
			req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
			defer fasthttp.ReleaseRequest(req)
			defer fasthttp.ReleaseResponse(resp)
			for {
				select {
				case <-stop:
					return
				default:
				}
				req.Reset()
				req.Header.SetMethod("POST")
				req.SetRequestURI("http://" + addr + ShakePath)
				req.Header.Set("Authorization", auth)
				if err := c.client.DoTimeout(req, resp, 10*time.Second); err != nil {
					c.failed.Add(1)
					return
				}
				var w wonBody
				if resp.StatusCode() != 200 || json.Unmarshal(resp.Body(), &w) != nil {
					if resp.StatusCode() == 429 {
						continue
					}
					c.other.Add(1)
					return
				}
				switch w.Result {
				case "won":
					c.mu.Lock()
					c.tokens[w.Token] = uid
					c.mu.Unlock()
				case "miss":
					return
				default:
					c.other.Add(1)
					return
				}
			}
		}(uint64(i+1), c.auths[i])
	}
	wg.Wait()
}

// check opens every token: each ticket id at most once, each bound to its user.
func (c *crowd) check(t *testing.T) int {
	t.Helper()
	seen := make(map[uint64]bool, len(c.tokens))
	for tok, uid := range c.tokens {
		id := c.f.checkToken(t, tok, uid)
		if seen[id] {
			t.Fatalf("ticket %d issued twice", id)
		}
		seen[id] = true
	}
	return len(seen)
}

func TestProcessDrainPoolAndSIGTERM(t *testing.T) {
	t.Parallel()
	needBinary(t)
	const count = 20000
	f := newFixture(t, shardSpec{count: count})
	state := filepath.Join(f.dir, "edge.state")
	p := startProc(t, f, state, "--init-state", "--per-user", "0")
	c := newCrowd(f, 1000)
	c.shakeUntil(p.addr, nil)
	if c.failed.Load() != 0 || c.other.Load() != 0 {
		t.Fatalf("failed %d, unexpected %d", c.failed.Load(), c.other.Load())
	}
	issued := uint64(c.check(t))
	lost, left := p.metric(t, "shake_edge_tickets_lost_total"), p.metric(t, "shake_edge_tickets_left")
	if issued != count || lost != 0 || left != 0 || p.metric(t, "shake_edge_tickets_issued_total") != count {
		t.Fatalf("issued %d lost %d left %d, want %d 0 0", issued, lost, left, count)
	}
	// SIGTERM: exit 0, state synced.
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.done:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v\n%s", err, p.logs())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no exit after SIGTERM")
	}
	if !strings.Contains(p.logs(), "state synced") {
		t.Fatalf("no state sync logged:\n%s", p.logs())
	}
	p2 := startProc(t, f, state)
	if got := p2.metric(t, "shake_edge_tickets_issued_total"); got != count {
		t.Fatalf("after restart issued %d", got)
	}
	p2.cmd.Process.Signal(syscall.SIGTERM)
	<-p2.done
}

// TestProcessSIGTERMReturnsReservation: a clean stop mid-pool loses nothing.
func TestProcessSIGTERMMidPool(t *testing.T) {
	t.Parallel()
	needBinary(t)
	const count = 50000
	f := newFixture(t, shardSpec{count: count})
	state := filepath.Join(f.dir, "edge.state")
	p := startProc(t, f, state, "--init-state", "--per-user", "0")
	c := newCrowd(f, 200)
	stop := make(chan struct{})
	go func() { time.Sleep(300 * time.Millisecond); close(stop) }()
	c.shakeUntil(p.addr, stop)
	p.cmd.Process.Signal(syscall.SIGTERM)
	if err := <-p.done; err != nil {
		t.Fatalf("exit: %v", err)
	}
	p = startProc(t, f, state, "--per-user", "0")
	c.shakeUntil(p.addr, nil)
	issued := uint64(c.check(t))
	if lost := p.metric(t, "shake_edge_tickets_lost_total"); lost != 0 || issued != count {
		t.Fatalf("issued %d lost %d after a clean stop", issued, lost)
	}
}

func TestProcessSIGKILLNeverTwice(t *testing.T) {
	t.Parallel()
	needBinary(t)
	const count = 40000
	f := newFixture(t, shardSpec{count: count})
	state := filepath.Join(f.dir, "edge.state")
	c := newCrowd(f, 1000)
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	for kill := 0; kill < 6; kill++ {
		p := startProc(t, f, state, firstStart(kill == 0, "--per-user", "0")...)
		stop := make(chan struct{})
		go func() {
			time.Sleep(time.Duration(20+rng.IntN(250)) * time.Millisecond)
			p.cmd.Process.Kill() // SIGKILL, in the middle of the crowd
			close(stop)
		}()
		c.shakeUntil(p.addr, stop)
		<-p.done
	}
	p := startProc(t, f, state, "--per-user", "0")
	c.shakeUntil(p.addr, nil)
	received := uint64(c.check(t))
	lost := p.metric(t, "shake_edge_tickets_lost_total")
	left := p.metric(t, "shake_edge_tickets_left")
	issued := p.metric(t, "shake_edge_tickets_issued_total")
	t.Logf("received %d, edge issued %d, lost %d, left %d, requests cut by kills %d", received, issued, lost, left, c.failed.Load())
	if issued+lost+left != count {
		t.Fatalf("edge accounting: issued %d + lost %d + left %d != %d", issued, lost, left, count)
	}
	// Every ticket a user holds was issued; the only issued tickets no user holds are
	// those whose answer was cut off by a kill (at most one per cut request).
	if received > issued || issued-received > uint64(c.failed.Load()) {
		t.Fatalf("received %d, issued %d, cut requests %d", received, issued, c.failed.Load())
	}
	if left != 0 {
		t.Fatalf("pool not drained: %d left", left)
	}
}

func TestProcessBadSessionsAndStartupErrors(t *testing.T) {
	t.Parallel()
	needBinary(t)
	f := newFixture(t, shardSpec{count: 10})
	state := filepath.Join(f.dir, "edge.state")
	p := startProc(t, f, state, "--init-state")
	for _, auth := range []string{"", "Bearer x", "Bearer " + f.session(1) + "x", "Bearer " + string(f.sess.Mint(nil, 1, 1))} {
		req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		req.Header.SetMethod("POST")
		req.SetRequestURI("http://" + p.addr + ShakePath)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		if err := fasthttp.DoTimeout(req, resp, 5*time.Second); err != nil || resp.StatusCode() != 401 || string(resp.Body()) != `{"error":"unauthorized"}` {
			t.Fatalf("auth %q: %v %d %s", auth, err, resp.StatusCode(), resp.Body())
		}
	}
	// A second edge on the same state file is refused with one line and exit 2.
	out, err := exec.Command(testbin.Shake(t), "edge", "--tickets", f.tickets, "--key", f.key, "--session-key", f.sessPath,
		"--state", state, "--listen", "127.0.0.1:0").CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 || strings.Count(string(out), "\n") != 1 || !strings.Contains(string(out), "in use") {
		t.Fatalf("second edge: %v %q", err, out)
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	<-p.done
	corrupt := filepath.Join(f.dir, "bad.tickets")
	os.WriteFile(corrupt, []byte("SHAKETK1 nope"), 0o600)
	out, err = exec.Command(testbin.Shake(t), "edge", "--tickets", corrupt, "--key", f.key, "--session-key", f.sessPath,
		"--state", filepath.Join(f.dir, "x.state")).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 2 || strings.Count(string(out), "\n") != 1 {
		t.Fatalf("corrupt shard: %v %q", err, out)
	}
}
