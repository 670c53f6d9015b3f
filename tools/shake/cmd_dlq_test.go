package main

import (
	"bufio"
	"context"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"shake/ticket"
)

// topicSize is the sum of the topic's partition ends (records ever written).
func topicSize(t *testing.T, broker, topic string) int64 {
	t.Helper()
	c := &kafka.Client{Addr: kafka.TCP(broker), Timeout: 5 * time.Second}
	d := &dlq{brokers: []string{broker}, client: c}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	parts, err := d.partitions(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	end, err := listOffsets(ctx, c, topic, parts, true)
	if err != nil {
		t.Fatal(err)
	}
	var n int64
	for _, o := range end {
		n += o
	}
	return n
}

// jsonLines parses the command's output lines.
func jsonLines(t *testing.T, out string) []map[string]any {
	t.Helper()
	var res []map[string]any
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("not a JSON line: %q: %v", sc.Text(), err)
		}
		res = append(res, m)
	}
	return res
}

// TestDLQListAndRedrive makes real dead letters with the real settler (started with
// the wrong campaign's manifest, an operator's mistake, plus five claims whose amounts
// were tampered with), lists them, redrives them against the right manifest twice, and
// checks that the good ones are moved back exactly once, the tampered ones are left,
// and a settler with the right manifest then posts every good ticket once.
// A redrive that moved something exits 0; one that moved nothing says so and exits 1.
func TestDLQListAndRedrive(t *testing.T) {
	t.Parallel()
	const count = 500
	e := newSettlerEnv(t, count)
	wrong := filepath.Join(e.dir, "wrong")
	if out, err := exec.Command(e.bin, "gen", "--campaign", "wrong", "--key", filepath.Join(e.dir, "campaign.key"),
		"--budget", "50000", "--count", "500", "--edges", "1", "--out", wrong).CombinedOutput(); err != nil {
		t.Fatalf("gen: %v\n%s", err, out)
	}
	e.produceClaims(t, 6, count)
	// Five claims with an amount one fen above their ticket's, as a forger would write.
	w := &kafka.Writer{Addr: kafka.TCP(e.broker), Topic: "shake.claims", Balancer: &kafka.Hash{}, RequiredAcks: kafka.RequireAll, BatchTimeout: time.Millisecond}
	sh, err := ticket.LoadShard(filepath.Join(filepath.Dir(e.manifest), e.m.Shards[0].File))
	if err != nil {
		t.Fatal(err)
	}
	for id := uint64(1); id <= 5; id++ {
		r := sh.Records[id-1]
		c := ticket.Claim{Campaign: e.m.Campaign, Ticket: id, Shard: 0, Round: e.m.RoundOf(0, id), Amount: int64(r.Amount) + 1,
			Currency: e.m.Currency, UID: 42, IssuedAt: e.m.CreatedAt, OpenedAt: e.m.CreatedAt.Add(500 * time.Millisecond), MAC: r.MAC}
		e.signer.Sign(&c) // a forger holding a verifier's signing key, but not the ticket MAC key
		if err := w.WriteMessages(context.Background(), kafka.Message{Key: c.AppendKey(nil), Value: c.AppendJSON(nil)}); err != nil {
			t.Fatal(err)
		}
	}
	w.Close()
	total := topicSize(t, e.broker, "shake.claims")

	// The mistake: a settler started with another campaign's manifest dead-letters all.
	url := "sqlite://" + filepath.Join(e.dir, "ledger.db")
	bad, _ := e.startSettlerWith(t, url, freePort(t), filepath.Join(wrong, "manifest.json"))
	for deadline := time.Now().Add(60 * time.Second); topicSize(t, e.broker, "shake.claims.dlq") < total; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("dead letters: %d of %d", topicSize(t, e.broker, "shake.claims.dlq"), total)
		}
	}
	bad.Process.Signal(syscall.SIGTERM)
	bad.Wait()

	code, out, errOut := runCLI("dlq", "--brokers", e.broker, "list")
	if code != 0 {
		t.Fatalf("list: %d %s", code, errOut)
	}
	all := jsonLines(t, out)
	if int64(len(all)) != total {
		t.Fatalf("list printed %d dead letters, the topic has %d", len(all), total)
	}
	for _, l := range all {
		if l["reason"] != "wrong_campaign" || l["dlq_partition"] == nil || l["dlq_offset"] == nil || l["claim"] == nil {
			t.Fatalf("list line %v", l)
		}
	}
	if code, out, _ = runCLI("dlq", "--brokers", e.broker, "list", "--reason", "bad_mac"); code != 0 || out != "" {
		t.Fatalf("list --reason bad_mac: %d %q", code, out)
	}

	redrive := func(wantCode int) (moved, left int, lines []map[string]any) {
		t.Helper()
		code, out, errOut := runCLI("dlq", "--brokers", e.broker, "redrive", "--manifest", e.manifest, "--key", filepath.Join(e.dir, "campaign.key"))
		if code != wantCode || (code == 1) != strings.Contains(errOut, "nothing moved") {
			t.Fatalf("redrive: exit %d, want %d: %s", code, wantCode, errOut)
		}
		lines = jsonLines(t, out)
		sum := lines[len(lines)-1]
		if sum["summary"] != true {
			t.Fatalf("no summary line last: %v", sum)
		}
		for _, l := range lines[:len(lines)-1] {
			switch l["action"] {
			case "moved":
				moved++
			case "left":
				left++
				if l["now"] != "wrong_amount" {
					t.Errorf("left for %v: %v", l["now"], l)
				}
			}
		}
		if int(sum["moved"].(float64)) != moved || int(sum["left"].(float64)) != left {
			t.Fatalf("summary %v disagrees with the lines (%d moved, %d left)", sum, moved, left)
		}
		return moved, left, lines
	}
	moved, left, _ := redrive(0)
	if left != 5 || int64(moved) != total-5 {
		t.Fatalf("first redrive moved %d and left %d of %d, want %d and 5", moved, left, total, total-5)
	}
	if got := topicSize(t, e.broker, "shake.claims"); got != total+int64(moved) {
		t.Fatalf("claims topic grew to %d, want %d + %d", got, total, moved)
	}
	moved2, left2, _ := redrive(1)
	if moved2 != 0 || left2 != 0 {
		t.Fatalf("second redrive moved %d and left %d: each dead letter must move once", moved2, left2)
	}
	if got := topicSize(t, e.broker, "shake.claims"); got != total+int64(moved) {
		t.Fatalf("after the second redrive the claims topic has %d records, want %d", got, total+int64(moved))
	}

	// The fix: a settler with the right manifest posts every good ticket once.
	good, _ := e.startSettlerWith(t, url, freePort(t), e.manifest, "--group", "fixed")
	defer func() { good.Process.Signal(syscall.SIGTERM); good.Wait() }()
	for deadline := time.Now().Add(60 * time.Second); settledTickets(t, url, e.m.Campaign) != count-5; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("settled %d, want %d", settledTickets(t, url, e.m.Campaign), count-5)
		}
	}
}

