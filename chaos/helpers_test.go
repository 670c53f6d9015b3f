package chaos

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"shake/internal/proc"
	"shake/internal/testbin"
	"shake/ticket"
)

// readyTimeout bounds how long a (re)started server may take to answer /readyz 200. It
// is generous: the tests run on a small machine shared with other builds and tests.
const readyTimeout = 90 * time.Second

func TestMain(m *testing.M) {
	code := m.Run()
	testbin.Remove()
	os.Exit(code)
}

// shakeBinary returns the shake binary the chaos children run (built once, without -race).
func shakeBinary(t testing.TB) string { return testbin.Shake(t) }

// campaign is a generated campaign on disk plus what the test needs to check tokens.
type campaign struct {
	dir         string
	id          string
	manifest    *ticket.Manifest
	manPath     string
	ckPath      string
	skPath      string
	akPath      string // admin.key: the operator's key (ctl); servers get admin-ROLE.key
	campaignKey []byte
	adminKey    []byte
	sessionKey  []byte
	sess        *ticket.SessionKey
	opener      *ticket.Opener
}

// runCLI runs the shake binary with args and fails the test on a non-zero exit.
func runCLI(t testing.TB, bin string, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(bin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("shake %s: %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), err, stdout.Bytes(), stderr.Bytes())
	}
	return stdout.Bytes()
}

// newCampaign generates a campaign through the CLI (keys init, gen) into dir, exactly as
// an operator would, and derives the shard keys from campaign.key so that the test can
// open every token it sees. vers is the verifier fleet's size (gen --verifiers).
func newCampaign(t testing.TB, bin, dir, id string, count uint64, edges, vers int, seed uint64) *campaign {
	t.Helper()
	runCLI(t, bin, "keys", "init", "--out", dir)
	runCLI(t, bin, "gen", "--campaign", id, "--key", filepath.Join(dir, "campaign.key"),
		"--budget", strconv.FormatUint(count*188, 10), "--count", strconv.FormatUint(count, 10),
		"--edges", strconv.Itoa(edges), "--verifiers", strconv.Itoa(vers), "--min", "1", "--max", "2000",
		"--seed", strconv.FormatUint(seed, 10), "--out", dir)
	c := &campaign{dir: dir, id: id, manPath: filepath.Join(dir, "manifest.json"),
		ckPath: filepath.Join(dir, "campaign.key"), skPath: filepath.Join(dir, "session.key"),
		akPath: filepath.Join(dir, "admin.key")}
	var err error
	if c.manifest, err = ticket.LoadManifest(c.manPath); err != nil {
		t.Fatal(err)
	}
	if c.campaignKey, err = ticket.ReadKeyFile(c.ckPath); err != nil {
		t.Fatal(err)
	}
	if c.sessionKey, err = ticket.ReadKeyFile(c.skPath); err != nil {
		t.Fatal(err)
	}
	if c.adminKey, err = ticket.ReadKeyFile(c.akPath); err != nil {
		t.Fatal(err)
	}
	if c.sess, err = ticket.NewSessionKey(c.sessionKey); err != nil {
		t.Fatal(err)
	}
	keys := make([][]byte, len(c.manifest.Shards))
	for i := range keys {
		if keys[i], err = c.manifest.ShardKey(c.campaignKey, i); err != nil {
			t.Fatal(err)
		}
	}
	if c.opener, err = ticket.NewOpener(keys); err != nil {
		t.Fatal(err)
	}
	return c
}

// edgeArgs returns the command line of edge i (without --listen).
func (c *campaign) edgeArgs(i int) []string {
	sh := c.manifest.Shards[i]
	return []string{"edge", "--tickets", filepath.Join(c.dir, sh.File), "--key", filepath.Join(c.dir, sh.KeyFile),
		"--session-key", c.skPath, "--state", filepath.Join(c.dir, fmt.Sprintf("edge-%03d.state", i)),
		"--log-format", "json"}
}

// verifierArgs returns the verifier's command line (without --listen).
func (c *campaign) verifierArgs(brokers string) []string {
	return []string{"verifier", "--manifest", c.manPath, "--key", c.ckPath, "--session-key", c.skPath,
		"--brokers", brokers, "--min-replication", "1", "--spool", filepath.Join(c.dir, "spool"), "--log-format", "json"}
}

// service is one long-lived child process that the tests may kill and restart on the
// same address with the same command line.
type service struct {
	name    string
	bin     string
	args    []string // without --listen
	addr    string
	admin   string // the admin listener (/metrics): addr itself for the settler
	logPath string
	http    bool // ready on GET /readyz; otherwise when the port accepts connections
	// readyPaused also takes /readyz's 503 {"status":"paused"} as ready (a settler
	// started under its paused switch).
	readyPaused bool

	mu     sync.Mutex
	p      *proc.Proc
	starts int
}

func newService(name, bin string, args []string, logDir string, http bool) (*service, error) {
	addr, err := proc.FreeAddr()
	if err != nil {
		return nil, err
	}
	s := &service{name: name, bin: bin, args: args, addr: addr, admin: addr, http: http,
		logPath: filepath.Join(logDir, name+".log")}
	if len(args) > 0 && (args[0] == "edge" || args[0] == "verifier") {
		// Edges and verifiers serve /metrics on their admin listener only.
		if s.admin, err = proc.FreeAddr(); err != nil {
			return nil, err
		}
		s.args = append(append([]string{}, args...), "--admin-listen", s.admin)
	}
	return s, nil
}

// start starts the process and waits until it is ready.
func (s *service) start(ctx context.Context) error {
	args := append(append([]string{}, s.args...), "--listen", s.addr)
	if s.starts == 0 && s.args[0] == "edge" {
		args = append(args, "--init-state") // only a shard's very first start creates its state file
	}
	p, err := proc.Start(s.name, s.bin, args, s.logPath)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.p = p
	s.starts++
	s.mu.Unlock()
	if s.readyPaused {
		return p.WaitReadyFunc(ctx, "http://"+s.addr+"/readyz", readyTimeout, func(status int, body []byte) bool {
			return status == http.StatusOK || (status == http.StatusServiceUnavailable && bytes.Contains(body, []byte(`"status":"paused"`)))
		})
	}
	if s.http {
		return p.WaitReady(ctx, "http://"+s.addr+"/readyz", readyTimeout)
	}
	return waitListening(ctx, p, s.addr, readyTimeout)
}

// restart starts the process again after a fault, as a supervisor (systemd, a
// Kubernetes pod) would: a process that exits before it is ready (a settler whose
// ledger is unreachable at that moment exits 2) is started again, at most 15 times, 1 s
// apart (longer than any link fault lasts). It returns how many attempts exited early.
func (s *service) restart(ctx context.Context) (int, error) {
	for early := 0; ; early++ {
		err := s.start(ctx)
		if err == nil || !errors.Is(err, proc.ErrNotReady) || s.running() || early == 14 || ctx.Err() != nil {
			return early, err
		}
		sleep(ctx, time.Second)
	}
}

// current returns the running process (nil before the first start).
func (s *service) current() *proc.Proc {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.p
}

// startCount returns how many times the service was started.
func (s *service) startCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.starts
}

