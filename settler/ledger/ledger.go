// Package ledger is the payment ledger behind one small interface, with two
// implementations sharing one schema: PostgreSQL (jackc/pgx) and SQLite
// (modernc.org/sqlite, pure Go, the embedded default).
//
// The ledger is double-entry. Every movement of money is a transfer from a debit account
// to a credit account, recorded once, and the balances of both accounts change in the
// same transaction, so the sum over all account balances is always zero:
//
//	fund:    sponsor:<campaign>    -> budget:<campaign>:<k>    shard k's amount, once
//	posting: budget:<campaign>:<k> -> wallet:<currency>:<uid>  one settled ticket, once
//	refund:  budget:<campaign>:<k> -> sponsor:<campaign>       shard k's unopened remainder, once
//
// A campaign has one budget account per shard (FundShards), so that batches of
// different shards lock different rows and post in parallel; the campaign's budget is
// their sum. A campaign funded whole (Fund, and every campaign a ledger funded before
// shard accounts existed) has the one account budget:<campaign> instead.
//
// Posting is idempotent on (campaign, ticket): a unique index rejects the second copy and
// only newly inserted rows move balances.
package ledger

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"

	"shake/ticket"
)

// Sentinel errors callers branch on.
var (
	// ErrInvalid reports a posting that breaks the ledger's own invariants (negative
	// amount, zero ticket, bad campaign or currency). It is never retried.
	ErrInvalid = errors.New("invalid posting")
	// ErrNotFunded reports a posting for a campaign whose budget was never funded.
	ErrNotFunded = errors.New("campaign not funded")
	// ErrConflict reports a fund or refund that disagrees with the one already recorded.
	ErrConflict = errors.New("conflicting campaign transfer")
	// ErrBadURL reports a ledger URL that names no supported backend.
	ErrBadURL = errors.New("ledger URL must be postgres://... or sqlite:///path/ledger.db")
	// ErrOverBudget reports a batch that would take a campaign's budget account below
	// zero. The ledger refuses it whole (nothing of it is posted); retrying the same
	// batch cannot succeed, so callers post its postings one by one and set aside the
	// ones that do not fit.
	ErrOverBudget = errors.New("posting would take the campaign's budget below zero")
	// ErrOtherGeneration reports a campaign id this ledger already settles for another
	// generation (the campaign was generated again under the same id).
	ErrOtherGeneration = errors.New("the ledger settles another generation of this campaign id")
	// ErrManifestChanged reports a manifest whose digest is not the one the campaign was
	// registered (funded) with.
	ErrManifestChanged = errors.New("the manifest differs from the one this ledger was funded with")
	// ErrSchemaNewer reports a ledger migrated by a newer shake than this one: this
	// binary does not know that schema and must not write to it (nor migrate it back).
	ErrSchemaNewer = errors.New("the ledger's schema is newer than this shake knows")
)

// CampaignInfo is what the settler's manifest says about a campaign, recorded once in
// the ledger's registry (table campaigns) when the settler starts: which generation of
// the campaign id this ledger settles and the digest of the manifest it is funded with
// (ticket.Manifest.Digest), and the campaign's public figures, so that readers of the
// ledger (the query server, under a read-only role) need no manifest file they would
// have to trust.
type CampaignInfo struct {
	Campaign       string
	Generation     string
	ManifestDigest string
	Currency       string
	Budget         int64
	Tickets        uint64
}

// Checks are the campaign-wide rules reconcile checks from the ledger.
type Checks struct {
	// Conflicts counts recorded claims for an already-posted ticket from another uid.
	Conflicts int64
	// OverLimitUsers counts users holding more than perUser postings in one round.
	OverLimitUsers int64
}

// Posting is one settled ticket: amount moves from the campaign's budget account to the
// wallet of uid in currency.
type Posting struct {
	Campaign string
	Ticket   uint64
	Shard    int
	Round    int
	Amount   int64
	Currency string
	UID      uint64
	OpenedAt time.Time
}

// Result is what one Post did.
type Result struct {
	Posted     int   // postings newly inserted
	Duplicates int   // postings already in the ledger for the same uid (or repeated within the batch)
	Amount     int64 // sum of the newly posted amounts
	// Conflicts are the indexes (in the batch) of postings for a ticket the ledger holds
	// for another uid: not posted, recorded in the conflicts table.
	Conflicts []int
}

