package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/valyala/fasthttp"

	"shake/ticket"
)

type verProc struct {
	cmd  *exec.Cmd
	addr string
}

// startVerProc starts the binary and waits for its "... listening on ADDR" line.
func startVerProc(t *testing.T, args ...string) *verProc {
	t.Helper()
	cmd := exec.Command(shakeBinary(t), args...)
	out, err := cmd.StdoutPipe()
	verMust(t, err)
	cmd.Stderr = io.Discard
	if testing.Verbose() {
		cmd.Stderr = os.Stderr
	}
	verMust(t, cmd.Start())
	p := &verProc{cmd: cmd}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || !strings.Contains(line, "listening on ") {
		t.Fatalf("%v: first line %q: %v", args[0], line, err)
	}
	p.addr = strings.TrimSpace(line[strings.Index(line, "listening on ")+len("listening on "):])
	go io.Copy(io.Discard, out)
	return p
}

func (p *verProc) stop(t *testing.T, sig syscall.Signal) int {
	p.cmd.Process.Signal(sig)
	p.cmd.Wait()
	return p.cmd.ProcessState.ExitCode()
}

func verMust(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func verFreeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	verMust(t, err)
	defer ln.Close()
	return ln.Addr().String()
}

func verAmount(id uint64) uint32 { return uint32(id%50) + 1 }

// TestVerifierWholeProcess runs `shake broker` and `shake verifier` as processes: 1,000
// users open concurrently while the broker is stopped and restarted, then the verifier
// is SIGKILLed while its spool holds claims; every 200 must end up in the topic.
func TestVerifierWholeProcess(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("whole-process test")
	}
	dir := t.TempDir()
	ck, sk := ticket.NewKey(), ticket.NewKey()
	ckPath, skPath := filepath.Join(dir, "campaign.key"), filepath.Join(dir, "session.key")
	verMust(t, ticket.WriteKeyFile(ckPath, ck))
	verMust(t, ticket.WriteKeyFile(skPath, sk))
	const n = 1200
	var amt int64
	for id := uint64(1); id <= n; id++ {
		amt += int64(verAmount(id))
	}
	m := ticket.Manifest{Version: 1, Campaign: "proc", Currency: "CNY", Budget: amt, Count: n, Min: 1, Max: 50,
		TTL: "1h0m0s", TTLSeconds: 3600, Rounds: []ticket.RoundWindow{{}}, CreatedAt: time.Now().UTC(),
		IssueUntil: time.Now().UTC().Add(time.Hour), ExpiresAt: time.Now().UTC().Add(2 * time.Hour),
		Generation: ticket.NewGeneration(), PerUser: 1,
		Shards: []ticket.ManifestShard{{Index: 0, File: "edge-000.tickets", FirstTicket: 1, Count: n, Amount: amt,
			Rounds: []ticket.RoundRange{{Round: 0, FirstTicket: 1, Count: n, Amount: amt}}}}}
	verMust(t, m.Sign(ck))
	mb, _ := json.Marshal(m)
	manPath := filepath.Join(dir, "manifest.json")
	verMust(t, os.WriteFile(manPath, mb, 0o600))
	shk, _ := ticket.ShardKey(ck, "proc", m.Generation, 0)
	sealer, _ := ticket.NewSealer(shk, 0)
	mk, _ := ticket.MACKey(ck, "proc", m.Generation)
	tm, _ := ticket.NewTicketMAC(mk, "proc")
	sess, _ := ticket.NewSessionKey(sk)

	baddr := verFreeAddr(t)
	data := filepath.Join(dir, "kafka")
	brokerArgs := []string{"broker", "--listen", baddr, "--partitions", "4", "--data", data}
	br := startVerProc(t, brokerArgs...)
	verArgs := []string{"verifier", "--manifest", manPath, "--key", ckPath, "--session-key", skPath,
		"--brokers", baddr, "--min-replication", "1", "--spool", filepath.Join(dir, "spool"), "--listen", "127.0.0.1:0"}
	// /metrics is on the admin listener, at a fixed address across the restart.
	admin := verFreeAddr(t)
	verArgs = append(verArgs, "--admin-listen", admin)
	ver := startVerProc(t, verArgs...)
	waitReady(t, ver.addr) // the rebuild from the topic comes first

	client := &fasthttp.Client{MaxConnsPerHost: 2000, ReadTimeout: 30 * time.Second}
	open := func(addr string, id uint64) (int, string) {
		a := verAmount(id)
		tok := sealer.Seal(nil, &ticket.TicketToken{Ticket: id, UID: id, Amount: a, MAC: tm.Sum(id, a, 0),
			IssuedAt: uint32(time.Now().Unix()), ExpiresAt: uint32(time.Now().Add(time.Hour).Unix())})
		req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		defer fasthttp.ReleaseRequest(req)
		defer fasthttp.ReleaseResponse(resp)
		req.SetRequestURI("http://" + addr + "/v1/open")
		req.Header.SetMethod("POST")
		req.Header.Set("Authorization", "Bearer "+string(sess.Mint(nil, id, time.Now().Add(time.Hour).Unix())))
		req.SetBodyString(`{"token":"` + string(tok) + `"}`)
		if err := client.Do(req, resp); err != nil {
			return 0, err.Error()
		}
		return resp.StatusCode(), string(resp.Body())
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	opened := map[uint64]bool{}
	openRange := func(addr string, from, to uint64) {
		for id := from; id <= to; id++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				st, b := open(addr, id)
				if st != 200 {
					t.Errorf("open %d: %d %s", id, st, b)
					return
				}
				mu.Lock()
				opened[id] = true
				mu.Unlock()
			}()
		}
	}
	// 1,000 users at once; the broker is stopped in the middle of the load.
	openRange(ver.addr, 1, 500)
	time.Sleep(20 * time.Millisecond)
	if code := br.stop(t, syscall.SIGTERM); code != 0 {
		t.Fatalf("broker exit %d", code)
	}
	openRange(ver.addr, 501, 1000)
	wg.Wait()
	// Broker back: the spool drains.
	br = startVerProc(t, brokerArgs...)
	verWaitSpool(t, admin, 0)
	// Broker down again, 100 more opens are spooled, then the verifier is killed.
	br.stop(t, syscall.SIGTERM)
	openRange(ver.addr, 1001, 1100)
	wg.Wait()
	if depth := verSpoolDepth(t, admin); depth == 0 {
		t.Fatal("nothing spooled while the broker was down")
	}
	ver.stop(t, syscall.SIGKILL)
	br = startVerProc(t, brokerArgs...)
	ver = startVerProc(t, verArgs...)
	waitReady(t, ver.addr)
	verWaitSpool(t, admin, 0)
	if len(opened) != 1100 {
		t.Fatalf("%d of 1100 opens answered 200", len(opened))
	}
	// Every 200 is in the topic with the right amount and uid.
	got := verReadClaims(t, baddr, 1100)
	for id := range opened {
		c, ok := got[id]
		if !ok || c.UID != id || c.Amount != int64(verAmount(id)) || c.Campaign != "proc" {
			t.Fatalf("ticket %d: in topic %v, claim %+v", id, ok, c)
		}
	}
	if code := ver.stop(t, syscall.SIGTERM); code != 0 {
		t.Fatalf("verifier exit %d on SIGTERM", code)
	}
}

