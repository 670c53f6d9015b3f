package settler

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"shake/settler/ledger"
	"shake/ticket"
)

// Reasons a claim is sent to the dead-letter topic instead of the ledger.
const (
	ReasonMalformed     = "malformed"        // not a well-formed claim (ticket.ParseClaim failed)
	ReasonCampaign      = "wrong_campaign"   // another campaign than the manifest's
	ReasonSignature     = "bad_signature"    // no verifier signature, or one that does not verify
	ReasonUnknownTicket = "unknown_ticket"   // ticket id inside no shard of the manifest
	ReasonShard         = "wrong_shard"      // the claim names another shard than the one owning the ticket
	ReasonRound         = "wrong_round"      // the claim names another round than the ticket's
	ReasonCurrency      = "wrong_currency"   // another currency than the campaign's
	ReasonAmount        = "wrong_amount"     // amount outside [min, max] or not the ticket's amount
	ReasonMAC           = "bad_mac"          // ticket MAC missing or not the generator's
	ReasonIssueTime     = "wrong_issue_time" // issued_at outside the ticket's round window
	ReasonExpired       = "expired"          // opened_at after the ticket's expiry (or before its issue)
	ReasonConflict      = "conflict"         // the ticket is already posted to another uid
	ReasonOverBudget    = "over_budget"      // posting it would take the budget below zero
)

// Reasons lists every dead-letter reason (one metric series each).
var Reasons = []string{ReasonMalformed, ReasonCampaign, ReasonSignature, ReasonUnknownTicket, ReasonShard, ReasonRound,
	ReasonCurrency, ReasonAmount, ReasonMAC, ReasonIssueTime, ReasonExpired, ReasonConflict, ReasonOverBudget}

// Validator checks claims against the campaign's manifest: the settler's second check of
// what the verifier already checked, so that nothing the manifest disagrees with is paid.
// It trusts nothing in a claim before the verifier's signature over all of it verifies,
// and its dead-letter details name what the claim said, never what was expected, so a
// forger learns nothing from the dead-letter topic.
type Validator struct {
	m      *ticket.Manifest
	signer *ticket.ClaimSigner
	mac    *ticket.TicketMAC
	// amounts[id-1] is ticket id's amount, loaded from the shard files when they are
	// present: a third check of the amount, beside the ticket MAC and the signature.
	amounts []uint32
}

// ValidatorConfig configures a Validator.
type ValidatorConfig struct {
	// Manifest is the campaign, read with its signature verified (ticket.LoadManifestKey).
	Manifest *ticket.Manifest
	// CampaignKey is campaign.key; required: the verifier signature and the ticket MAC of
	// every claim are checked with keys derived from it.
	CampaignKey []byte
	// Amounts are the ticket amounts (LoadAmounts), or nil when the shard files are not
	// at hand (the MAC still pins every amount).
	Amounts []uint32
}

// ErrNoShards reports that the shard files are not next to the manifest.
var ErrNoShards = errors.New("shard files not found next to the manifest")

// ErrNoKey reports a validator asked for without campaign.key: it could not check a
// claim fully, so none is made.
var ErrNoKey = errors.New("campaign.key is required to check claims (verifier signature, ticket MAC)")

// NewValidator returns a validator for cfg.Manifest.
func NewValidator(cfg ValidatorConfig) (*Validator, error) {
	m := cfg.Manifest
	if m == nil {
		return nil, errors.New("BUG: validator without a manifest")
	}
	if cfg.CampaignKey == nil {
		return nil, ErrNoKey
	}
	v := &Validator{m: m}
	var err error
	if v.signer, err = m.ClaimSigner(cfg.CampaignKey); err != nil {
		return nil, err
	}
	if v.mac, err = m.TicketMAC(cfg.CampaignKey); err != nil {
		return nil, err
	}
	if cfg.Amounts != nil && uint64(len(cfg.Amounts)) != m.Count {
		return nil, fmt.Errorf("have %d ticket amounts for %d tickets", len(cfg.Amounts), m.Count)
	}
	v.amounts = cfg.Amounts
	return v, nil
}

