package query

import (
	"context"
	"fmt"
	"net/url"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"shake/internal/testpg"
	"shake/internal/testproxy"
	"shake/settler/ledger"
)

func TestMaskUID(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"13800138000", "13****00"}, {"123456", "12****56"}, {"12345", "****5"}, {"7", "****7"},
		{"", "****"}, {"12a456", "****"}, {"-123456", "****"},
	} {
		if got := string(MaskUID(nil, c.in)); got != c.want {
			t.Errorf("MaskUID(%q) = %q, want %q", c.in, got, c.want)
		}
	}
	buf := make([]byte, 0, 16)
	if n := testing.AllocsPerRun(100, func() { buf = MaskUID(buf[:0], "13800138000") }); n != 0 {
		t.Errorf("MaskUID allocates %v times", n)
	}
}

func TestCursorRoundTrip(t *testing.T) {
	k := newCursorKey(testSessionKey)
	pos := Position{SettledAt: t0, Campaign: "spring-2027", Ticket: 1<<63 - 1}
	c := k.appendCursor(nil, &pos, 77, "spring-2027")
	if len(c) > MaxCursorLen {
		t.Fatalf("cursor of %d chars, max %d", len(c), MaxCursorLen)
	}
	got, err := k.parseCursor(c, 77, "spring-2027")
	if err != nil || got != pos {
		t.Fatalf("parse = %+v, %v", got, err)
	}
	for _, bad := range []struct {
		uid    uint64
		filter string
	}{{78, "spring-2027"}, {77, ""}, {77, "spring-2028"}} {
		if _, err := k.parseCursor(c, bad.uid, bad.filter); err != ErrBadCursor {
			t.Errorf("cursor accepted for uid %d filter %q", bad.uid, bad.filter)
		}
	}
	other := newCursorKey([]byte("another session key, 32 bytes!!!"))
	if _, err := other.parseCursor(c, 77, "spring-2027"); err != ErrBadCursor {
		t.Error("cursor accepted under another session key")
	}
	if raceEnabled {
		return
	}
	buf := make([]byte, 0, 128)
	if n := testing.AllocsPerRun(100, func() { buf = k.appendCursor(buf[:0], &pos, 77, "") }); n != 0 {
		t.Errorf("appendCursor allocates %v times", n)
	}
}

// FuzzParseCursor: no input panics the decoder, and anything it accepts re-encodes to
// exactly the same text (one spelling per cursor).
func FuzzParseCursor(f *testing.F) {
	k := newCursorKey(testSessionKey)
	f.Add(string(k.appendCursor(nil, &Position{SettledAt: t0, Campaign: "c", Ticket: 1}, 1, "")))
	f.Add("")
	f.Add("AAAA")
	f.Fuzz(func(t *testing.T, s string) {
		pos, err := k.parseCursor([]byte(s), 1, "")
		if err != nil {
			return
		}
		if again := string(k.appendCursor(nil, &pos, 1, "")); again != s {
			t.Fatalf("accepted %q, which re-encodes as %q", s, again)
		}
	})
}

