package query

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"shake/ticket"
)

// Sentinel errors of the ledger readers.
var (
	// ErrBadURL reports a ledger URL that names no supported backend.
	ErrBadURL = errors.New("ledger URL must be postgres://... or sqlite:///path/ledger.db")
	// ErrSchema reports a ledger without the tables the query server reads: it has not
	// been migrated by a settler of this version yet.
	ErrSchema = errors.New("ledger lacks the query schema (campaigns, postings); start the settler of this version once to migrate it")
)

// TopN is the number of largest packets on a campaign page.
const TopN = 10

// Packet is one settled ticket of a user, as the ledger records it.
type Packet struct {
	Campaign  string
	Ticket    uint64
	Amount    int64
	Currency  string
	SettledAt int64 // unix microseconds: the posting's posted_at
}

// Position is a place in one user's packets, newest first: the paging key of the last
// packet of a page. The key is unique because (campaign, ticket) is.
type Position struct {
	SettledAt int64
	Campaign  string
	Ticket    uint64
}

// TopPacket is one of a campaign's largest packets. UID is the ledger's text, unmasked.
type TopPacket struct {
	UID    string
	Amount int64
}

// CampaignInfo is a campaign page's figures, all from one statement (one snapshot).
type CampaignInfo struct {
	Campaign       string
	Currency       string
	Budget         int64
	Tickets        int64
	SettledTickets int64
	SettledAmount  int64
	Top            []TopPacket // largest first, ties by ticket; at most TopN
}

// Reader is the query server's read-only view of the ledger.
type Reader interface {
	// Packets appends to dst at most limit packets of uid, newest first (by settled
	// time, then campaign, then ticket, all descending), only of campaign unless it is
	// empty, and only those strictly after pos unless pos is nil. It gives up at
	// deadline, the wait for a connection included.
	//
	// A deadline and not a context, because this is the call every /v1/packets makes:
	// a context that can end costs it 5 allocations to make and 6 more for pgx to
	// watch it (context.AfterFunc), where a deadline on the connection's socket costs
	// none.
	Packets(deadline time.Time, uid uint64, campaign string, pos *Position, limit int, dst []Packet) ([]Packet, error)
	// Campaign returns the figures of a registered campaign in one statement; found is
	// false when the ledger knows no such campaign.
	Campaign(ctx context.Context, id string) (info CampaignInfo, found bool, err error)
	// Ping checks that the ledger answers.
	Ping(ctx context.Context) error
	// Close releases the connections.
	Close() error
}

// OpenReader opens the ledger at url read-only: postgres://... or postgresql://...
// (a read replica and a read-only role will do: it never writes and never migrates),
// or sqlite:///path/ledger.db (the file must exist). conns bounds the connections.
func OpenReader(ctx context.Context, url string, conns int) (Reader, error) {
	if conns <= 0 {
		conns = DefaultDBConns
	}
	switch {
	case strings.HasPrefix(url, "postgres://"), strings.HasPrefix(url, "postgresql://"):
		return openPG(ctx, url, conns)
	case strings.HasPrefix(url, "sqlite://"):
		path := strings.TrimPrefix(url, "sqlite://")
		if q := strings.IndexByte(path, '?'); q >= 0 {
			path = path[:q]
		}
		if path == "" || path == "/" {
			return nil, fmt.Errorf("%w: no path in %q", ErrBadURL, url)
		}
		return openSQLite(ctx, path, conns)
	}
	return nil, fmt.Errorf("%w: got %q", ErrBadURL, url)
}

// The statements, in PostgreSQL's spelling; sqlite.go has SQLite's. Both read only
// what migration *_query.sql indexes: the page is a backward range scan of
// postings_uid_posted, the campaign page reads postings_campaign_amount.
const (
	pgPacketsSQL = `SELECT posted_at, campaign, ticket, amount, currency FROM postings
WHERE uid = $1 AND (posted_at, campaign, ticket) < ($2, $3, $4)
ORDER BY posted_at DESC, campaign DESC, ticket DESC LIMIT $5`
	pgPacketsCampaignSQL = `SELECT posted_at, campaign, ticket, amount, currency FROM postings
WHERE uid = $1 AND (posted_at, campaign, ticket) < ($2, $3, $4) AND campaign = $6
ORDER BY posted_at DESC, campaign DESC, ticket DESC LIMIT $5`
	pgCampaignSQL = `WITH r AS (SELECT currency, budget, tickets FROM campaigns WHERE campaign = $1 AND currency IS NOT NULL),
s AS (SELECT COUNT(*) AS n, COALESCE(SUM(amount), 0)::BIGINT AS total FROM postings WHERE campaign = $1),
t AS (SELECT uid, amount, ticket FROM postings WHERE campaign = $1 ORDER BY amount DESC, ticket LIMIT 10)
SELECT r.currency, r.budget, r.tickets, s.n, s.total, t.uid, t.amount
FROM r CROSS JOIN s LEFT JOIN t ON true ORDER BY t.amount DESC, t.ticket`
	schemaProbeSQL = `SELECT (SELECT COUNT(*) FROM (SELECT currency, budget, tickets FROM campaigns LIMIT 1) a),
(SELECT COUNT(*) FROM (SELECT posted_at, campaign, ticket, amount, currency, uid FROM postings LIMIT 1) b)`
)