// running reports whether the current process is alive.
func (s *service) running() bool {
	p := s.current()
	if p == nil {
		return false
	}
	select {
	case <-p.Done():
		return false
	default:
		return true
	}
}

// kill sends SIGKILL and waits until the process is gone.
func (s *service) kill() {
	if p := s.current(); p != nil {
		p.Kill()
	}
}

// stop sends SIGTERM and returns the exit error (nil for a clean exit 0).
func (s *service) stop(timeout time.Duration) error {
	p := s.current()
	if p == nil {
		return nil
	}
	return p.Stop(timeout)
}

// waitListening polls addr until a TCP connection succeeds, p exits or timeout passes.
func waitListening(ctx context.Context, p *proc.Proc, addr string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-p.Done():
			return fmt.Errorf("%s exited before it listened (%v): %w", p.Name, p.Err(), proc.ErrNotReady)
		case <-ctx.Done():
			return fmt.Errorf("%s at %s: %w", p.Name, addr, proc.ErrNotReady)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// crashMarkers are the log lines that mean a process crashed or broke an invariant:
// Go's own panic and fatal-error banners, the obs server's recovered handler panic, and
// the "BUG:" prefix the team uses for a broken invariant.
var crashMarkers = []string{"panic:", "fatal error:", "handler panic", "BUG:"}

// scanLog returns the log lines that carry a crash marker (at most max of them).
func scanLog(path string, max int) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		return nil, err
	}
	defer f.Close()
	var hits []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		line := sc.Text()
		for _, m := range crashMarkers {
			if strings.Contains(line, m) {
				if len(hits) < max {
					hits = append(hits, line)
				}
				break
			}
		}
	}
	return hits, sc.Err()
}

// fdCount returns the number of open file descriptors of pid (Linux /proc).
func fdCount(pid int) (int, error) {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return 0, err
	}
	return len(ents), nil
}

// threadCount returns the number of OS threads of pid (Linux /proc).
func threadCount(pid int) (int, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "Threads:"); ok {
			return strconv.Atoi(strings.TrimSpace(v))
		}
	}
	return 0, errors.New("no Threads line")
}

// metricValue returns the value of an unlabelled metric from a Prometheus text page.
func metricValue(page []byte, name string) (float64, bool) {
	sc := bufio.NewScanner(bytes.NewReader(page))
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, name+" "); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			return v, err == nil
		}
	}
	return 0, false
}

// sleep waits d or until ctx ends; it is the length of an outage, not synchronisation.
func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// roleKeyPath is the admin key of a server named like "edge-000", "verifier-1" or
// "settler": its role's admin-ROLE.key.
func (c *campaign) roleKeyPath(server string) string {
	role, _, _ := strings.Cut(server, "-")
	return filepath.Join(c.dir, ticket.AdminRoleKeyFile(role))
}
