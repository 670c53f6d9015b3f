package settler

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"shake/settler/ledger"
	"shake/ticket"
)

// Attacks on the settler through the claims topic. Anyone who can produce to
// shake.claims (kcat and a network path are enough) writes what they like; the settler
// must pay nothing that no verifier signed, and nothing twice.

// openLedger opens a fresh SQLite ledger in dir.
func openLedger(t *testing.T, dir string) ledger.Ledger {
	t.Helper()
	l, err := ledger.Open(context.Background(), "sqlite://"+filepath.Join(dir, "ledger.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// TestAttackForgedClaimsViaTopic: forged claims for tickets that exist, to any uid, with
// the largest amount, with no signature, a made-up one, a genuine one moved to another
// uid or amount, or one made with another generation's key. Before the fix the settler
// (without shard files, as it ran without --key) posted every one whose amount was in
// [min, max]. Now each is dead-lettered bad_signature and only genuine claims are paid.
func TestAttackForgedClaimsViaTopic(t *testing.T) {
	t.Parallel()
	addr := startBroker(t)
	dir := t.TempDir()
	c := makeCampaign(t, dir, "forge", []uint64{50, 50}, time.Now().Add(time.Hour))
	l := openLedger(t, dir)

	var values [][]byte
	var genuine int64
	for id := uint64(1); id <= 20; id++ {
		values = append(values, claimJSON(c.claim(id, id)))
		genuine += amountOf(id)
	}
	forged := func(id uint64, f func(*ticket.Claim)) []byte {
		cl := c.claim(id, 666)
		f(&cl)
		return claimJSON(cl)
	}
	otherGen := *c.manifest
	otherGen.Generation = ticket.NewGeneration()
	otherSigner, _ := otherGen.ClaimSigner(c.key)
	attacks := [][]byte{
		forged(30, func(cl *ticket.Claim) { cl.Sig = [ticket.ClaimSigSize]byte{}; cl.Amount = 97 }),      // unsigned, max amount
		forged(31, func(cl *ticket.Claim) { cl.Sig = [ticket.ClaimSigSize]byte{1, 2, 3} }),               // made-up signature
		forged(32, func(cl *ticket.Claim) { g := c.claim(32, 5); cl.Sig = g.Sig }),                       // genuine signature, other uid
		forged(33, func(cl *ticket.Claim) { cl.Amount = 97 }),                                            // signed, then amount raised
		forged(34, func(cl *ticket.Claim) { otherSigner.Sign(cl) }),                                      // another generation's key
		forged(60, func(cl *ticket.Claim) { cl.Sig = [ticket.ClaimSigSize]byte{}; cl.MAC = [12]byte{} }), // no MAC, no signature
	}
	values = append(values, attacks...)
	produce(t, addr, values...)

	r := startSettler(t, addr, c, l, nil)
	r.waitSeen(t, uint64(len(values)))
	reasons := readDLQ(t, addr, len(attacks))
	for _, re := range reasons {
		if re != ReasonSignature {
			t.Errorf("dead letter reason %q, want %q", re, ReasonSignature)
		}
	}
	if got := r.s.mDLQ[ReasonSignature].Value(); got != uint64(len(attacks)) {
		t.Errorf("shake_settler_dlq_total{reason=bad_signature} = %d, want %d", got, len(attacks))
	}
	st, err := l.Stats(context.Background(), "forge")
	if err != nil {
		t.Fatal(err)
	}
	if st.Tickets != 20 || st.SettledAmount != genuine {
		t.Fatalf("settled %d tickets / %d, want 20 / %d: a forged claim was paid", st.Tickets, st.SettledAmount, genuine)
	}
	rep, err := Reconcile(context.Background(), c.manifest, c.dir, l)
	if err != nil || !rep.OK {
		t.Fatalf("reconcile %+v %v", rep, err)
	}
}

// TestAttackConflictViaTopic: an edge handed ticket 5 out twice (a restored state file),
// so two verifiers signed claims for it, by two users. The old settler posted the first
// and counted the second as a silent duplicate. Now the second is dead-lettered
// "conflict", counted in shake_settler_conflicts_total and recorded in the ledger, and
// reconcile reports conflicting_claims with ok false. The first user's redelivered claim
// stays a silent duplicate.
func TestAttackConflictViaTopic(t *testing.T) {
	t.Parallel()
	addr := startBroker(t)
	dir := t.TempDir()
	c := makeCampaign(t, dir, "twice", []uint64{50}, time.Now().Add(time.Hour))
	l := openLedger(t, dir)
	produce(t, addr, claimJSON(c.claim(5, 1)))
	r := startSettler(t, addr, c, l, nil)
	r.waitSeen(t, 1)
	produce(t, addr, claimJSON(c.claim(5, 2)), claimJSON(c.claim(5, 1)), claimJSON(c.claim(6, 3)))
	r.waitSeen(t, 4)
	if got := readDLQ(t, addr, 1); got[0] != ReasonConflict {
		t.Fatalf("dead letter %v, want conflict", got)
	}
	if p, d, cf := r.s.mPosted.Value(), r.s.mDup.Value(), r.s.money.conflicts.Value(); p != 2 || d != 1 || cf != 1 {
		t.Fatalf("posted %d, duplicates %d, conflicts %d; want 2, 1, 1", p, d, cf)
	}
	rep, err := Reconcile(context.Background(), c.manifest, c.dir, l)
	if err != nil || rep.OK || rep.ConflictingClaims != 1 {
		t.Fatalf("reconcile %+v %v, want conflicting_claims 1 and ok false", rep, err)
	}
}

// lowFundLedger funds every campaign with budget instead of the manifest's: a ledger
// whose budget cannot cover what is claimed.
type lowFundLedger struct {
	ledger.Ledger
	budget int64
}

func (l *lowFundLedger) Fund(ctx context.Context, campaign, currency string, _ int64) error {
	return l.Ledger.Fund(ctx, campaign, currency, l.budget)
}

func (l *lowFundLedger) FundShards(ctx context.Context, campaign, currency string, _ []int64) error {
	return l.Ledger.Fund(ctx, campaign, currency, l.budget)
}

// TestOverBudgetNeverStallsOrGoesNegative: claims worth more than the budget account
// holds. The ledger refuses the batch; the settler must neither retry it forever nor
// pay beyond the budget: it posts claim by claim and dead-letters what does not fit.
func TestOverBudgetNeverStallsOrGoesNegative(t *testing.T) {
	t.Parallel()
	addr := startBroker(t)
	dir := t.TempDir()
	c := makeCampaign(t, dir, "broke", []uint64{50}, time.Now().Add(time.Hour))
	inner := openLedger(t, dir)
	const budget = 100
	l := &lowFundLedger{Ledger: inner, budget: budget}
	var values [][]byte
	var total int64
	for id := uint64(1); id <= 30; id++ {
		values = append(values, claimJSON(c.claim(id, id)))
		total += amountOf(id)
	}
	if total <= budget {
		t.Fatal("BUG: the claims fit the budget")
	}
	produce(t, addr, values...)
	r := startSettler(t, addr, c, l, nil)
	r.waitSeen(t, uint64(len(values)))
	st, err := inner.Stats(context.Background(), "broke")
	if err != nil {
		t.Fatal(err)
	}
	over := r.s.mDLQ[ReasonOverBudget].Value()
	if st.BudgetBalance < 0 || st.SettledAmount > budget || over == 0 || uint64(st.Tickets)+over != uint64(len(values)) ||
		r.s.money.overBudget.Value() != over {
		t.Fatalf("budget %d, settled %d tickets / %d, over_budget %d (metric %d)", st.BudgetBalance, st.Tickets,
			st.SettledAmount, over, r.s.money.overBudget.Value())
	}
	if reasons := readDLQ(t, addr, int(over)); reasons[0] != ReasonOverBudget {
		t.Fatalf("dead letters %v", reasons)
	}
}
