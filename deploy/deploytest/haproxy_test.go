//go:build linux

package deploytest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"shake/ticket"
)

// renderHAProxy writes deploy/haproxy/render.sh's output for args into dir/haproxy.cfg.
func renderHAProxy(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("sh", append([]string{filepath.Join(deployDir(t), "haproxy", "render.sh")}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("render.sh %v: %v\n%s", args, err, stderr.String())
	}
	cfg := filepath.Join(dir, "haproxy.cfg")
	if err := os.WriteFile(cfg, out, 0o644); err != nil {
		t.Fatal(err)
	}
	return cfg
}

// startHAProxy checks and runs Debian's haproxy on cfg in the foreground until the test
// ends, and waits for its admin listener.
func startHAProxy(t *testing.T, dir, cfg, admin string) {
	t.Helper()
	haproxy := tool(t, "haproxy", "haproxy")
	if out, err := exec.Command(haproxy, "-c", "-q", "-f", cfg).CombinedOutput(); err != nil {
		t.Fatalf("haproxy -c: %v\n%s", err, out)
	}
	startProc(t, dir, "haproxy", "", "", haproxy, "-db", "-f", cfg)
	waitHTTP(t, "http://"+admin+"/healthz", 10*time.Second)
}

// answer is one HTTP answer.
type answer struct {
	status      int
	contentType string
	body        []byte
}

var proxyClient = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 16}}

// freshClient opens a new connection for every request. On a connection that already
// carried a request, HAProxy answers a failure to reach the server by closing the
// connection without an answer, on purpose, so that the client knows it may retry (as it
// would had the server itself closed it); on a new connection it sends its 503.
var freshClient = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

// post sends POST url with the session token (if any) and body.
func post(url, session, body string) (answer, error) {
	return postWith(proxyClient, url, session, body)
}

func postWith(c *http.Client, url, session, body string) (answer, error) {
	req, err := http.NewRequest("POST", url, strings.NewReader(body))
	if err != nil {
		return answer{}, err
	}
	if session != "" {
		req.Header.Set("Authorization", "Bearer "+session)
	}
	resp, err := c.Do(req)
	if err != nil {
		return answer{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	return answer{resp.StatusCode, resp.Header.Get("Content-Type"), b}, err
}

// parallel calls f(i) for i in [0, n) on 8 goroutines and returns the first error.
func parallel(n int, f func(i int) error) error {
	var mu sync.Mutex
	var first error
	var wg sync.WaitGroup
	next := make(chan int)
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := f(i); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
				}
			}
		}()
	}
	for i := 0; i < n; i++ {
		next <- i
	}
	close(next)
	wg.Wait()
	return first
}

// uidsAcrossUint64 returns the corners of the uid rule (the 18/19/20-digit borders, the
// signed 64-bit border, the largest uint64) and n random uids over the whole range.
func uidsAcrossUint64(n int, rng *rand.Rand) []uint64 {
	uids := []uint64{0, 1, 2, 6, 7, 8, 999999999999999999, 1e18, 1e18 + 1, 9999999999999999999, 1e19, 1e19 + 1,
		math.MaxInt64 - 1, math.MaxInt64, math.MaxInt64 + 1, math.MaxUint64 - 1, math.MaxUint64}
	for i := 0; i < n; i++ {
		switch i % 3 {
		case 0:
			uids = append(uids, rng.Uint64())
		case 1:
			uids = append(uids, rng.Uint64N(1e18))
		default:
			uids = append(uids, math.MaxInt64+rng.Uint64N(math.MaxInt64))
		}
	}
	return uids
}