func TestDLQUsage(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"dlq", "list"}, "--brokers is required"},
		{[]string{"dlq", "--brokers", "127.0.0.1:1"}, "expected 1 argument"},
		{[]string{"dlq", "--brokers", "127.0.0.1:1", "purge"}, `unknown action "purge"`},
		{[]string{"dlq", "--brokers", "127.0.0.1:1", "redrive"}, "--manifest is required"},
		{[]string{"dlq", "--brokers", "127.0.0.1:1", "list", "--manifest", "m.json"}, "--manifest is for redrive"},
		{[]string{"dlq", "--brokers", "127.0.0.1:1", "--timeout", "1s", "list"}, "127.0.0.1:1"},
	} {
		code, out, errOut := runCLI(c.args...)
		if code != 2 || out != "" || strings.Count(errOut, "\n") != 1 || !strings.Contains(errOut, c.want) {
			t.Errorf("%v: code %d stdout %q stderr %q, want %q", c.args, code, out, errOut, c.want)
		}
	}
}

// startSettlerWith starts a settler with another manifest than the environment's.
func (e *settlerEnv) startSettlerWith(t *testing.T, ledgerURL, listen, manifest string, extra ...string) (*exec.Cmd, *strings.Builder) {
	t.Helper()
	saved := e.manifest
	e.manifest = manifest
	defer func() { e.manifest = saved }()
	return e.startSettler(t, ledgerURL, listen, extra...)
}
