package main

import (
	"crypto/rand"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"shake/ticket"
)

// TestStolenEdgeDrill: an attacker holds what one edge machine holds (edge-000.key and
// its shard file, with the generator's ticket MACs) and session.key, so it can mint
// sessions for any uid and seal tokens with shard 0's key for any ticket id, amount,
// round and time. Against the real verifier, settler and reconcile:
//   - every forged ticket outside shard 0, with another amount, round or MAC, or with
//     issue or expiry times no edge following the manifest makes, is refused;
//   - shard 0's own tickets, sealed in the form an edge makes, are each opened (and so
//     paid) once: the same ticket for a second uid is 409 already_opened, and one uid
//     holding many of them opens per_user (1) and gets limit_reached for the rest;
//   - the settler posts exactly the opened tickets and reconcile stays ok.
//
// So a stolen edge costs at most its own shard's tickets, each paid once, inside the
// campaign's time windows: what the edge itself would have handed out.
func TestStolenEdgeDrill(t *testing.T) {
	t.Parallel()
	now := time.Now().UTC()
	r0 := now.Add(-time.Minute).Format(time.RFC3339) + "/" + now.Add(20*time.Minute).Format(time.RFC3339)
	f := newFleet(t, "drill", "--budget", "40000", "--count", "400", "--edges", "2", "--min", "10", "--max", "190",
		"--per-user", "1", "--ttl", "1h", "--round", r0, "--round", "2030-01-01T00:00:00Z/2030-01-01T01:00:00Z", "--seed", "3")
	f.startVerifiers(1)
	f.startSettler()

	// What the attacker stole.
	shard, err := ticket.LoadShard(filepath.Join(f.camp, f.man.Shards[0].File))
	if err != nil {
		t.Fatal(err)
	}
	key, err := ticket.ReadKeyFile(filepath.Join(f.camp, f.man.Shards[0].KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	sealer, err := ticket.NewSealer(key, 0)
	if err != nil {
		t.Fatal(err)
	}
	first := shard.Header.FirstTicket
	round0 := shard.Header.RoundRanges[0]
	round1 := shard.Header.RoundRanges[1]
	other := f.man.Shards[1]
	rec := func(id uint64) ticket.Record { return shard.Records[id-first] }
	randMAC := func() (m [ticket.MACSize]byte) { rand.Read(m[:]); return m }
	ttl := time.Hour
	type forged struct {
		uid uint64
		tok ticket.TicketToken
	}
	mint := func(uid, id uint64, amount uint32, mac [ticket.MACSize]byte, round uint16, iss, exp time.Time) forged {
		return forged{uid, ticket.TicketToken{Ticket: id, UID: uid, Amount: amount, MAC: mac, Round: round,
			IssuedAt: uint32(iss.Unix()), ExpiresAt: uint32(exp.Unix())}}
	}
	nextUID := uint64(1_000_000)
	uid := func() uint64 { nextUID++; return nextUID }
	const n = 20
	kinds := []struct {
		name  string
		want  string // "<status> <code>"
		forge func(i int) forged
	}{
		{"another shard's ticket ids", "422 invalid_token", func(i int) forged {
			return mint(uid(), other.FirstTicket+uint64(i), 100, randMAC(), 0, now, now.Add(ttl))
		}},
		{"ticket ids outside the campaign", "422 invalid_token", func(i int) forged {
			return mint(uid(), f.man.Count+1+uint64(i)*1000, 100, randMAC(), 0, now, now.Add(ttl))
		}},
		{"own ticket, another amount", "422 invalid_token", func(i int) forged {
			id := round0.FirstTicket + uint64(i)
			r := rec(id)
			return mint(uid(), id, r.Amount+1, r.MAC, 0, now, now.Add(ttl))
		}},
		{"own ticket, another round", "422 invalid_token", func(i int) forged {
			id := round0.FirstTicket + uint64(i)
			r := rec(id)
			return mint(uid(), id, r.Amount, r.MAC, 1, now, now.Add(ttl))
		}},
		{"own ticket, forged MAC", "422 invalid_token", func(i int) forged {
			id := round0.FirstTicket + uint64(i)
			return mint(uid(), id, rec(id).Amount, randMAC(), 0, now, now.Add(ttl))
		}},
		{"own ticket, expiring in 2099", "422 invalid_token", func(i int) forged {
			id := round0.FirstTicket + uint64(i)
			r := rec(id)
			return mint(uid(), id, r.Amount, r.MAC, 0, now, time.Date(2099, 1, 1, 0, 0, 0, 0, time.UTC))
		}},
		{"own ticket of the 2030 round, issued now", "422 invalid_token", func(i int) forged {
			id := round1.FirstTicket + uint64(i)
			r := rec(id)
			return mint(uid(), id, r.Amount, r.MAC, 1, now, now.Add(ttl))
		}},
		{"own ticket of the 2030 round, issued in 2030", "422 invalid_token", func(i int) forged {
			id := round1.FirstTicket + uint64(i)
			r := rec(id)
			iss := time.Date(2030, 1, 1, 0, 10, 0, 0, time.UTC)
			return mint(uid(), id, r.Amount, r.MAC, 1, iss, iss.Add(ttl))
		}},
		{"own ticket, issued before its round", "422 invalid_token", func(i int) forged {
			id := round0.FirstTicket + uint64(i)
			r := rec(id)
			return mint(uid(), id, r.Amount, r.MAC, 0, now.Add(-time.Hour), now.Add(time.Minute))
		}},
		{"own ticket, already expired", "410 expired", func(i int) forged {
			id := round0.FirstTicket + uint64(i)
			r := rec(id)
			return mint(uid(), id, r.Amount, r.MAC, 0, now.Add(-time.Minute), now.Add(-time.Second))
		}},
	}
	// The tickets the attacker really can open: shard 0's round-0 tickets 20..69, each
	// for a fresh uid, as an edge would seal them.
	var genuine []forged
	for i := 0; i < 50; i++ {
		id := round0.FirstTicket + 20 + uint64(i)
		r := rec(id)
		genuine = append(genuine, mint(uid(), id, r.Amount, r.MAC, 0, now, now.Add(ttl)))
	}
	open := func(fg forged) string {
		tok := sealer.Seal(nil, &fg.tok)
		st, b := f.open(f.verifierAddrs[0], fg.uid, string(tok))
		code := ""
		if i := strings.Index(b, `"error":"`); i >= 0 {
			code = b[i+9 : i+9+strings.IndexByte(b[i+9:], '"')]
		} else if strings.Contains(b, `"opened"`) {
			code = "opened"
		}
		return fmt.Sprintf("%d %s", st, code)
	}
	report := map[string]map[string]int{}
	tally := func(kind, got string) {
		if report[kind] == nil {
			report[kind] = map[string]int{}
		}
		report[kind][got]++
	}
	for _, k := range kinds {
		for i := 0; i < n; i++ {
			got := open(k.forge(i))
			tally(k.name, got)
			if got != k.want {
				t.Errorf("%s #%d: %s, want %s", k.name, i, got, k.want)
			}
		}
	}
	opened := 0
	for _, g := range genuine {
		got := open(g)
		tally("own ticket as an edge seals it, one uid each", got)
		if got != "200 opened" {
			t.Errorf("genuine form, ticket %d: %s", g.tok.Ticket, got)
		}
		opened++
		// The same ticket again for the same uid is the same 200 (no second claim) ...
		if again := open(g); again != "200 opened" {
			t.Errorf("ticket %d again for its uid: %s", g.tok.Ticket, again)
		}
		// ... and for a second uid it is someone else's.
		g2 := g
		g2.uid = uid()
		g2.tok.UID = g2.uid
		got = open(g2)
		tally("the same ticket for a second uid", got)
		if got != "409 already_opened" {
			t.Errorf("ticket %d for a second uid: %s", g.tok.Ticket, got)
		}
	}
	// One uid holding shard 0's round-0 tickets 70..79: the rule allows one.
	one := uid()
	for i := 0; i < 10; i++ {
		id := round0.FirstTicket + 70 + uint64(i)
		r := rec(id)
		got := open(mint(one, id, r.Amount, r.MAC, 0, now, now.Add(ttl)))
		tally("ten own tickets for one uid", got)
		if got == "200 opened" {
			opened++
		}
	}
	if c := report["ten own tickets for one uid"]; c["200 opened"] != 1 || c["409 limit_reached"] != 9 {
		t.Errorf("ten own tickets for one uid: %v", c)
	}

	f.waitSettled(int64(opened))
	code, rep := f.reconcile()
	if code != 0 || rep["ok"] != true || rep["over_limit_users"] != float64(0) || rep["conflicting_claims"] != float64(0) {
		t.Fatalf("reconcile after the drill: exit %d, %v", code, rep)
	}
	names := make([]string, 0, len(report))
	for k := range report {
		names = append(names, k)
	}
	sort.Strings(names)
	var b strings.Builder
	for _, k := range names {
		fmt.Fprintf(&b, "\n  %-48s %v", k, report[k])
	}
	t.Logf("stolen-edge drill, tokens tried per kind and what each got:%s\nsettled %v tickets (%v), reconcile ok=%v",
		b.String(), rep["settled_tickets"], rep["settled_amount"], rep["ok"])
}