// TestHAProxyUIDRule proves the proxy's uid mod V on the digits against Go's uint64
// arithmetic, for V = 7 (10^18 mod 7 = 1, so the high digits count), over the corners
// and thousands of random uids of the whole uint64 range: each stand-in verifier answers
// its shard index. A malformed or missing session goes to shard 0 (whose verifier
// answers 401), /v1/shake to the edge, and a shard whose verifier is gone answers 503
// JSON from the proxy, not HTML.
func TestHAProxyUIDRule(t *testing.T) {
	t.Parallel()
	tool(t, "haproxy", "haproxy")
	dir := t.TempDir()
	const V = 7
	args := []string{"-V", strconv.Itoa(V)}
	var shards []*httptest.Server
	for i := 0; i < V; i++ {
		i := i
		s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, `{"shard":%d,"path":%q}`, i, r.URL.Path)
		}))
		t.Cleanup(s.Close)
		shards = append(shards, s)
		args = append(args, "-v", strings.TrimPrefix(s.URL, "http://"))
	}
	edge := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, `{"shard":-1,"path":%q}`, r.URL.Path)
	}))
	t.Cleanup(edge.Close)
	listen, admin := freePort(t), freePort(t)
	args = append(args, "-e", strings.TrimPrefix(edge.URL, "http://"), "-l", listen, "-a", admin)
	startHAProxy(t, dir, renderHAProxy(t, dir, args...), admin)
	base := "http://" + listen

	shardOf := func(path, session string) (int, error) {
		a, err := post(base+path, session, `{"token":"x"}`)
		if err != nil {
			return 0, err
		}
		var got struct{ Shard int }
		if a.status != 200 || json.Unmarshal(a.body, &got) != nil {
			return 0, fmt.Errorf("%s %q: %d %s", path, session, a.status, a.body)
		}
		return got.Shard, nil
	}
	uids := uidsAcrossUint64(3000, rand.New(rand.NewPCG(1, 2)))
	err := parallel(len(uids), func(i int) error {
		uid := uids[i]
		got, err := shardOf("/v1/open", strconv.FormatUint(uid, 10)+".1700000000.sig")
		if err != nil {
			return err
		}
		if want := int(uid % V); got != want {
			return fmt.Errorf("uid %d went to verifier %d, want %d", uid, got, want)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"", "abc.1.sig", "123456789012345678901.1.sig", "-5.1.sig", "12x.1.sig"} {
		if got, err := shardOf("/v1/open", s); err != nil || got != 0 {
			t.Errorf("session %q: verifier %d (%v), want 0 (it answers 401)", s, got, err)
		}
	}
	if got, err := shardOf("/v1/shake", "5.1.sig"); err != nil || got != -1 {
		t.Errorf("/v1/shake: %d (%v), want the edge", got, err)
	}
	t.Logf("%d uids over the whole uint64 range routed by uid mod %d", len(uids), V)
	resp, err := httpClient.Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	m, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(m), `haproxy_backend_status{proxy="verifier-6",state="UP"} 1`) {
		t.Fatalf("admin /metrics: %d, verifier-6 is not UP:\n%s", resp.StatusCode, tail(m, 500))
	}

	shards[3].Close()
	a, err := postWith(freshClient, base+"/v1/open", "10.1.sig", `{"token":"x"}`) // 10 mod 7 = 3
	if err != nil {
		t.Fatal(err)
	}
	var e struct{ Error string }
	if a.status != 503 || a.contentType != "application/json" || json.Unmarshal(a.body, &e) != nil || e.Error != "unavailable" {
		t.Fatalf("verifier 3 stopped: %d %q %s, want 503 JSON unavailable", a.status, a.contentType, a.body)
	}
}

