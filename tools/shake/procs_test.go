package main

import (
	"bufio"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"shake/ticket"
)

// serverProc is a real server process started by the whole-process tests of this
// package, with its stderr kept for the assertions on log lines.
type serverProc struct {
	cmd  *exec.Cmd
	done chan struct{}
	mu   sync.Mutex
	log  strings.Builder
}

// startServer starts the shake binary with args; a positive nofile runs it under
// `ulimit -n nofile` (soft and hard), the way an operator's unit file would limit it.
func startServer(t *testing.T, nofile int, args ...string) *serverProc {
	t.Helper()
	bin := shakeBinary(t)
	var cmd *exec.Cmd
	if nofile > 0 {
		cmd = exec.Command("sh", append([]string{"-c", `ulimit -n ` + strconv.Itoa(nofile) + ` && exec "$0" "$@"`, bin}, args...)...)
	} else {
		cmd = exec.Command(bin, args...)
	}
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &serverProc{cmd: cmd, done: make(chan struct{})}
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			p.log.WriteString(line + "\n")
			p.mu.Unlock()
			if testing.Verbose() {
				os.Stderr.WriteString(args[0] + ": " + line + "\n")
			}
		}
	}()
	go func() { cmd.Wait(); pw.Close(); close(p.done) }()
	t.Cleanup(func() {
		if p.alive() {
			cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

func (p *serverProc) alive() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// output returns everything the process printed so far.
func (p *serverProc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.log.String()
}

// waitLine waits until the output holds a line matching re and returns its first
// submatch (or the whole match).
func (p *serverProc) waitLine(t *testing.T, re *regexp.Regexp, timeout time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if m := re.FindStringSubmatch(p.output()); m != nil {
			if len(m) > 1 {
				return m[1]
			}
			return m[0]
		}
		if !p.alive() {
			time.Sleep(50 * time.Millisecond) // let the reader catch the last lines
			if m := re.FindStringSubmatch(p.output()); m == nil {
				t.Fatalf("%v exited (%v) before printing %s:\n%s", p.cmd.Args, p.cmd.ProcessState, re, p.output())
			}
			continue
		}
		if time.Now().After(deadline) {
			t.Fatalf("no line matching %s within %v:\n%s", re, timeout, p.output())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// stop sends sig and waits for the exit code.
func (p *serverProc) stop(t *testing.T, sig syscall.Signal) int {
	t.Helper()
	p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
		t.Fatalf("%v did not stop on %v", p.cmd.Args, sig)
	}
	return p.cmd.ProcessState.ExitCode()
}

// campaignFixture is a generated campaign with its keys, for whole-process tests.
type campaignFixture struct {
	dir, keys, out string
	sess           *ticket.SessionKey
}

// newCampaign runs keys init and gen (count tickets over edges shards, extra flags).
func newCampaign(t *testing.T, count, edges int, extra ...string) *campaignFixture {
	t.Helper()
	dir := t.TempDir()
	f := &campaignFixture{dir: dir, keys: filepath.Join(dir, "keys"), out: filepath.Join(dir, "camp")}
	if code, _, e := runCLI("keys", "init", "--out", f.keys); code != 0 {
		t.Fatalf("keys init: %s", e)
	}
	args := append([]string{"gen", "--campaign", "ctl", "--key", filepath.Join(f.keys, "campaign.key"),
		"--budget", strconv.Itoa(count * 100), "--count", strconv.Itoa(count), "--edges", strconv.Itoa(edges),
		"--out", f.out}, extra...)
	if code, _, e := runCLI(args...); code != 0 {
		t.Fatalf("gen: %s", e)
	}
	sk, err := ticket.ReadKeyFile(filepath.Join(f.keys, "session.key"))
	if err != nil {
		t.Fatal(err)
	}
	if f.sess, err = ticket.NewSessionKey(sk); err != nil {
		t.Fatal(err)
	}
	return f
}

// session returns the bearer header value of a one-hour session for uid.
func (f *campaignFixture) session(uid uint64) string {
	return "Bearer " + string(f.sess.Mint(nil, uid, time.Now().Add(time.Hour).Unix()))
}

func (f *campaignFixture) key(name string) string { return filepath.Join(f.keys, name) }

var edgeHasInitState = sync.OnceValue(func() bool {
	_, _, e := runCLI("edge", "-h")
	return strings.Contains(e, "-init-state")
})

// edgeArgs returns the arguments of `shake edge` for shard i with a fresh state file.
func (f *campaignFixture) edgeArgs(t *testing.T, i int, extra ...string) []string {
	n := strconv.Itoa(1000 + i)[1:]
	args := []string{"edge", "--tickets", filepath.Join(f.out, "edge-"+n+".tickets"),
		"--key", filepath.Join(f.out, "edge-"+n+".key"), "--session-key", f.key("session.key"),
		"--state", filepath.Join(t.TempDir(), "edge.state"), "--listen", "127.0.0.1:0", "--per-user", "0"}
	if edgeHasInitState() {
		args = append(args, "--init-state")
	}
	return append(args, extra...)
}

var (
	edgeReadyRE   = regexp.MustCompile(`msg="edge ready".* addr=(\S+)`)
	verifierRE    = regexp.MustCompile(`verifier listening on (\S+)`)
	brokerRE      = regexp.MustCompile(`broker listening on (\S+)`)
	adminListenRE = regexp.MustCompile(`msg="admin listening".* addr=(\S+)`)
)

// adminAddr waits for the admin listener's address in the server's log.
func (p *serverProc) adminAddr(t *testing.T) string {
	t.Helper()
	return p.waitLine(t, adminListenRE, 20*time.Second)
}