// RefundResult is what Refund did.
type RefundResult struct {
	Amount int64 // the refunded remainder (the one recorded earlier when Posted is false)
	Posted bool  // false when the campaign had already been refunded
}

// Stats are a campaign's totals as the ledger records them.
type Stats struct {
	PostingRows    int64 // rows in postings for the campaign (duplicates included)
	Tickets        int64 // distinct tickets posted
	SettledAmount  int64 // sum of all posting rows
	Funded         bool
	FundedAmount   int64
	Refunded       bool
	RefundedAmount int64 // the refund transfer, before late claims
	// LateTickets and LateAmount are the postings paid from the sponsor account after
	// the refund (late claims); the net refund is RefundedAmount - LateAmount.
	LateTickets int64
	LateAmount  int64
	// BudgetBalance is the sum of the campaign's budget accounts' balances (0 if there
	// are none).
	BudgetBalance int64
	// Shards are the per-shard figures of a campaign funded per shard, in shard order
	// (nil for a campaign funded whole).
	Shards []ShardStats
}

// ShardStats are one shard budget account's figures.
type ShardStats struct {
	Shard    int
	Funded   int64 // the fund transfer into the account
	Settled  int64 // postings paid from the account (late claims are the sponsor's)
	Refunded int64 // the refund transfer out of the account
	Balance  int64 // the account's balance
}

// Audit is the whole ledger's double-entry check.
type Audit struct {
	// BalanceSum is the sum of every account's balance in the whole ledger; double
	// entry keeps it at zero.
	BalanceSum int64
	// DriftedAccounts counts accounts whose balance differs from the sum of the
	// transfers recorded for them (a balance updated behind the ledger's back).
	DriftedAccounts int64
}

// Ledger is the payment ledger. Implementations are safe for use by one goroutine at a
// time per method call; the settler serialises its batches anyway.
type Ledger interface {
	// Fund records the campaign's budget as a transfer from its sponsor account, once.
	// Funding again with the same amount is a no-op; another amount is ErrConflict.
	Fund(ctx context.Context, campaign, currency string, budget int64) error
	// FundShards records the campaign's budget as one transfer per shard, from its
	// sponsor account to the shard's budget account (amounts[k] for shard k), once.
	// Funding again with the same amounts is a no-op, and so is funding a campaign the
	// ledger funded whole with the same total (it keeps its one account); other amounts
	// are ErrConflict.
	FundShards(ctx context.Context, campaign, currency string, amounts []int64) error
	// Post inserts the postings that are not yet in the ledger and moves their amounts,
	// all in one transaction. Postings of an unfunded campaign fail the whole batch with
	// ErrNotFunded. A posting of a campaign that is already refunded is a late claim: a
	// ticket opened before expiry whose claim arrived after the refund (from a verifier's
	// spool, say). The user was told it was opened, so it is paid, from the sponsor
	// account, which got that ticket's money back in the refund.
	Post(ctx context.Context, batch []Posting) (Result, error)
	// Refund funds the campaign if needed (whole), then moves what is left in each of its
	// budget accounts back to the sponsor, once. A second call posts nothing and reports the first.
	Refund(ctx context.Context, campaign, currency string, budget int64) (RefundResult, error)
	// Stats returns the campaign's totals (cheap: indexed aggregates).
	Stats(ctx context.Context, campaign string) (Stats, error)
	// Audit recomputes every account's balance from the recorded transfers (a full
	// scan: for reconcile, not for polling).
	Audit(ctx context.Context) (Audit, error)
	// Register records info in the campaign registry, once, in one statement.
	// Registering the same info again is a no-op; another generation is
	// ErrOtherGeneration; the same generation with another digest or other figures is
	// ErrManifestChanged. (A row an older ledger left half filled, see migration 0004,
	// gets its missing half.)
	Register(ctx context.Context, info CampaignInfo) error
	// Registered returns what Register recorded for campaign (ok false: nothing, or
	// only figures without a generation, from an older ledger). Currency is "" (and
	// Budget and Tickets 0) when an older ledger registered the campaign without them.
	Registered(ctx context.Context, campaign string) (info CampaignInfo, ok bool, err error)
	// Checks counts the campaign's conflicts and the users above perUser postings in one
	// round (perUser 0: no limit, OverLimitUsers is 0).
	Checks(ctx context.Context, campaign string, perUser int) (Checks, error)
	// Scan calls fn for every posting row of the campaign in ticket order (duplicates,
	// if the unique index was ever bypassed, come out as consecutive equal tickets).
	Scan(ctx context.Context, campaign string, fn func(ticket uint64, amount int64, currency string) error) error
	// Close releases the connections.
	Close() error
}