// TestHAProxyFrontsVerifiers runs the proxy in front of the real chain: two edges and
// two uid-sharded verifiers (--uid-shard 0/2 and 1/2). Thousands of users of the whole
// uint64 range shake and open through the proxy alone: not one open answers 421. Then
// verifier 1 is killed: its users' opens answer 503 JSON from the proxy, verifier 0's
// users still open.
func TestHAProxyFrontsVerifiers(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("starts a broker, two edges, two verifiers and haproxy")
	}
	tool(t, "haproxy", "haproxy")
	bin := shakeBinary(t)
	dir := t.TempDir()
	run := func(args ...string) {
		if out, err := exec.Command(bin, args...).CombinedOutput(); err != nil {
			t.Fatalf("shake %v: %v\n%s", args, err, out)
		}
	}
	camp := filepath.Join(dir, "camp")
	run("keys", "init", "--out", dir)
	gen := []string{"gen", "--campaign", "proxy", "--key", filepath.Join(dir, "campaign.key"), "--budget", "4000000",
		"--count", "20000", "--edges", "2", "--out", camp}
	if hasFlag(bin, "gen", "verifiers") {
		gen = append(gen, "--verifiers", "2")
	}
	run(gen...)
	sessionPath := filepath.Join(dir, "session.key")
	brokerAddr := freePort(t)
	startProc(t, dir, "broker", "", "", bin, "broker", "--listen", brokerAddr)
	waitTCP(t, brokerAddr)

	listen, admin := freePort(t), freePort(t)
	args := []string{"-V", "2", "-l", listen, "-a", admin}
	var verifiers []*proc
	for i := 0; i < 2; i++ {
		addr := freePort(t)
		p := startProc(t, dir, fmt.Sprintf("edge-%d", i), "", addr, bin, "edge",
			"--tickets", filepath.Join(camp, fmt.Sprintf("edge-%03d.tickets", i)), "--key", filepath.Join(camp, fmt.Sprintf("edge-%03d.key", i)),
			"--session-key", sessionPath, "--state", filepath.Join(dir, fmt.Sprintf("edge-%d.state", i)), "--init-state",
			"--listen", addr, "--admin-listen", freePort(t))
		args = append(args, "-e", p.metrics)
	}
	for i := 0; i < 2; i++ {
		addr := freePort(t)
		verifiers = append(verifiers, startProc(t, dir, fmt.Sprintf("verifier-%d", i), "", addr, bin, "verifier",
			"--manifest", filepath.Join(camp, "manifest.json"), "--key", filepath.Join(dir, "campaign.key"),
			"--session-key", sessionPath, "--brokers", brokerAddr, "--spool", filepath.Join(dir, fmt.Sprintf("spool-%d", i)),
			"--uid-shard", fmt.Sprintf("%d/2", i), "--min-replication", "1", "--listen", addr, "--admin-listen", freePort(t)))
		args = append(args, "-v", addr)
	}
	for i, a := range args {
		if a == "-e" || a == "-v" {
			waitHTTP(t, "http://"+args[i+1]+"/readyz", 30*time.Second)
		}
	}
	startHAProxy(t, dir, renderHAProxy(t, dir, args...), admin)
	base := "http://" + listen

	k, err := ticket.ReadKeyFile(sessionPath)
	if err != nil {
		t.Fatal(err)
	}
	sess, err := ticket.NewSessionKey(k)
	if err != nil {
		t.Fatal(err)
	}
	session := func(uid uint64) string { return string(sess.Mint(nil, uid, time.Now().Add(time.Hour).Unix())) }
	uids := uidsAcrossUint64(3000, rand.New(rand.NewPCG(3, 4)))
	var mu sync.Mutex
	counts := map[string]int{}
	held := map[uint64][]string{} // per shard, won tickets kept for after the kill
	err = parallel(len(uids), func(i int) error {
		uid := uids[i]
		s := session(uid)
		a, err := post(base+"/v1/shake", s, "")
		if err != nil {
			return err
		}
		var won struct{ Result, Token string }
		if a.status != 200 || json.Unmarshal(a.body, &won) != nil {
			return fmt.Errorf("shake uid %d: %d %s", uid, a.status, a.body)
		}
		if won.Result != "won" {
			mu.Lock()
			counts["shake "+won.Result]++
			mu.Unlock()
			return nil
		}
		mu.Lock()
		if len(held[uid%2]) < 20 {
			held[uid%2] = append(held[uid%2], s, won.Token)
			mu.Unlock()
			return nil
		}
		mu.Unlock()
		a, err = post(base+"/v1/open", s, `{"token":"`+won.Token+`"}`)
		if err != nil {
			return err
		}
		mu.Lock()
		counts[fmt.Sprintf("open %d", a.status)]++
		mu.Unlock()
		if a.status != 200 {
			return fmt.Errorf("open uid %d (shard %d): %d %s", uid, uid%2, a.status, a.body)
		}
		return nil
	})
	t.Logf("%d users through the proxy: %v", len(uids), counts)
	if err != nil {
		t.Fatal(err)
	}
	if counts["open 421"] != 0 || counts["open 200"] < 2000 {
		t.Fatalf("opens: %v, want no 421 and at least 2000 opened", counts)
	}

	verifiers[1].cmd.Process.Kill()
	for shard, want := range map[uint64]int{1: 503, 0: 200} {
		for j := 0; j < len(held[shard]); j += 2 {
			a, err := postWith(freshClient, base+"/v1/open", held[shard][j], `{"token":"`+held[shard][j+1]+`"}`)
			if err != nil {
				t.Fatal(err)
			}
			var e struct{ Error string }
			if a.status != want || a.contentType != "application/json" || (want == 503 && (json.Unmarshal(a.body, &e) != nil || e.Error != "unavailable")) {
				t.Fatalf("verifier 1 killed, open for shard %d: %d %q %s, want %d JSON", shard, a.status, a.contentType, a.body, want)
			}
		}
	}
}
