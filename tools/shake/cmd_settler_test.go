package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"

	"shake/internal/testchain"
	"shake/settler/ledger"
	"shake/ticket"
)

// settlerEnv is a campaign made with the real generator, an embedded broker holding its
// claims, and the built binary.
type settlerEnv struct {
	bin, dir, manifest, broker string
	m                          *ticket.Manifest
	signer                     *ticket.ClaimSigner
}

func newSettlerEnv(t *testing.T, count int) *settlerEnv {
	t.Helper()
	if testing.Short() {
		t.Skip("whole-process settler test (builds the binary)")
	}
	dir := t.TempDir()
	bin := shakeBinary(t)
	camp := filepath.Join(dir, "camp")
	for _, args := range [][]string{{"keys", "init", "--out", dir},
		{"gen", "--campaign", "kill9", "--key", filepath.Join(dir, "campaign.key"), "--budget", strconv.Itoa(count * 100),
			"--count", strconv.Itoa(count), "--edges", "4", "--out", camp, "--ttl", "1s", "--per-user", "0"}} {
		if out, err := exec.Command(bin, args...).CombinedOutput(); err != nil {
			t.Fatalf("shake %v: %v\n%s", args, err, out)
		}
	}
	key, err := ticket.ReadKeyFile(filepath.Join(dir, "campaign.key"))
	if err != nil {
		t.Fatal(err)
	}
	m, err := ticket.LoadManifestKey(filepath.Join(camp, "manifest.json"), key)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := m.ClaimSigner(key)
	if err != nil {
		t.Fatal(err)
	}
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(8, "shake.claims", "shake.claims.dlq"),
		kfake.GroupMinSessionTimeout(500*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return &settlerEnv{bin: bin, dir: dir, manifest: filepath.Join(camp, "manifest.json"), broker: c.ListenAddrs()[0], m: m, signer: signer}
}

// produceClaims writes one claim per ticket of the campaign (ids lo..hi), as the verifier
// would, with the MAC from the shard file and the verifier's signature; every 50th claim
// is written twice.
func (e *settlerEnv) produceClaims(t *testing.T, lo, hi uint64) {
	t.Helper()
	w := &kafka.Writer{Addr: kafka.TCP(e.broker), Topic: "shake.claims", Balancer: &kafka.Hash{},
		RequiredAcks: kafka.RequireAll, BatchTimeout: time.Millisecond, BatchSize: 5000, BatchBytes: 8 << 20}
	defer w.Close()
	msgs := make([]kafka.Message, 0, 5000)
	flush := func() {
		if err := w.WriteMessages(context.Background(), msgs...); err != nil {
			t.Fatal(err)
		}
		msgs = msgs[:0]
	}
	// Issued when the campaign opened and opened within its 1 s ttl, whenever the test
	// produces them: the settler refuses times outside the campaign's windows.
	issued := e.m.CreatedAt
	for i, s := range e.m.Shards {
		if s.FirstTicket+s.Count <= lo || s.FirstTicket > hi {
			continue
		}
		sh, err := ticket.LoadShard(filepath.Join(filepath.Dir(e.manifest), s.File))
		if err != nil {
			t.Fatal(err)
		}
		for j, r := range sh.Records {
			id := s.FirstTicket + uint64(j)
			if id < lo || id > hi {
				continue
			}
			c := ticket.Claim{Campaign: e.m.Campaign, Ticket: id, Shard: i, Round: e.m.RoundOf(i, id), Amount: int64(r.Amount),
				Currency: e.m.Currency, UID: id % 9973, IssuedAt: issued, OpenedAt: issued.Add(500 * time.Millisecond), MAC: r.MAC}
			e.signer.Sign(&c)
			msg := kafka.Message{Key: c.AppendKey(nil), Value: c.AppendJSON(nil)}
			msgs = append(msgs, msg)
			if id%50 == 0 {
				msgs = append(msgs, msg)
			}
			if len(msgs) >= 4900 {
				flush()
			}
		}
	}
	flush()
}

func freePort(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func (e *settlerEnv) startSettler(t *testing.T, ledgerURL, listen string, extra ...string) (*exec.Cmd, *strings.Builder) {
	t.Helper()
	args := append([]string{"settler", "--brokers", e.broker, "--min-replication", "1", "--ledger", ledgerURL, "--manifest", e.manifest,
		"--key", filepath.Join(e.dir, "campaign.key"), "--listen", listen, "--session-timeout", "1s", "--log-format", "json"}, extra...)
	cmd := exec.Command(e.bin, args...)
	var logs strings.Builder
	pr, pw := io.Pipe()
	cmd.Stderr = pw
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			settlerLogsMu.Lock()
			logs.WriteString(sc.Text() + "\n")
			settlerLogsMu.Unlock()
		}
	}()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
		pw.Close()
	})
	return cmd, &logs
}

