package settler

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"shake/settler/ledger"
	"shake/ticket"
)

// MaxProblems bounds the problems listed in a report; the counters count them all.
const MaxProblems = 20

// ErrNotExpired refuses a refund before every ticket of the campaign has expired.
var ErrNotExpired = errors.New("refund refused: tickets of this campaign can still be opened")

// ErrShardFile reports a shard file that reconcile needs and cannot read.
var ErrShardFile = errors.New("cannot read shard file")

// Report is the output of reconcile; its JSON keys are fixed by docs/cli.md (shake reconcile) (the first
// thirteen), the rest are additions that say where a failure is.
type Report struct {
	Campaign          string `json:"campaign"`
	Budget            int64  `json:"budget"`
	Tickets           uint64 `json:"tickets"`
	SettledTickets    int64  `json:"settled_tickets"`
	SettledAmount     int64  `json:"settled_amount"`
	RefundedAmount    int64  `json:"refunded_amount"`
	OutstandingAmount int64  `json:"outstanding_amount"`
	Duplicates        int64  `json:"duplicates"`
	Mismatches        int64  `json:"mismatches"`
	UnknownTickets    int64  `json:"unknown_tickets"`
	// OverLimitUsers counts users holding more than the manifest's per_user postings in
	// one round (0 when per_user is 0, no limit).
	OverLimitUsers int64 `json:"over_limit_users"`
	// ConflictingClaims counts claims for a posted ticket that came from another user (a
	// ticket handed out twice): none was paid, but a user was told "opened" in vain.
	ConflictingClaims int64 `json:"conflicting_claims"`
	OK                bool  `json:"ok"`

	Currency     string `json:"currency"`
	Funded       bool   `json:"funded"`
	Refunded     bool   `json:"refunded"`
	RefundPosted bool   `json:"refund_posted,omitempty"` // this run posted the refund
	// LateTickets and LateAmount are claims opened before expiry that reached the ledger
	// after the refund and were paid from the sponsor account; RefundedAmount is the
	// refund net of them, so budget = settled + refunded + outstanding still holds.
	LateTickets     int64    `json:"late_settled_tickets"`
	LateAmount      int64    `json:"late_settled_amount"`
	BalanceSum      int64    `json:"balance_sum"`
	DriftedAccounts int64    `json:"drifted_accounts"`
	Problems        []string `json:"problems"`
	// Reason names, when ok is false, the first kind of failure (one of ReconcileReasons): what
	// a dashboard or an alert shows.
	Reason string `json:"reason,omitempty"`
}

// The reasons a reconciliation is not ok, most fundamental first.
const (
	ReasonLedgerMissing   = "ledger_missing"   // the SQLite file or PostgreSQL database does not exist
	ReasonNoSchema        = "no_schema"        // no settler ever migrated this database
	ReasonSchemaNewer     = "schema_newer"     // migrated by a newer shake
	ReasonSchemaOlder     = "schema_older"     // migrated by an older shake
	ReasonNotRegistered   = "not_registered"   // this campaign was never registered (funded) here
	ReasonOtherGeneration = "other_generation" // the ledger settles another generation of the campaign id
	ReasonManifestChanged = "manifest_changed" // funded with another manifest (its digest differs)
	ReasonNotFunded       = "not_funded"       // registered, never funded
	ReasonMoney           = "money"            // the money does not reconcile
	ReasonCannotCheck     = "cannot_check"     // the ledger could not be read (unreachable, timed out)
)

// ReconcileReasons lists every reason a reconciliation is not ok, for exporters that want a series per reason.
var ReconcileReasons = []string{ReasonLedgerMissing, ReasonNoSchema, ReasonSchemaNewer, ReasonSchemaOlder, ReasonNotRegistered,
	ReasonOtherGeneration, ReasonManifestChanged, ReasonNotFunded, ReasonMoney, ReasonCannotCheck}

// LedgerProblem turns an error of ledger.OpenReadOnly (or of reading the registry)
// that says the ledger is not this campaign's into its reason; ok is false for any
// other error (the ledger could not be reached: nothing was checked).
func LedgerProblem(err error) (reason string, ok bool) {
	for _, c := range []struct {
		err    error
		reason string
	}{{ledger.ErrNoLedger, ReasonLedgerMissing}, {ledger.ErrNoSchema, ReasonNoSchema}, {ledger.ErrSchemaNewer, ReasonSchemaNewer},
		{ledger.ErrSchemaOlder, ReasonSchemaOlder}, {ledger.ErrOtherGeneration, ReasonOtherGeneration},
		{ledger.ErrManifestChanged, ReasonManifestChanged}} {
		if errors.Is(err, c.err) {
			return c.reason, true
		}
	}
	return "", false
}