func verMetric(t *testing.T, addr, name string) (float64, bool) {
	st, body, err := fasthttp.Get(nil, "http://"+addr+"/metrics")
	if err != nil || st != 200 {
		return 0, false
	}
	for _, l := range strings.Split(string(body), "\n") {
		if strings.HasPrefix(l, name+" ") {
			var v float64
			fmt.Sscan(strings.TrimPrefix(l, name+" "), &v)
			return v, true
		}
	}
	return 0, false
}

func verSpoolDepth(t *testing.T, addr string) float64 {
	v, ok := verMetric(t, addr, "shake_verifier_spool_records")
	if !ok {
		t.Fatal("no shake_verifier_spool_records metric")
	}
	return v
}

func verWaitSpool(t *testing.T, addr string, want float64) {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if v, ok := verMetric(t, addr, "shake_verifier_spool_records"); ok && v == want {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("spool depth never reached %v (now %v)", want, verSpoolDepth(t, addr))
}

// verReadClaims reads the claims topic from the start until it has want distinct tickets.
func verReadClaims(t *testing.T, addr string, want int) map[uint64]ticket.Claim {
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: []string{addr}, Topic: "shake.claims", GroupID: "check",
		StartOffset: kafka.FirstOffset, MinBytes: 1, MaxBytes: 1 << 20, MaxWait: 100 * time.Millisecond})
	defer r.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	got := map[uint64]ticket.Claim{}
	for len(got) < want {
		m, err := r.FetchMessage(ctx)
		if err != nil {
			t.Fatalf("after %d claims: %v", len(got), err)
		}
		c, err := ticket.ParseClaim(m.Value)
		verMust(t, err)
		if string(m.Key) != fmt.Sprint(c.Ticket) {
			t.Fatalf("key %s for ticket %d", m.Key, c.Ticket)
		}
		got[c.Ticket] = c
	}
	return got
}

func TestVerifierUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"verifier"},
		{"verifier", "--manifest", "m", "--key", "k", "--session-key", "s", "--spool", "d", "--brokers", "nohost"},
		{"verifier", "--manifest", "/nonexistent/m.json", "--key", "k", "--session-key", "s", "--spool", "d", "--brokers", "h:1"},
		{"verifier", "--manifest", "m", "--key", "k", "--session-key", "s", "--spool", "d", "--brokers", "h:1", "--uid-shard", "2/2"},
		{"verifier", "--manifest", "m", "--key", "k", "--session-key", "s", "--spool", "d", "--brokers", "h:1", "--uid-shard", "1"},
		{"verifier", "--manifest", "m", "--key", "k", "--session-key", "s", "--spool", "d", "--brokers", "h:1", "--uid-shard", "0/0"},
		{"verifier", "--manifest", "m", "--key", "k", "--session-key", "s", "--spool", "d", "--brokers", "h:1", "--uid-shard", "-1/2"},
		{"broker", "--partitions", "0"},
		{"broker", "--listen", "bad"},
		{"broker", "stray"},
	} {
		var out, errb strings.Builder
		code := run(args, &out, &errb)
		if code != 2 || strings.Count(errb.String(), "\n") != 1 {
			t.Errorf("%v: code %d stderr %q", args, code, errb.String())
		}
	}
}