// settlerLogsMu guards the log builders startSettler returns (read them with logText
// while the settler runs).
var settlerLogsMu sync.Mutex

func settledTickets(t *testing.T, url, campaign string) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	l, err := ledger.Open(ctx, url)
	if err != nil {
		return -1
	}
	defer l.Close()
	s, err := l.Stats(ctx, campaign)
	if err != nil {
		return -1
	}
	return s.Tickets
}

func (e *settlerEnv) reconcile(t *testing.T, url string, extra ...string) (int, map[string]any) {
	t.Helper()
	code, out, _ := runBinary(t, append([]string{"reconcile", "--manifest", e.manifest, "--ledger", url}, extra...)...)
	var rep map[string]any
	if code != 2 {
		if err := json.Unmarshal([]byte(out), &rep); err != nil {
			t.Fatalf("reconcile output %q: %v", out, err)
		}
	}
	return code, rep
}

// waitReady waits for the server at host:port addr to answer /readyz 200.
func waitReady(t *testing.T, addr string) {
	t.Helper()
	testchain.WaitReady(t, "http://"+addr)
}

func metric(addr, name string) (float64, bool) {
	resp, err := metricsClient.Get("http://" + addr + "/metrics")
	if err != nil {
		return 0, false
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, name+" ") {
			v, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimPrefix(line, name)), 64)
			return v, err == nil
		}
	}
	return 0, false
}

// metricsClient bounds each /metrics read: a stuck server must fail the test, not hang it.
var metricsClient = &http.Client{Timeout: time.Second}

