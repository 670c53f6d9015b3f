package query

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"shake/internal/obs"
	"shake/internal/testpg"
	"shake/settler/ledger"
	"shake/ticket"
)

// testSessionKey is the session.key of every test server.
var testSessionKey = []byte("0123456789abcdef0123456789abcdef")

// row is a posting written straight into the ledger, with a chosen posted_at, so that
// tests can place postings in time (ledger.Post stamps them with now).
type row struct {
	campaign string
	ticket   uint64
	amount   int64
	uid      uint64
	postedAt int64 // unix microseconds
}

// fixture is one ledger backend under test: a migrated, writable ledger plus a raw
// inserter.
type fixture struct {
	name   string
	url    string
	l      ledger.Ledger
	insert func(t *testing.T, rows ...row)
	exec   func(t *testing.T, stmt string) // one statement, behind the ledger's back
}

// fixtures returns SQLite always and PostgreSQL when SHAKE_TEST_POSTGRES is set.
func fixtures(t *testing.T) []fixture {
	t.Helper()
	var fs []fixture
	sqlURL := "sqlite://" + filepath.Join(t.TempDir(), "ledger.db")
	sqliteDB := func(t *testing.T) *sql.DB {
		t.Helper()
		db, err := sql.Open("sqlite", "file:"+strings.TrimPrefix(sqlURL, "sqlite://")+"?_pragma=busy_timeout(5000)")
		if err != nil {
			t.Fatal(err)
		}
		return db
	}
	fs = append(fs, fixture{name: "sqlite", url: sqlURL, exec: func(t *testing.T, stmt string) {
		t.Helper()
		db := sqliteDB(t)
		defer db.Close()
		if _, err := db.Exec(stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}, insert: func(t *testing.T, rows ...row) {
		t.Helper()
		db := sqliteDB(t)
		defer db.Close()
		tx, err := db.Begin()
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range rows {
			if _, err := tx.Exec(insertSQL("?"), rowArgs(r)...); err != nil {
				t.Fatal(err)
			}
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
	}})
	if u := testpg.URL(t); u != "" {
		fs = append(fs, fixture{name: "postgres", url: u, exec: func(t *testing.T, stmt string) {
			t.Helper()
			pgBatch(t, u, func(b *pgx.Batch) { b.Queue(stmt) })
		}, insert: func(t *testing.T, rows ...row) {
			t.Helper()
			pgBatch(t, u, func(b *pgx.Batch) {
				for _, r := range rows {
					b.Queue(insertSQL("$"), rowArgs(r)...)
				}
			})
		}})
	} else {
		t.Log("SHAKE_TEST_POSTGRES not set: PostgreSQL not tested (set it to e.g. postgres://postgres@127.0.0.1:5432/test?sslmode=disable)")
	}
	for i := range fs {
		l, err := ledger.Open(context.Background(), fs[i].url)
		if err != nil {
			t.Fatalf("%s: %v", fs[i].name, err)
		}
		t.Cleanup(func() { l.Close() })
		fs[i].l = l
	}
	return fs
}

// pgBatch sends the statements fill queues to the PostgreSQL database at url, on a
// connection of its own.
func pgBatch(t *testing.T, url string, fill func(*pgx.Batch)) {
	t.Helper()
	ctx := context.Background()
	c, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	b := &pgx.Batch{}
	fill(b)
	if err := c.SendBatch(ctx, b).Close(); err != nil {
		t.Fatal(err)
	}
}

func insertSQL(ph string) string {
	var p [11]string
	for i := range p {
		if ph == "$" {
			p[i] = fmt.Sprintf("$%d", i+1)
		} else {
			p[i] = "?"
		}
	}
	return `INSERT INTO postings (campaign, ticket, shard, round, amount, currency, uid, debit, credit, opened_at, posted_at)
VALUES (` + strings.Join(p[:], ", ") + `)`
}

func rowArgs(r row) []any {
	return []any{r.campaign, int64(r.ticket), 0, 0, r.amount, "CNY", fmt.Sprint(r.uid), ledger.BudgetAccount(r.campaign),
		ledger.WalletAccount("CNY", r.uid), r.postedAt, r.postedAt}
}

// testServer is a running query server.
type testServer struct {
	s    *Server
	base string
	reg  *obs.Registry
	http *http.Client
}

func startServer(t testing.TB, url string, mut func(*Config)) *testServer {
	t.Helper()
	rd, err := OpenReader(context.Background(), url, 8)
	if err != nil {
		t.Fatal(err)
	}
	return startWith(t, rd, mut)
}

func startWith(t testing.TB, rd Reader, mut func(*Config)) *testServer {
	t.Helper()
	reg := obs.NewRegistry()
	cfg := Config{Reader: rd, SessionKey: testSessionKey, Listen: "127.0.0.1:0", Registry: reg}
	if mut != nil {
		mut(&cfg)
	}
	s, err := New(cfg)
	if err != nil {
		rd.Close()
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return &testServer{s: s, base: "http://" + s.Addr(), reg: reg, http: &http.Client{Timeout: 10 * time.Second}}
}

// session mints a session token for uid valid for an hour.
func session(uid uint64) string {
	k, _ := ticket.NewSessionKey(testSessionKey)
	return string(k.Mint(nil, uid, time.Now().Add(time.Hour).Unix()))
}

// get sends GET path with the session token (none when tok is empty) and returns the
// status and the body.
func (ts *testServer) get(t testing.TB, path, tok string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, ts.base+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := ts.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("GET %s: Content-Type %q", path, ct)
	}
	return resp.StatusCode, b
}

// pageJSON is the /v1/packets answer.
type pageJSON struct {
	UID     string `json:"uid"`
	Packets []struct {
		Campaign  string `json:"campaign"`
		Ticket    string `json:"ticket"`
		Amount    int64  `json:"amount"`
		Currency  string `json:"currency"`
		SettledAt string `json:"settled_at"`
	} `json:"packets"`
	Next *string `json:"next"`
}

func (ts *testServer) page(t *testing.T, uid uint64, query string) pageJSON {
	t.Helper()
	st, b := ts.get(t, PacketsPath+query, session(uid))
	if st != 200 {
		t.Fatalf("GET %s%s as %d: %d %s", PacketsPath, query, uid, st, b)
	}
	var p pageJSON
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		t.Fatalf("page %s: %v", b, err)
	}
	if p.UID != fmt.Sprint(uid) {
		t.Fatalf("page of %d says uid %q", uid, p.UID)
	}
	if len(p.Packets) > PageSize {
		t.Fatalf("page of %d packets", len(p.Packets))
	}
	return p
}

// allPages follows next from the first page and returns every packet key seen, in
// order, calling between(i) before fetching page i+1.
func (ts *testServer) allPages(t *testing.T, uid uint64, filter string, between func(page int)) []string {
	t.Helper()
	var keys []string
	q := ""
	if filter != "" {
		q = "?campaign=" + filter
	}
	for i := 0; ; i++ {
		p := ts.page(t, uid, q)
		for _, pk := range p.Packets {
			keys = append(keys, pk.Campaign+"/"+pk.Ticket)
		}
		if p.Next == nil {
			return keys
		}
		if i > 10000 {
			t.Fatal("paging does not end")
		}
		if between != nil {
			between(i)
		}
		sep := "?"
		if filter != "" {
			sep = "?campaign=" + filter + "&"
		}
		q = sep + "before=" + *p.Next
	}
}

// The generation and manifest digest the tests register their campaigns with (any
// well-formed values: the query server reads only the figures).
var (
	testGeneration = strings.Repeat("1", 32)
	testDigest     = strings.Repeat("d", 64)
)
