package edge

import (
	"bufio"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"shake/internal/obs"
	"shake/ticket"
)

// fixture is a campaign with one shard written to a temporary directory, as the
// generator would write it, plus the keys the tests need to check what the edge hands
// out.
type fixture struct {
	dir        string
	tickets    string
	key        string
	sessPath   string
	hdr        ticket.ShardHeader
	amounts    []uint32
	shardKey   []byte
	sess       *ticket.SessionKey
	mac        *ticket.TicketMAC
	opener     *ticket.Opener
	campaignKy []byte
}

type shardSpec struct {
	count   uint64
	shard   int
	shards  int
	first   uint64
	rounds  []ticket.RoundWindow // nil: one always-open round
	perRnd  []uint64             // tickets per round (sums to count)
	created time.Time
	ttl     int64
	perUser int // the campaign's per_user, in the shard header
	// perDevice and maxRisk are the campaign's device and risk rules in the header.
	perDevice int
	maxRisk   *int
	dir       string // "" means t.TempDir()
}

func newFixture(t testing.TB, spec shardSpec) *fixture {
	t.Helper()
	if spec.shards == 0 {
		spec.shards = 1
	}
	if spec.first == 0 {
		spec.first = 1
	}
	if spec.created.IsZero() {
		spec.created = time.Now().UTC().Truncate(time.Second)
	}
	if spec.ttl == 0 {
		spec.ttl = 86400
	}
	if spec.rounds == nil {
		spec.rounds = []ticket.RoundWindow{{Index: 0}}
		spec.perRnd = []uint64{spec.count}
	}
	dir := spec.dir
	if dir == "" {
		dir = t.TempDir()
	}
	f := &fixture{dir: dir, campaignKy: ticket.NewKey()}
	const campaign = "cny-2026"
	gen := ticket.NewGeneration()
	var err error
	if f.shardKey, err = ticket.ShardKey(f.campaignKy, campaign, gen, spec.shard); err != nil {
		t.Fatal(err)
	}
	macKey, _ := ticket.MACKey(f.campaignKy, campaign, gen)
	if f.mac, err = ticket.NewTicketMAC(macKey, campaign); err != nil {
		t.Fatal(err)
	}
	keys := make([][]byte, spec.shards)
	for i := range keys {
		keys[i], _ = ticket.ShardKey(f.campaignKy, campaign, gen, i)
	}
	if f.opener, err = ticket.NewOpener(keys); err != nil {
		t.Fatal(err)
	}
	sk := ticket.NewKey()
	f.sessPath = filepath.Join(dir, "session.key")
	if err := ticket.WriteKeyFile(f.sessPath, sk); err != nil {
		t.Fatal(err)
	}
	f.sess, _ = ticket.NewSessionKey(sk)
	name := "edge-" + pad3(spec.shard)
	f.key = filepath.Join(dir, name+".key")
	if err := ticket.WriteKeyFile(f.key, f.shardKey); err != nil {
		t.Fatal(err)
	}
	f.amounts = make([]uint32, spec.count)
	var total int64
	for i := range f.amounts {
		f.amounts[i] = uint32(1 + (uint64(i)*7919)%500)
		total += int64(f.amounts[i])
	}
	h := ticket.ShardHeader{
		Version: ticket.ShardVersion, Campaign: campaign, Currency: "CNY",
		Shard: spec.shard, Shards: spec.shards, FirstTicket: spec.first, Count: spec.count,
		Amount: total, TTLSeconds: spec.ttl, Rounds: spec.rounds, CreatedAt: spec.created,
		KeyCheck: ticket.KeyCheck(f.shardKey, campaign, spec.shard), Generation: gen, PerUser: spec.perUser, PerDevice: spec.perDevice, MaxRisk: spec.maxRisk,
	}
	next := spec.first
	for i, n := range spec.perRnd {
		var a int64
		for j := next - spec.first; j < next-spec.first+n; j++ {
			a += int64(f.amounts[j])
		}
		h.RoundRanges = append(h.RoundRanges, ticket.RoundRange{Round: i, FirstTicket: next, Count: n, Amount: a})
		next += n
	}
	f.hdr = h
	f.tickets = filepath.Join(dir, name+".tickets")
	out, err := os.Create(f.tickets)
	if err != nil {
		t.Fatal(err)
	}
	bw := bufio.NewWriter(out)
	sw, err := ticket.NewShardWriter(bw, h)
	if err != nil {
		t.Fatal(err)
	}
	for i, a := range f.amounts {
		id := spec.first + uint64(i)
		if err := sw.Append(a, f.mac.Sum(id, a, uint16(h.RoundOf(id)))); err != nil {
			t.Fatal(err)
		}
	}
	if err := sw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := bw.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	return f
}