// Refused is the report of a reconciliation that could not look at the money: ok is
// false, reason says why and the problem is the one line an operator reads.
func Refused(m *ticket.Manifest, reason, problem string) *Report {
	return &Report{Campaign: m.Campaign, Budget: m.Budget, Tickets: m.Count, Currency: m.Currency,
		OutstandingAmount: m.Budget, Problems: []string{problem}, Reason: reason}
}

func (r *Report) problem(format string, args ...any) {
	if len(r.Problems) < MaxProblems {
		r.Problems = append(r.Problems, fmt.Sprintf(format, args...))
	}
}

// Reconcile checks the ledger against the campaign: no ticket posted twice, every posted
// amount (and currency) equal to its ticket's in the shard files (read from dir, one
// shard at a time, only for shards with postings), every posted ticket in the manifest,
// every account balance equal to its transfers and all balances summing to zero, and
// budget = settled + refunded + outstanding with outstanding >= 0. It returns an error
// only when it cannot check (ledger unreachable, shard file unreadable), or when the
// ledger settles this campaign for another generation or was funded with another
// manifest (ErrOtherGeneration, ErrManifestChanged): reconciling against a manifest
// changed after funding (expires_at moved, say) would prove the wrong thing.
func Reconcile(ctx context.Context, m *ticket.Manifest, dir string, l ledger.Ledger) (*Report, error) {
	if rep, err := checkFundedHere(ctx, m, l); rep != nil || err != nil {
		return rep, err
	}
	st, err := l.Stats(ctx, m.Campaign)
	if err != nil {
		return nil, err
	}
	ch, err := l.Checks(ctx, m.Campaign, m.PerUser)
	if err != nil {
		return nil, err
	}
	au, err := l.Audit(ctx)
	if err != nil {
		return nil, err
	}
	r := &Report{Campaign: m.Campaign, Budget: m.Budget, Tickets: m.Count, Currency: m.Currency, Problems: []string{},
		SettledTickets: st.Tickets, SettledAmount: st.SettledAmount, RefundedAmount: st.RefundedAmount - st.LateAmount,
		LateTickets: st.LateTickets, LateAmount: st.LateAmount,
		Funded: st.Funded, Refunded: st.Refunded, BalanceSum: au.BalanceSum, DriftedAccounts: au.DriftedAccounts,
		OverLimitUsers: ch.OverLimitUsers, ConflictingClaims: ch.Conflicts}
	if ch.OverLimitUsers > 0 {
		r.problem("%d users hold more than %d postings in one round (per_user)", ch.OverLimitUsers, m.PerUser)
	}
	if ch.Conflicts > 0 {
		r.problem("%d claims for tickets already posted to another user (a ticket handed out twice)", ch.Conflicts)
	}

	var (
		shard    *ticket.Shard
		shardIdx = -1
		prev     uint64
		rows     int64
		scanDups int64
	)
	err = l.Scan(ctx, m.Campaign, func(id uint64, amount int64, currency string) error {
		rows++
		if id == prev {
			scanDups++
			r.problem("ticket %d posted more than once", id)
		}
		prev = id
		i, ok := m.ShardOf(id)
		if !ok {
			r.UnknownTickets++
			r.problem("ticket %d (amount %d) is in no shard of the manifest", id, amount)
			return nil
		}
		if i != shardIdx {
			shard = nil // let the previous shard go before loading the next
			path := filepath.Join(dir, m.Shards[i].File)
			sh, err := ticket.LoadShard(path)
			if err != nil {
				return fmt.Errorf("%w: %v", ErrShardFile, err)
			}
			if err := m.CheckHeader(&sh.Header); err != nil || sh.Header.Shard != i {
				return fmt.Errorf("%w: %s: header disagrees with the manifest", ErrShardFile, path)
			}
			shard, shardIdx = sh, i
		}
		want := int64(shard.Records[id-shard.Header.FirstTicket].Amount)
		if amount != want || currency != m.Currency {
			r.Mismatches++
			r.problem("ticket %d posted as %d (minor units, %s), ticket is worth %d (%s)", id, amount, currency, want, m.Currency)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	// Duplicates two ways: rows beyond distinct tickets (from the stats snapshot) and
	// consecutive equal tickets in the scan; they agree unless postings moved meanwhile.
	r.Duplicates = max(st.PostingRows-st.Tickets, scanDups)
	r.OutstandingAmount = m.Budget - r.SettledAmount - r.RefundedAmount

	if r.OutstandingAmount < 0 {
		r.problem("settled %d + refunded %d exceed the budget %d", r.SettledAmount, r.RefundedAmount, m.Budget)
	}
	lateOK := true
	if st.LateAmount > 0 && !st.Refunded {
		lateOK = false
		r.problem("%d postings (%d) paid from the sponsor account, but the campaign was never refunded", st.LateTickets, st.LateAmount)
	}
	if st.LateAmount > st.RefundedAmount {
		lateOK = false
		r.problem("late claims paid by the sponsor (%d) exceed the refund (%d)", st.LateAmount, st.RefundedAmount)
	}
	if uint64(r.SettledTickets) > m.Count {
		r.problem("%d tickets settled, campaign has %d", r.SettledTickets, m.Count)
	}
	if au.BalanceSum != 0 {
		r.problem("account balances sum to %d, not 0 (double entry broken)", au.BalanceSum)
	}
	if au.DriftedAccounts != 0 {
		r.problem("%d account balances differ from their recorded transfers", au.DriftedAccounts)
	}
	balanceOK := !st.Funded || checkShardBudgets(r, m, st.Shards)
	if st.Funded {
		if st.FundedAmount != m.Budget {
			balanceOK = false
			r.problem("ledger funded the campaign with %d, manifest budget is %d", st.FundedAmount, m.Budget)
		}
		if st.BudgetBalance != r.OutstandingAmount {
			balanceOK = false
			r.problem("budget account holds %d, outstanding is %d", st.BudgetBalance, r.OutstandingAmount)
		}
	} else if rows > 0 || st.Refunded {
		balanceOK = false
		r.problem("postings exist but the campaign was never funded")
	}
	r.OK = r.Duplicates == 0 && r.Mismatches == 0 && r.UnknownTickets == 0 && r.OutstandingAmount >= 0 &&
		uint64(r.SettledTickets) <= m.Count && au.BalanceSum == 0 && au.DriftedAccounts == 0 && balanceOK && lateOK &&
		r.OverLimitUsers == 0 && r.ConflictingClaims == 0
	if !r.OK {
		r.Reason = ReasonMoney
	}
	if !st.Funded {
		r.problem("campaign %s is registered in this ledger but was never funded (a settler registers and funds it at its start)", m.Campaign)
		r.OK, r.Reason = false, ReasonNotFunded
	}
	return r, nil
}

// ReconcileURL reconciles m against the ledger at url opened read-only
// (ledger.OpenReadOnly): it never creates, migrates or writes the ledger. A ledger that
// is not this campaign's to reconcile (missing, no shake schema, another schema version,
// this campaign not registered, another generation or manifest) is a report with ok
// false and its reason; an error means nothing could be checked (unreachable, a shard
// file unreadable).
func ReconcileURL(ctx context.Context, m *ticket.Manifest, dir, url string) (*Report, error) {
	l, err := ledger.OpenReadOnly(ctx, url)
	if err != nil {
		if reason, ok := LedgerProblem(err); ok {
			return Refused(m, reason, err.Error()), nil
		}
		return nil, err
	}
	defer l.Close()
	return Reconcile(ctx, m, dir, l)
}

// checkFundedHere returns the refusal report when the ledger does not settle this
// campaign's generation with this manifest: nothing registered, another generation,
// another digest. Reconciling such a ledger would prove nothing about this campaign.
func checkFundedHere(ctx context.Context, m *ticket.Manifest, l ledger.Ledger) (*Report, error) {
	want, err := Info(m)
	if err != nil {
		return nil, err
	}
	have, ok, err := l.Registered(ctx, m.Campaign)
	if err != nil {
		return nil, err
	}
	if !ok {
		return Refused(m, ReasonNotRegistered, fmt.Sprintf("campaign %s (generation %s) is not registered in this ledger: no settler of this campaign funded it; is --ledger the settler's?",
			m.Campaign, m.Generation)), nil
	}
	if err := ledger.CompareInfo(have, want); err != nil {
		reason, _ := LedgerProblem(err)
		return Refused(m, reason, err.Error()), nil
	}
	return nil, nil
}

// checkShardBudgets proves each shard budget account of a campaign funded per shard:
// funded with its shard's amount in the manifest, holding exactly that amount less what
// it paid and refunded, never below zero. (The accounts' sum is checked against the
// outstanding amount with the campaign's.) A campaign funded whole has no shard figures.
func checkShardBudgets(r *Report, m *ticket.Manifest, shards []ledger.ShardStats) bool {
	if shards == nil {
		return true
	}
	ok := len(shards) == len(m.Shards)
	if !ok {
		r.problem("ledger funded %d shard budget accounts, manifest has %d shards", len(shards), len(m.Shards))
	}
	for i, sh := range shards {
		switch {
		case sh.Shard != i || i >= len(m.Shards):
			ok = false
			r.problem("ledger funded a budget account for shard %d, which the manifest does not have", sh.Shard)
		case sh.Funded != m.Shards[i].Amount:
			ok = false
			r.problem("shard %d budget account funded with %d, manifest says %d", i, sh.Funded, m.Shards[i].Amount)
		case sh.Balance != sh.Funded-sh.Settled-sh.Refunded || sh.Balance < 0:
			ok = false
			r.problem("shard %d budget account holds %d, funded %d - settled %d - refunded %d", i, sh.Balance, sh.Funded, sh.Settled, sh.Refunded)
		}
	}
	return ok
}

// ShardAmounts are the manifest's per-shard budgets, the amounts each shard's budget
// account is funded with: one account per shard, so that batches of different shards
// (other settlers of the group) never wait for one budget row.
func ShardAmounts(m *ticket.Manifest) []int64 {
	as := make([]int64, len(m.Shards))
	for i := range m.Shards {
		as[i] = m.Shards[i].Amount
	}
	return as
}

// Info returns the ledger registration of m: its campaign, generation and digest, and
// the figures (currency, budget, ticket count) readers of the ledger show.
func Info(m *ticket.Manifest) (ledger.CampaignInfo, error) {
	d, err := m.Digest()
	if err != nil {
		return ledger.CampaignInfo{}, err
	}
	return ledger.CampaignInfo{Campaign: m.Campaign, Generation: m.Generation, ManifestDigest: d,
		Currency: m.Currency, Budget: m.Budget, Tickets: m.Count}, nil
}

// Register records m in the ledger's campaign registry (the settler does it at start,
// before funding): it fails with ErrOtherGeneration or ErrManifestChanged when the
// ledger already settles another generation of the campaign id or was funded with
// another manifest.
func Register(ctx context.Context, m *ticket.Manifest, l ledger.Ledger) error {
	info, err := Info(m)
	if err != nil {
		return err
	}
	return l.Register(ctx, info)
}

// CheckRegistered returns ErrOtherGeneration or ErrManifestChanged when the ledger's
// registration of m's campaign disagrees with m; a campaign not registered passes.
func CheckRegistered(ctx context.Context, m *ticket.Manifest, l ledger.Ledger) error {
	want, err := Info(m)
	if err != nil {
		return err
	}
	have, ok, err := l.Registered(ctx, m.Campaign)
	if err != nil || !ok {
		return err
	}
	return ledger.CompareInfo(have, want)
}

// Refund returns the campaign's unopened remainder to the sponsor, once, and only after
// m.ExpiresAt (ErrNotExpired before). The caller reconciles first: refunding a ledger
// that does not reconcile would freeze a wrong figure.
func Refund(ctx context.Context, m *ticket.Manifest, l ledger.Ledger, now time.Time) (ledger.RefundResult, error) {
	if err := CheckRefundable(m, now); err != nil {
		return ledger.RefundResult{}, err
	}
	// A refund funds the campaign if nothing did: it registers the manifest first, so
	// that no other manifest of the campaign can be used later.
	if err := Register(ctx, m, l); err != nil {
		return ledger.RefundResult{}, err
	}
	// Funded per shard first, as the settler funds it, if no settler ever did.
	if err := l.FundShards(ctx, m.Campaign, m.Currency, ShardAmounts(m)); err != nil {
		return ledger.RefundResult{}, err
	}
	return l.Refund(ctx, m.Campaign, m.Currency, m.Budget)
}

// CheckRefundable returns ErrNotExpired unless every ticket of m has expired at now.
func CheckRefundable(m *ticket.Manifest, now time.Time) error {
	if m.ExpiresAt.IsZero() {
		return fmt.Errorf("%w: the manifest has no expires_at", ErrNotExpired)
	}
	if now.Before(m.ExpiresAt) {
		return fmt.Errorf("%w: they expire at %s", ErrNotExpired, m.ExpiresAt.UTC().Format(time.RFC3339))
	}
	return nil
}