// firstPosition is the paging key above every real one: the first page is "strictly
// after" it. posted_at is unix microseconds, so MaxInt64 is never a real value.
var firstPosition = Position{SettledAt: 1<<63 - 1}

// rows is what pgx.Rows and *sql.Rows have in common, so that both backends decode
// their results in one place.
type rows interface {
	Next() bool
	Scan(dest ...any) error
	Err() error
}

// packetsCall is the scratch of one Packets call: the statement's arguments and the
// row's scan targets, with the []any slices that point at them. The variadic slices
// of Query and Scan escape to the heap, and with them every value they hold: made per
// call, they cost a page of 10 rows 15 allocations, a third of the request's, and the
// garbage collector cycles that come with them (at half its saturation rate,
// /v1/packets' p99 was 2.1-16.1 ms with GOGC=100 and 2.1-3.8 ms with GOGC=800, in
// alternated runs). Readers keep them in a
// sync.Pool; clear drops what they borrowed before one goes back.
type packetsCall[B ~[]byte] struct {
	// The statement's arguments, in its order. Values, not pointers to fields: pgx
	// dereferences a pointer argument through reflect, which allocates more than
	// boxing the value does (a zero or small integer, or "", boxes for free).
	args [6]any

	settled, ticket, amount int64
	campaignB, currencyB    B      // the driver's bytes, borrowed until the next row
	dest                    [5]any // pointers to the fields above, in column order
}

func newPacketsCall[B ~[]byte]() *packetsCall[B] {
	c := &packetsCall[B]{}
	c.dest = [5]any{&c.settled, &c.campaignB, &c.ticket, &c.amount, &c.currencyB}
	return c
}

// set fills the arguments of a packets statement and returns them: five, or six with
// the campaign filter.
func (c *packetsCall[B]) set(uid uint64, campaign string, pos *Position, limit int) []any {
	if pos == nil {
		pos = &firstPosition
	}
	c.args = [6]any{strconv.FormatUint(uid, 10), pos.SettledAt, pos.Campaign, int64(pos.Ticket), limit, campaign}
	if campaign == "" {
		return c.args[:5]
	}
	return c.args[:6]
}

// clear drops the values and driver buffers the call referenced.
func (c *packetsCall[B]) clear() {
	c.args = [6]any{}
	c.campaignB, c.currencyB = nil, nil
}

// scanPackets appends the rows of a packets statement to dst, scanning through c. B is
// the driver's type for a column's bytes borrowed until the next row
// (pgtype.DriverBytes, sql.RawBytes): a page repeats a few campaign ids and one
// currency, so each is copied into a string only when it differs from the row
// before's, and a page of 10 rows costs an allocation or two here, not two per row.
func scanPackets[B ~[]byte](rs rows, c *packetsCall[B], dst []Packet) ([]Packet, error) {
	var last Packet
	for rs.Next() {
		if err := rs.Scan(c.dest[:]...); err != nil {
			return dst, err
		}
		dst = append(dst, Packet{SettledAt: c.settled, Ticket: uint64(c.ticket), Amount: c.amount,
			Campaign: reuse(last.Campaign, c.campaignB), Currency: reuse(last.Currency, c.currencyB)})
		last = dst[len(dst)-1]
	}
	return dst, rs.Err()
}

// reuse returns prev when it spells b, else b copied into a new string.
func reuse[B ~[]byte](prev string, b B) string {
	if prev == string(b) { // compared without a copy
		return prev
	}
	return string(b)
}

// scanCampaign decodes the rows of a campaign statement: one row per top packet, or
// one row of NULLs there when the campaign has no posting yet, or none at all for an
// unregistered campaign.
func scanCampaign(rs rows, info *CampaignInfo) (found bool, err error) {
	for rs.Next() {
		var uid sql.NullString
		var amount sql.NullInt64
		if err := rs.Scan(&info.Currency, &info.Budget, &info.Tickets, &info.SettledTickets, &info.SettledAmount, &uid, &amount); err != nil {
			return false, err
		}
		found = true
		if uid.Valid && amount.Valid && len(info.Top) < TopN {
			info.Top = append(info.Top, TopPacket{UID: uid.String, Amount: amount.Int64})
		}
	}
	if err := rs.Err(); err != nil || !found {
		return false, err
	}
	return true, checkCampaign(info)
}

// ErrInconsistent reports a campaign whose registered figures (what the settler
// recorded from its manifest) disagree with themselves or with the postings: the page
// is not served rather than showing figures nobody can vouch for.
var ErrInconsistent = errors.New("the ledger's campaign figures are inconsistent")

// checkCampaign checks what the registry says against itself and against the
// postings, so that a registry row written behind the settler's back (or a postings
// table fuller than the campaign) is an error, never a page.
func checkCampaign(info *CampaignInfo) error {
	var top int64
	for _, t := range info.Top {
		top = max(top, t.Amount)
	}
	if !ticket.ValidCurrency(info.Currency) || info.Budget < 0 || info.Tickets < 0 || info.SettledTickets < 0 ||
		info.SettledTickets > info.Tickets || info.SettledAmount < 0 || info.SettledAmount > info.Budget || top > info.Budget {
		return fmt.Errorf("%w: campaign %s registered with %d %s in %d tickets, %d tickets settled for %d",
			ErrInconsistent, info.Campaign, info.Budget, info.Currency, info.Tickets, info.SettledTickets, info.SettledAmount)
	}
	return nil
}