// Open opens the ledger at url and applies the embedded migrations:
// postgres://... or postgresql://... (PostgreSQL), sqlite:///path/ledger.db (SQLite,
// created if missing).
func Open(ctx context.Context, url string) (Ledger, error) {
	switch {
	case strings.HasPrefix(url, "postgres://"), strings.HasPrefix(url, "postgresql://"):
		return openPostgres(ctx, url)
	case strings.HasPrefix(url, "sqlite://"):
		path, err := sqlitePath(url)
		if err != nil {
			return nil, err
		}
		return openSQLite(ctx, path)
	}
	return nil, fmt.Errorf("%w: got %q", ErrBadURL, url)
}

// sqlitePath is the file of a sqlite:///path/ledger.db URL.
func sqlitePath(url string) (string, error) {
	path := strings.TrimPrefix(url, "sqlite://")
	if q := strings.IndexByte(path, '?'); q >= 0 {
		path = path[:q]
	}
	if path == "" || path == "/" {
		return "", fmt.Errorf("%w: no path in %q", ErrBadURL, url)
	}
	return path, nil
}

// BudgetAccount names the campaign's budget account.
func BudgetAccount(campaign string) string { return "budget:" + campaign }

// ShardBudgetAccount names the budget account of shard k of a campaign funded per shard.
func ShardBudgetAccount(campaign string, shard int) string {
	return "budget:" + campaign + ":" + strconv.Itoa(shard)
}

// shardBudgetRange bounds the names of the campaign's shard budget accounts: they sort
// in [lo, hi) (campaign ids hold no ':' or ';').
func shardBudgetRange(campaign string) (lo, hi string) {
	return "budget:" + campaign + ":", "budget:" + campaign + ";"
}

// budgetShard is the shard of one of campaign's budget accounts (-1: the one account of
// a campaign funded whole).
func budgetShard(campaign, name string) (int, error) {
	if name == BudgetAccount(campaign) {
		return -1, nil
	}
	lo, _ := shardBudgetRange(campaign)
	k, err := strconv.Atoi(strings.TrimPrefix(name, lo))
	if err != nil || !strings.HasPrefix(name, lo) || k < 0 {
		return 0, fmt.Errorf("BUG: %q is not a budget account of %s", name, campaign)
	}
	return k, nil
}

// debits says which account each posting of a batch is paid from: its shard's budget
// account, the campaign's one budget account (funded whole), or, once the campaign is
// refunded, its sponsor (a late claim; see Ledger.Post).
type debits struct {
	refunded map[string]bool
	shards   map[string]map[int]string // campaign -> shard -> budget account; none: funded whole
}

func newDebits() *debits {
	return &debits{refunded: map[string]bool{}, shards: map[string]map[int]string{}}
}

func (d *debits) account(p *Posting) string {
	if d.refunded[p.Campaign] {
		return SponsorAccount(p.Campaign)
	}
	if names, ok := d.shards[p.Campaign]; ok {
		return names[p.Shard]
	}
	return BudgetAccount(p.Campaign)
}

// resolve records how campaign is funded from the budget accounts that exist (have) and
// checks that every shard of the batch has one: funded whole, or per shard.
func (d *debits) resolve(batch []Posting, campaign string, have map[string]bool, refunded bool) error {
	d.refunded[campaign] = refunded
	if have[BudgetAccount(campaign)] {
		return nil
	}
	names := map[int]string{}
	for i := range batch {
		p := &batch[i]
		if p.Campaign != campaign {
			continue
		}
		if _, ok := names[p.Shard]; ok {
			continue
		}
		n := ShardBudgetAccount(campaign, p.Shard)
		if !have[n] {
			return fmt.Errorf("%w: %s shard %d", ErrNotFunded, campaign, p.Shard)
		}
		names[p.Shard] = n
	}
	d.shards[campaign] = names
	return nil
}