// LoadAmounts reads every shard file named in the manifest (in the manifest's directory),
// one at a time, checks it against the manifest and returns all ticket amounts (4 bytes
// per ticket). It returns ErrNoShards when a file is missing.
func LoadAmounts(m *ticket.Manifest, dir string) ([]uint32, error) {
	for _, s := range m.Shards {
		if _, err := os.Stat(filepath.Join(dir, s.File)); err != nil {
			return nil, fmt.Errorf("%w: %s", ErrNoShards, filepath.Join(dir, s.File))
		}
	}
	amounts := make([]uint32, 0, m.Count)
	for i := range m.Shards {
		sh, err := ticket.LoadShard(filepath.Join(dir, m.Shards[i].File))
		if err != nil {
			return nil, err
		}
		if err := m.CheckHeader(&sh.Header); err != nil || sh.Header.Shard != i {
			return nil, fmt.Errorf("shard file %s: %w: header disagrees with the manifest", m.Shards[i].File, ticket.ErrCorrupt)
		}
		for j := range sh.Records {
			amounts = append(amounts, sh.Records[j].Amount)
		}
	}
	return amounts, nil
}

// Check parses raw and checks it against the manifest. On success reason is "" and p is
// the posting to make; otherwise reason is one of the Reason constants and detail says
// what in the claim is wrong (never the value the manifest expects).
func (v *Validator) Check(raw []byte) (p ledger.Posting, reason, detail string) {
	c, err := ticket.ParseClaim(raw)
	if err != nil {
		return p, ReasonMalformed, err.Error()
	}
	m := v.m
	// The campaign first: a claim of another campaign on a shared topic is not a forgery,
	// and rejecting it trusts nothing in it.
	if c.Campaign != m.Campaign {
		return p, ReasonCampaign, fmt.Sprintf("claim names campaign %q", c.Campaign)
	}
	if !c.HasSig() {
		return p, ReasonSignature, "claim carries no verifier signature"
	}
	if !v.signer.Verify(&c) {
		return p, ReasonSignature, "verifier signature does not verify over the claim's fields"
	}
	shard, ok := m.ShardOf(c.Ticket)
	if !ok {
		return p, ReasonUnknownTicket, fmt.Sprintf("ticket %d is in no shard of the campaign", c.Ticket)
	}
	if c.Shard != shard {
		return p, ReasonShard, fmt.Sprintf("ticket %d is not in the claim's shard %d", c.Ticket, c.Shard)
	}
	if r := m.RoundOf(shard, c.Ticket); c.Round != r {
		return p, ReasonRound, fmt.Sprintf("ticket %d is not in the claim's round %d", c.Ticket, c.Round)
	}
	if c.Currency != m.Currency {
		return p, ReasonCurrency, fmt.Sprintf("currency %s is not the campaign's", c.Currency)
	}
	if c.Amount < m.Min || c.Amount > m.Max || (v.amounts != nil && c.Amount != int64(v.amounts[c.Ticket-1])) {
		return p, ReasonAmount, fmt.Sprintf("amount %d is not ticket %d's amount", c.Amount, c.Ticket)
	}
	if !c.HasMAC() {
		return p, ReasonMAC, "claim carries no ticket MAC"
	}
	if !v.mac.Verify(c.Ticket, uint32(c.Amount), uint16(c.Round), c.MAC) {
		return p, ReasonMAC, fmt.Sprintf("ticket %d: MAC does not match the claim's id, amount and round", c.Ticket)
	}
	switch m.CheckTimes(c.Round, c.IssuedAt, c.OpenedAt) {
	case nil:
	case ticket.ErrIssuedOutsideRound:
		return p, ReasonIssueTime, fmt.Sprintf("issued_at %s is outside round %d's window", c.IssuedAt.UTC().Format(timeLayout), c.Round)
	default:
		return p, ReasonExpired, fmt.Sprintf("opened_at %s is after the ticket's expiry or before its issue at %s",
			c.OpenedAt.UTC().Format(timeLayout), c.IssuedAt.UTC().Format(timeLayout))
	}
	return ledger.Posting{Campaign: c.Campaign, Ticket: c.Ticket, Shard: c.Shard, Round: c.Round, Amount: c.Amount,
		Currency: c.Currency, UID: c.UID, OpenedAt: c.OpenedAt}, "", ""
}

// timeLayout formats claim times in dead-letter details as the wire carries them.
const timeLayout = "2006-01-02T15:04:05.000Z07:00"