func pad3(n int) string {
	s := strconv.Itoa(n)
	for len(s) < 3 {
		s = "0" + s
	}
	return s
}

// session mints a session token for uid valid for an hour.
func (f *fixture) session(uid uint64) string {
	return string(f.sess.Mint(nil, uid, time.Now().Add(time.Hour).Unix()))
}

// config is the configuration of the first start on state (it creates the file).
func (f *fixture) config(state string) Config {
	return Config{
		Tickets: f.tickets, Key: f.key, SessionKey: f.sessPath, State: state, InitState: true,
		Listen: "127.0.0.1:0", PerUser: 1, HTTP: obs.Common{AdminListen: "127.0.0.1:0"},
	}
}

// resume is the configuration of a later start on state.
func (f *fixture) resume(state string) Config {
	c := f.config(state)
	c.InitState = false
	return c
}

// checkToken opens a token, checks it against the shard and returns the ticket id.
func (f *fixture) checkToken(t testing.TB, tok string, uid uint64) uint64 {
	t.Helper()
	var tt ticket.TicketToken
	if err := f.opener.Open(&tt, []byte(tok), make([]byte, ticket.TokenRawLen)); err != nil {
		t.Fatalf("token does not open: %v", err)
	}
	if tt.UID != uid || int(tt.Shard) != f.hdr.Shard {
		t.Fatalf("token uid %d shard %d, want %d %d", tt.UID, tt.Shard, uid, f.hdr.Shard)
	}
	if tt.Ticket < f.hdr.FirstTicket || tt.Ticket >= f.hdr.FirstTicket+f.hdr.Count {
		t.Fatalf("ticket %d outside the shard", tt.Ticket)
	}
	if a := f.amounts[tt.Ticket-f.hdr.FirstTicket]; a != tt.Amount {
		t.Fatalf("ticket %d amount %d, shard says %d", tt.Ticket, tt.Amount, a)
	}
	if !f.mac.Verify(tt.Ticket, tt.Amount, tt.Round, tt.MAC) {
		t.Fatalf("ticket %d MAC does not verify", tt.Ticket)
	}
	if int(tt.Round) != f.hdr.RoundOf(tt.Ticket) {
		t.Fatalf("ticket %d round %d, want %d", tt.Ticket, tt.Round, f.hdr.RoundOf(tt.Ticket))
	}
	if tt.ExpiresAt <= tt.IssuedAt {
		t.Fatalf("ticket %d expires %d before issue %d", tt.Ticket, tt.ExpiresAt, tt.IssuedAt)
	}
	return tt.Ticket
}

// do runs one request through h and returns status and body.
func do(h fasthttp.RequestHandler, method, path, auth string, body []byte) (int, string, *fasthttp.RequestCtx) {
	var ctx fasthttp.RequestCtx
	ctx.Request.Header.SetMethod(method)
	ctx.Request.SetRequestURI(path)
	if auth != "" {
		ctx.Request.Header.Set("Authorization", auth)
	}
	if body != nil {
		ctx.Request.SetBody(body)
	}
	h(&ctx)
	return ctx.Response.StatusCode(), string(ctx.Response.Body()), &ctx
}

// sendRaw writes b on a fresh connection and returns what comes back within a short
// deadline (the server may also just close the connection).
func sendRaw(t testing.TB, addr string, b []byte) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		t.Errorf("dial: %v", err)
		return ""
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(300 * time.Millisecond))
	c.Write(b)
	buf := make([]byte, 4096)
	n, _ := io.ReadAtLeast(c, buf, 1)
	return string(buf[:n])
}

// benchFixture is newFixture for benchmarks.
func benchFixture(b testing.TB, count uint64) *fixture { return newFixture(b, shardSpec{count: count}) }

// benchSessions mints "Bearer <token>" headers for uids 1..n.
func benchSessions(f *fixture, n int) [][]byte {
	out := make([][]byte, n)
	exp := time.Now().Add(time.Hour).Unix()
	for i := range out {
		out[i] = f.sess.Mint([]byte("Bearer "), uint64(i+1), exp)
	}
	return out
}