// budgetNames lists the budget accounts a batch of campaign may be paid from, sorted:
// the one account, and one per shard of the batch.
func budgetNames(batch []Posting, campaign string) []string {
	names := []string{BudgetAccount(campaign)}
	seen := map[int]bool{}
	for i := range batch {
		if p := &batch[i]; p.Campaign == campaign && !seen[p.Shard] {
			seen[p.Shard] = true
			names = append(names, ShardBudgetAccount(campaign, p.Shard))
		}
	}
	sort.Strings(names)
	return names
}

// checkShardAmounts checks a per-shard funding before it reaches the ledger and returns
// its total.
func checkShardAmounts(campaign, currency string, amounts []int64) (int64, error) {
	var total int64
	bad := len(amounts) == 0 || len(amounts) > ticket.MaxShards
	for _, a := range amounts {
		if a < 0 || a > math.MaxInt64-total {
			bad = true
			break
		}
		total += a
	}
	if bad {
		return 0, fmt.Errorf("%w: campaign %q shard amounts %v", ErrInvalid, campaign, amounts)
	}
	return total, checkCampaignTransfer(campaign, currency, total)
}

// sameShardFunding compares the recorded fund transfers of a campaign (shard -> amount;
// shard -1: funded whole) with a per-shard funding: nil when they agree.
func sameShardFunding(campaign, currency, haveCurrency string, have map[int]int64, amounts []int64, total int64) error {
	if whole, ok := have[-1]; ok && len(have) == 1 {
		if whole == total && haveCurrency == currency {
			return nil
		}
	} else if len(have) == len(amounts) && haveCurrency == currency {
		same := true
		for k, a := range amounts {
			if v, ok := have[k]; !ok || v != a {
				same = false
			}
		}
		if same {
			return nil
		}
	}
	return fmt.Errorf("%w: campaign %s funded with %v %s, not %v %s", ErrConflict, campaign, have, haveCurrency, amounts, currency)
}

// SponsorAccount names the campaign sponsor's account.
func SponsorAccount(campaign string) string { return "sponsor:" + campaign }

// WalletAccount names the wallet of uid in currency.
func WalletAccount(currency string, uid uint64) string {
	return "wallet:" + currency + ":" + strconv.FormatUint(uid, 10)
}

// checkPosting is the ledger's own check of a posting, the second after the settler's
// manifest check: the ledger must never hold a negative amount or an id it cannot store.
func checkPosting(p *Posting) error {
	switch {
	case !ticket.ValidCampaign(p.Campaign):
		return fmt.Errorf("%w: campaign %q", ErrInvalid, p.Campaign)
	case p.Ticket == 0 || p.Ticket > math.MaxInt64:
		return fmt.Errorf("%w: ticket %d", ErrInvalid, p.Ticket)
	case p.Amount < 0 || p.Amount > ticket.MaxTicketAmount:
		return fmt.Errorf("%w: ticket %d amount %d", ErrInvalid, p.Ticket, p.Amount)
	case !ticket.ValidCurrency(p.Currency):
		return fmt.Errorf("%w: ticket %d currency %q", ErrInvalid, p.Ticket, p.Currency)
	case p.Shard < 0 || p.Round < 0:
		return fmt.Errorf("%w: ticket %d shard %d round %d", ErrInvalid, p.Ticket, p.Shard, p.Round)
	}
	return nil
}

// checkInfo checks a registration before it reaches the ledger.
func checkInfo(info *CampaignInfo) error {
	if !ticket.ValidCampaign(info.Campaign) || !ticket.ValidGeneration(info.Generation) || len(info.ManifestDigest) != 64 ||
		!ticket.ValidCurrency(info.Currency) || info.Budget < 0 || info.Tickets > math.MaxInt64 {
		return fmt.Errorf("%w: registration %+v", ErrInvalid, *info)
	}
	return nil
}