// TestSettlerKill9 kills the real settler with SIGKILL at random moments while it works
// through the claims, restarts it, and checks that every ticket is posted exactly once.
// It uses 20,000 claims by default (this package's tests run often, on a shared
// machine); SHAKE_KILL9_CLAIMS=100000 runs the full size.
func TestSettlerKill9(t *testing.T) {
	t.Parallel()
	count := 20_000
	if s := os.Getenv("SHAKE_KILL9_CLAIMS"); s != "" {
		count, _ = strconv.Atoi(s)
	}
	e := newSettlerEnv(t, count)
	e.produceClaims(t, 1, uint64(count))
	url := "sqlite://" + filepath.Join(e.dir, "ledger.db")
	// Kill until at least 5 kills have landed while this run was settling: each run is
	// killed at a random moment after it has posted something (a settler that has not yet
	// rejoined the group is consuming nothing, so a kill then would prove nothing).
	kills, mid := 0, 0
	for mid < 5 && kills < 20 {
		before := settledTickets(t, url, e.m.Campaign)
		if before == int64(count) {
			break
		}
		listen := freePort(t)
		cmd, _ := e.startSettler(t, url, listen)
		// Ask the settler's /metrics, not the ledger: opening the SQLite ledger every few
		// milliseconds from here competes for its write lock and starves the settler.
		progress := time.Now().Add(30 * time.Second)
		for time.Now().Before(progress) {
			if n, ok := metric(listen, "shake_settler_posted_total"); ok && n > 0 {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		time.Sleep(time.Duration(rand.IntN(80)) * time.Millisecond)
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
		kills++
		n := settledTickets(t, url, e.m.Campaign)
		if n > before && n < int64(count) {
			mid++
		}
		t.Logf("kill %d: %d -> %d tickets settled", kills, before, n)
	}
	if mid < 5 {
		t.Fatalf("only %d of %d kills landed while claims were being settled; raise SHAKE_KILL9_CLAIMS", mid, kills)
	}
	listen := freePort(t)
	cmd, logs := e.startSettler(t, url, listen)
	waitReady(t, listen)
	deadline := time.Now().Add(5 * time.Minute)
	for settledTickets(t, url, e.m.Campaign) < int64(count) && time.Now().Before(deadline) {
		time.Sleep(200 * time.Millisecond)
	}
	if dup, _ := metric(listen, "shake_settler_duplicates_total"); dup == 0 {
		t.Log("no duplicates seen by the last run (the kills may all have fallen between batches)")
	}
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("settler after SIGTERM: %v\n%s", err, logs.String())
	}
	code, rep := e.reconcile(t, url)
	if code != 0 || rep["ok"] != true || rep["settled_tickets"] != float64(count) || rep["duplicates"] != float64(0) {
		t.Fatalf("reconcile exit %d: %v", code, rep)
	}
	t.Logf("%d claims, %d kills: reconcile %v", count, kills, rep)

	// The tickets expired (ttl 1s); refund the (empty) remainder once.
	time.Sleep(time.Until(e.m.ExpiresAt) + 100*time.Millisecond)
	code, rep = e.reconcile(t, url, "--refund", "--key", filepath.Join(e.dir, "campaign.key"))
	if code != 0 || rep["outstanding_amount"] != float64(0) || rep["refund_posted"] != true {
		t.Fatalf("refund exit %d: %v", code, rep)
	}
	code, rep = e.reconcile(t, url, "--refund", "--key", filepath.Join(e.dir, "campaign.key"))
	if code != 0 || rep["refund_posted"] == true {
		t.Fatalf("second refund exit %d: %v", code, rep)
	}
}

// TestSettlerPostgresOutage makes PostgreSQL unreachable mid-run (through a proxy, so
// the shared server keeps running): the breaker opens, the settler stops consuming, and
// once PostgreSQL is back it recovers by itself with nothing lost.
func TestSettlerPostgresOutage(t *testing.T) {
	t.Parallel()
	base := os.Getenv("SHAKE_TEST_POSTGRES")
	if base == "" {
		t.Skip("SHAKE_TEST_POSTGRES not set (e.g. postgres://postgres@127.0.0.1:5432/test?sslmode=disable)")
	}
	const count = 20_000
	e := newSettlerEnv(t, count)
	ctx := context.Background()
	schema := fmt.Sprintf("shake_outage_%d", time.Now().UnixNano()%1e9)
	pc, err := pgx.Connect(ctx, base)
	if err != nil {
		t.Fatal(err)
	}
	pc.Exec(ctx, "CREATE SCHEMA "+schema)
	t.Cleanup(func() { pc.Exec(ctx, "DROP SCHEMA "+schema+" CASCADE"); pc.Close(ctx) })
	cfg, err := pgx.ParseConfig(base)
	if err != nil {
		t.Fatal(err)
	}
	p := startProxy(t, net.JoinHostPort(cfg.Host, strconv.Itoa(int(cfg.Port))))
	direct := base + "&search_path=" + schema
	viaProxy := strings.Replace(direct, net.JoinHostPort(cfg.Host, strconv.Itoa(int(cfg.Port))), p.Addr(), 1)

	e.produceClaims(t, 1, count/2)
	listen := freePort(t)
	cmd, logs := e.startSettler(t, viaProxy, listen, "--breaker-failures", "3", "--breaker-cooldown", "300ms")
	deadline := time.Now().Add(time.Minute)
	for settledTickets(t, direct, e.m.Campaign) < count/2 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	p.Down()
	e.produceClaims(t, count/2+1, count)
	opened := false
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if v, _ := metric(listen, "shake_settler_breaker_state"); v == 1 {
			opened = true
			break
		}
	}
	if !opened {
		t.Fatalf("breaker never opened\n%s", logs.String())
	}
	if resp, err := http.Get("http://" + listen + "/readyz"); err != nil || resp.StatusCode != 503 {
		t.Fatalf("readyz with the breaker open: %v %v", resp, err)
	}
	during := settledTickets(t, direct, e.m.Campaign)
	time.Sleep(time.Second)
	proxyUp(t, p)
	deadline = time.Now().Add(time.Minute)
	for settledTickets(t, direct, e.m.Campaign) < count && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if v, _ := metric(listen, "shake_settler_breaker_state"); v != 0 {
		t.Fatalf("breaker state %v after recovery", v)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("settler after SIGTERM: %v", err)
	}
	code, rep := e.reconcile(t, direct)
	if code != 0 || rep["settled_tickets"] != float64(count) {
		t.Fatalf("reconcile exit %d: %v", code, rep)
	}
	t.Logf("settled %d before the outage ended, %d after; reconcile %v", during, count, rep)
}
