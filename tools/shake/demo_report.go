package main

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"shake/bench"
	"shake/internal/buildinfo"
	"shake/settler"
	"shake/ticket"
)

func (d *demo) writeOutputs(res *bench.Result, m *ticket.Manifest, rep *settler.Report, ev *bench.Event) error {
	out := d.cfg.out
	d.summary.OpenedFile = "opened.jsonl"
	if err := writeOpened(filepath.Join(out, d.summary.OpenedFile), res.Opened); err != nil {
		return err
	}
	// summary.json stays small: the opened tickets are in their own file.
	lean := *res
	lean.Opened = nil
	s := d.summary
	s.Bench = &lean
	s.ServersSeries = readings(res.Started, ev.Samples)
	b, err := json.MarshalIndent(&s, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(out, "summary.json"), append(b, '\n'), 0o644); err != nil {
		return err
	}
	f, err := os.Create(filepath.Join(out, "report.html"))
	if err != nil {
		return err
	}
	if err := bench.WriteEventReport(f, res, "shake demo", d.reportSections(m, rep, res), ev); err != nil {
		f.Close()
		return fmt.Errorf("writing the report: %w", err)
	}
	return f.Close()
}

// writeOpened writes the opened tickets one JSON object a line.
func writeOpened(path string, opened []bench.OpenedTicket) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	enc := json.NewEncoder(w)
	for i := range opened {
		if err := enc.Encode(&opened[i]); err != nil {
			f.Close()
			return err
		}
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// shardNames names the edge shards as the demo's servers are named.
func shardNames(n int) []string {
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("edge-%03d", i)
	}
	return names
}

// loadAverage reads the 1, 5 and 15 minute load averages ("" where there are none).
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// whatRan is the report's record of the run: the program, the command, the campaign and
// its commitment, the chain and the machine.
func (d *demo) whatRan(m *ticket.Manifest, args []string, loadBefore string) [][2]string {
	bi := buildinfo.Get()
	digest := "unknown"
	if b, err := os.ReadFile(d.cfg.out + "/manifest.json"); err == nil {
		sum := sha256.Sum256(b)
		digest = hex.EncodeToString(sum[:])
	}
	cmd := make([]string, len(args))
	for i, a := range args {
		cmd[i] = redactLedgerURL(a)
	}
	rounds := make([]string, len(m.Rounds))
	for i, r := range m.Rounds {
		rounds[i] = r.Start.UTC().Format(time.TimeOnly) + " to " + r.End.UTC().Format(time.TimeOnly) + " UTC"
	}
	host, _ := os.Hostname()
	return [][2]string{
		{"shake", fmt.Sprintf("%s %s (%s, %s)", bi.Version, bi.Revision, bi.GoVersion, bi.Platform)},
		{"command", strings.TrimSpace("shake demo " + strings.Join(cmd, " "))},
		{"campaign", fmt.Sprintf("%s, generation %s: %d red packets, budget %s, amounts %s to %s, %d edge shards",
			m.Campaign, m.Generation, m.Count, ticket.FormatAmount(m.Budget, m.Currency),
			ticket.FormatAmount(m.Min, m.Currency), ticket.FormatAmount(m.Max, m.Currency), len(m.Shards))},
		{"commitment", seedCommitment(m, digest)},
		{"rules", perUserRule(m.PerUser) + "; tickets paced evenly over each round (edge --pace)"},
		{"rounds", strings.Join(rounds, ", ")},
		{"load", fmt.Sprintf("%d users, %.0f shakes/s offered for %v, open loop", d.cfg.users, d.cfg.rate, d.cfg.duration)},
		{"chain", fmt.Sprintf("broker %s, ledger %s", d.summary.Brokers, d.summary.Ledger)},
		{"machine", fmt.Sprintf("%s, %d cores (GOMAXPROCS %d), load average %s before the run and %s after",
			host, runtime.NumCPU(), runtime.GOMAXPROCS(0), loadBefore, loadAverage())},
	}
}

// seedCommitment says what was published before the event that fixes every amount.
func seedCommitment(m *ticket.Manifest, manifestDigest string) string {
	if m.SeedSHA256 == "" {
		return "manifest.json SHA-256 " + manifestDigest + " (this manifest carries its seed, not a commitment)"
	}
	return "seed_sha256 " + m.SeedSHA256 + " in manifest.json (SHA-256 " + manifestDigest +
		"); after the event, shake inspect --reveal DIR/seed DIR/manifest.json recomputes every amount"
}

func perUserRule(n int) string {
	if n == 0 {
		return "per_user 0: no limit on the tickets a user opens"
	}
	return fmt.Sprintf("per_user %d: at most %d tickets opened per user per round", n, n)
}

// demoPrizes is the demo campaign's fixed prizes: one of ¥18.88 per thousand tickets
// (none under a thousand), for the report's list of prizes.
func demoPrizes(tickets uint64) []ticket.Prize {
	if tickets < 1000 {
		return nil
	}
	return []ticket.Prize{{Amount: 1888, Count: tickets / 1000}}
}

// event is what the report shows of the event beyond the load.
func (d *demo) event(m *ticket.Manifest, loadBefore string, samples []bench.EventSample) *bench.Event {
	return &bench.Event{Campaign: m.Campaign, Currency: m.Currency, Budget: m.Budget, Tickets: m.Count, Prizes: m.Prizes,
		Shards: shardNames(len(m.Shards)), Ran: d.whatRan(m, d.cfg.args, loadBefore), Samples: samples}
}

// demoReading is one sample of the servers' counters in summary.json: seconds since the
// load started, each shard's tickets left, the settler's posted totals (amount in minor
// units), the p99 from claim to commit of the claims committed since the previous
// reading (ms), and the consumer lag; null where a server could not be read.
type demoReading struct {
	T              float64    `json:"t"`
	TicketsLeft    []*float64 `json:"tickets_left"`
	SettledTickets *float64   `json:"settled_tickets"`
	SettledAmount  *float64   `json:"settled_amount"`
	SettleLagP99MS *float64   `json:"settle_lag_p99_ms"`
	KafkaLag       *float64   `json:"kafka_lag"`
}

func readings(start time.Time, samples []bench.EventSample) []demoReading {
	num := func(v float64) *float64 {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return nil
		}
		return &v
	}
	out := make([]demoReading, len(samples))
	for i, s := range samples {
		r := demoReading{T: math.Round(s.At.Sub(start).Seconds()*1000) / 1000, SettledTickets: num(s.SettledTickets),
			SettledAmount: num(s.SettledAmount), SettleLagP99MS: num(s.SettleLagP99 * 1000), KafkaLag: num(s.KafkaLag)}
		for _, v := range s.TicketsLeft {
			r.TicketsLeft = append(r.TicketsLeft, num(v))
		}
		out[i] = r
	}
	return out
}