// CompareInfo returns nil when have (recorded in a ledger) and want agree, else
// ErrOtherGeneration or ErrManifestChanged, wrapped with what differs.
func CompareInfo(have, want CampaignInfo) error {
	switch {
	case have.Generation != want.Generation:
		return fmt.Errorf("%w: campaign %s is generation %s in the ledger, the manifest is generation %s; use a new campaign id or another ledger",
			ErrOtherGeneration, want.Campaign, have.Generation, want.Generation)
	case have.ManifestDigest != want.ManifestDigest:
		return fmt.Errorf("%w: campaign %s was funded with manifest digest %s, this one is %s",
			ErrManifestChanged, want.Campaign, have.ManifestDigest, want.ManifestDigest)
	case have.Currency == "":
		// An older ledger registered the campaign without its figures; Register fills them.
	case have.Currency != want.Currency || have.Budget != want.Budget || have.Tickets != want.Tickets:
		return fmt.Errorf("%w: campaign %s is registered with %d %s in %d tickets, the manifest says %d %s in %d tickets",
			ErrManifestChanged, want.Campaign, have.Budget, have.Currency, have.Tickets, want.Budget, want.Currency, want.Tickets)
	}
	return nil
}

// classify sets res.Conflicts and res.Duplicates of a batch from the uids the ledger
// holds for its tickets (posted[campaign][ticket]): a posting whose ticket is held for
// another uid is a conflict; the rest that were not newly posted are duplicates.
func classify(batch []Posting, posted map[string]map[uint64]string, res *Result) {
	res.Conflicts = res.Conflicts[:0]
	for i := range batch {
		p := &batch[i]
		if uid, ok := posted[p.Campaign][p.Ticket]; ok && uid != strconv.FormatUint(p.UID, 10) {
			res.Conflicts = append(res.Conflicts, i)
		}
	}
	res.Duplicates = len(batch) - res.Posted - len(res.Conflicts)
}

// overLimitQuery counts the users holding more than $2 postings in one round.
const overLimitQuery = `SELECT COUNT(DISTINCT uid) FROM (
    SELECT uid FROM postings WHERE campaign = $1 GROUP BY uid, round HAVING COUNT(*) > $2) AS over_limit`

func checkCampaignTransfer(campaign, currency string, budget int64) error {
	if !ticket.ValidCampaign(campaign) || !ticket.ValidCurrency(currency) || budget < 0 {
		return fmt.Errorf("%w: campaign %q currency %q budget %d", ErrInvalid, campaign, currency, budget)
	}
	return nil
}

// campaignsOf returns the distinct campaigns of a batch in sorted order; locking their
// budget accounts in this order keeps concurrent settlers free of deadlocks.
func campaignsOf(batch []Posting) []string {
	var cs []string
	for i := range batch {
		c := batch[i].Campaign
		found := false
		for _, x := range cs {
			if x == c {
				found = true
				break
			}
		}
		if !found {
			cs = append(cs, c)
		}
	}
	for i := 1; i < len(cs); i++ {
		for j := i; j > 0 && cs[j] < cs[j-1]; j-- {
			cs[j], cs[j-1] = cs[j-1], cs[j]
		}
	}
	return cs
}

func micros(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMicro()
}

// driftQuery counts accounts whose balance differs from the sum of their transfers. It
// avoids FULL OUTER JOIN, which SQLite runs as a nested loop; both joins below use an
// index (the accounts primary key, or an automatic one on the materialised sums).
const driftQuery = `
WITH moves AS (
    SELECT debit AS acct, -amount AS d FROM postings
    UNION ALL SELECT credit, amount FROM postings
    UNION ALL SELECT debit, -amount FROM transfers
    UNION ALL SELECT credit, amount FROM transfers
), sums AS MATERIALIZED (SELECT acct, SUM(d) AS s FROM moves GROUP BY acct)
SELECT COUNT(*) FROM (
    SELECT a.name FROM accounts a LEFT JOIN sums m ON m.acct = a.name WHERE a.balance <> COALESCE(m.s, 0)
    UNION ALL
    SELECT m.acct FROM sums m LEFT JOIN accounts a ON a.name = m.acct WHERE a.name IS NULL AND m.s <> 0
) AS drifted`