// TestReadOnlyRole runs the query server under a PostgreSQL role that can only
// SELECT (as README documents for production), and checks that the role really cannot
// write.
func TestReadOnlyRole(t *testing.T) {
	f := fixtures(t)
	if len(f) < 2 {
		t.Skip("SHAKE_TEST_POSTGRES not set")
	}
	pg := f[1]
	pg.insert(t, row{campaign: "ro", ticket: 1, amount: 10, uid: 3, postedAt: t0})
	ctx := context.Background()
	admin, err := pgx.Connect(ctx, pg.url)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	var schema string
	if err := admin.QueryRow(ctx, `SELECT current_schema()`).Scan(&schema); err != nil {
		t.Fatal(err)
	}
	role := fmt.Sprintf("shake_query_ro_%s", schema)
	for _, s := range []string{
		`CREATE ROLE ` + role + ` LOGIN`,
		`ALTER ROLE ` + role + ` SET default_transaction_read_only = on`,
		`GRANT USAGE ON SCHEMA ` + schema + ` TO ` + role,
		`GRANT SELECT ON ALL TABLES IN SCHEMA ` + schema + ` TO ` + role,
	} {
		if _, err := admin.Exec(ctx, s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
	t.Cleanup(func() {
		c, err := pgx.Connect(ctx, pg.url)
		if err != nil {
			return
		}
		defer c.Close(ctx)
		c.Exec(ctx, `REVOKE ALL ON ALL TABLES IN SCHEMA `+schema+` FROM `+role)
		c.Exec(ctx, `REVOKE ALL ON SCHEMA `+schema+` FROM `+role)
		c.Exec(ctx, `DROP ROLE `+role)
	})
	cfg, err := pgx.ParseConfig(pg.url)
	if err != nil {
		t.Fatal(err)
	}
	roURL := fmt.Sprintf("postgres://%s@%s:%d/%s?sslmode=disable&search_path=%s", role, cfg.Host, cfg.Port, cfg.Database, schema)
	ro, err := pgx.Connect(ctx, roURL)
	if err != nil {
		t.Skipf("cannot log in as %s (the test server's pg_hba.conf may require a password): %v", role, err)
	}
	_, werr := ro.Exec(ctx, `INSERT INTO campaigns (campaign, currency, budget, tickets, registered_at) VALUES ('x', 'CNY', 1, 1, 1)`)
	ro.Close(ctx)
	if werr == nil {
		t.Fatal("the read-only role could write")
	}
	ts := startServer(t, roURL, nil)
	p := ts.page(t, 3, "")
	if len(p.Packets) != 1 || p.Packets[0].Amount != 10 {
		t.Fatalf("page under the read-only role: %+v", p)
	}
	if code, _ := ts.get(t, CampaignsPrefix+"ro", ""); code != 404 {
		t.Fatalf("unregistered campaign under the read-only role: %d", code)
	}
}

// TestPGPool drives the PostgreSQL reader's own pool at its limit: the connection
// released last is reused first, a waiter gets a released connection, a waiter whose
// context ends gives up without losing a slot, and a broken connection frees its slot
// for a waiter, which dials in its place.
func TestPGPool(t *testing.T) {
	url := migratedPG(t)
	ctx := context.Background()
	r, err := openPG(ctx, url, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	a, err := r.acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	b, err := r.acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	r.release(a)
	r.release(b)
	if c, _ := r.acquire(ctx); c != b {
		t.Fatal("the pool did not hand out the connection released last")
	}
	if c, _ := r.acquire(ctx); c != a {
		t.Fatal("the second acquire did not get the other idle connection")
	}
	// Both out: a waiter whose context ends gets an error, and no slot is lost.
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	if _, err := r.acquire(short); err == nil {
		t.Fatal("acquire beyond the limit did not wait and fail")
	}
	cancel()
	got := waitingAcquire(t, r)
	r.release(a)
	if c := <-got; c != a {
		t.Fatal("the waiter did not get the released connection")
	}
	// A broken connection frees its slot: the next waiter dials a new one.
	got = waitingAcquire(t, r)
	b.Close(ctx)
	r.release(b)
	c := <-got
	if c == nil || c == a || c == b || c.IsClosed() {
		t.Fatal("the waiter did not get a fresh connection for the broken one")
	}
	var one int
	if err := c.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil || one != 1 {
		t.Fatalf("fresh connection: %v", err)
	}
	r.release(c)
	r.release(a)
	r.mu.Lock()
	open, idle, waiting := r.open, len(r.idle), len(r.waiters)
	r.mu.Unlock()
	if open != 2 || idle != 2 || waiting != 0 {
		t.Fatalf("pool open %d idle %d waiting %d, want 2 2 0", open, idle, waiting)
	}
}

// waitingAcquire starts an acquire on r, which must wait (every connection is out),
// and returns once it waits; the connection it gets comes on the channel.
func waitingAcquire(t *testing.T, r *pgReader) <-chan *pgx.Conn {
	t.Helper()
	got := make(chan *pgx.Conn, 1)
	go func() {
		c, err := r.acquire(context.Background())
		if err != nil {
			t.Error(err)
		}
		got <- c
	}()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		r.mu.Lock()
		n := len(r.waiters)
		r.mu.Unlock()
		if n == 1 {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatal("the acquire does not wait")
		}
	}
}

// TestPacketsDeadlineOnHungLedger black-holes the PostgreSQL connection under a reader
// (nothing forwarded, nothing closed, as a dead host or a partition looks): Packets must
// give up at its deadline, the server must answer 503 within its DBTimeout, the hung
// connection must not go back to the pool, and once the ledger answers again so must
// the reader. The deadline is the socket's (see Reader.Packets); nothing else would
// end a statement whose answer never comes.
func TestPacketsDeadlineOnHungLedger(t *testing.T) {
	ctx := context.Background()
	u, err := url.Parse(migratedPG(t))
	if err != nil {
		t.Fatal(err)
	}
	p, err := testproxy.Start(u.Host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	u.Host = p.Addr()
	r, err := openPG(ctx, u.String(), 2)
	if err != nil {
		t.Fatal(err)
	}
	ts := startWith(t, r, func(c *Config) { c.DBTimeout = 300 * time.Millisecond })
	if code, body := ts.get(t, PacketsPath, session(7)); code != 200 {
		t.Fatalf("before the hang: %d %s", code, body)
	}
	p.Gate.Hole(true)
	done := make(chan error, 1)
	go func() {
		_, err := r.Packets(time.Now().Add(200*time.Millisecond), 7, "", nil, PageSize+1, nil)
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("Packets on a hung ledger returned no error")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Packets on a hung ledger still waits 5s after its 200ms deadline")
	}
	t0 := time.Now()
	if code, body := ts.get(t, PacketsPath, session(7)); code != 503 || time.Since(t0) > 3*time.Second {
		t.Fatalf("GET on a hung ledger: %d %s after %v, want 503 at the 300ms DBTimeout", code, body, time.Since(t0))
	}
	r.mu.Lock()
	open := r.open
	r.mu.Unlock()
	if open != 0 {
		t.Fatalf("%d connections still counted open after both timed out: a hung one went back to the pool", open)
	}
	p.Gate.Hole(false)
	if code, body := ts.get(t, PacketsPath, session(7)); code != 200 {
		t.Fatalf("after the ledger came back: %d %s", code, body)
	}
}

// migratedPG returns the URL of a fresh PostgreSQL schema the settler's migrations have
// run on, or skips when SHAKE_TEST_POSTGRES is unset (CI sets it).
func migratedPG(t *testing.T) string {
	t.Helper()
	url := testpg.URL(t)
	if url == "" {
		t.Skip("SHAKE_TEST_POSTGRES not set")
	}
	l, err := ledger.Open(context.Background(), url)
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
	return url
}