// refundAccounts moves the balance of each of a campaign's budget accounts (bs) back to
// its sponsor: record writes the refund transfer of one account (its shard, -1 for the
// one account), add moves a balance. It returns the total refunded.
func refundAccounts(campaign string, bs []accountBalance, record func(shard int, from string, amount int64) error,
	add func(name string, delta int64) error) (int64, error) {
	var total int64
	for _, b := range bs {
		k, err := budgetShard(campaign, b.name)
		if err != nil {
			return 0, err
		}
		if b.balance < 0 {
			return 0, fmt.Errorf("%w: budget account %s is negative (%d)", ErrConflict, b.name, b.balance)
		}
		if err := record(k, b.name, b.balance); err != nil {
			return 0, err
		}
		if err := add(b.name, -b.balance); err != nil {
			return 0, err
		}
		total += b.balance
	}
	return total, add(SponsorAccount(campaign), total)
}

// accountBalance is one account's balance.
type accountBalance struct {
	name    string
	balance int64
}

// transferSumQuery sums a campaign's transfers of one kind (one row, or one per shard).
const transferSumQuery = `SELECT CAST(COALESCE(SUM(amount), 0) AS BIGINT), COALESCE(MIN(currency), ''), COUNT(*)
    FROM transfers WHERE campaign = $1 AND kind = $2`

// shardStatsQuery gives, per shard budget account of a campaign, its fund and refund
// transfers and what postings it paid ($2 is the sponsor, who pays late claims).
const shardStatsQuery = `SELECT t.shard, t.amount,
    COALESCE((SELECT r.amount FROM transfers r WHERE r.campaign = $1 AND r.kind = 'refund' AND r.shard = t.shard), 0),
    CAST(COALESCE((SELECT SUM(p.amount) FROM postings p WHERE p.campaign = $1 AND p.shard = t.shard AND p.debit <> $2), 0) AS BIGINT),
    COALESCE((SELECT a.balance FROM accounts a WHERE a.name = $3 || t.shard), 0)
    FROM transfers t WHERE t.campaign = $1 AND t.kind = 'fund' AND t.shard >= 0 ORDER BY t.shard`

// budgetBalanceQuery sums the balances of a campaign's budget accounts: $1 the one
// account, [$2, $3) the shard accounts.
const budgetBalanceQuery = `SELECT CAST(COALESCE(SUM(balance), 0) AS BIGINT) FROM accounts WHERE name = $1 OR (name >= $2 AND name < $3)`

// balanceSumQuery sums every balance; double entry keeps it at zero.
const balanceSumQuery = `SELECT COALESCE(SUM(balance), 0) FROM accounts`

// balanceMoves sums the balance changes of a batch per account, then lists them in
// account order: every writer that updates accounts in this one order never deadlocks
// with another. The slices are reused from batch to batch.
type balanceMoves struct {
	index      map[string]int
	names      []string
	currencies []string
	deltas     []int64
}

func (m *balanceMoves) reset() {
	if m.index == nil {
		m.index = make(map[string]int)
	}
	clear(m.index)
	m.names, m.currencies, m.deltas = m.names[:0], m.currencies[:0], m.deltas[:0]
}

func (m *balanceMoves) add(name, currency string, delta int64) {
	if i, ok := m.index[name]; ok {
		m.deltas[i] += delta
		return
	}
	m.index[name] = len(m.names)
	m.names = append(m.names, name)
	m.currencies = append(m.currencies, currency)
	m.deltas = append(m.deltas, delta)
}

// sort orders the moves by account name.
func (m *balanceMoves) sort() { sort.Sort((*movesByName)(m)) }

type movesByName balanceMoves

func (m *movesByName) Len() int           { return len(m.names) }
func (m *movesByName) Less(i, j int) bool { return m.names[i] < m.names[j] }
func (m *movesByName) Swap(i, j int) {
	m.names[i], m.names[j] = m.names[j], m.names[i]
	m.currencies[i], m.currencies[j] = m.currencies[j], m.currencies[i]
	m.deltas[i], m.deltas[j] = m.deltas[j], m.deltas[i]
}
