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
	ReasonMalformed     = "malformed"      // not a well-formed claim (ticket.ParseClaim failed)
	ReasonCampaign      = "wrong_campaign" // another campaign than the manifest's
	ReasonUnknownTicket = "unknown_ticket" // ticket id inside no shard of the manifest
	ReasonShard         = "wrong_shard"    // the claim names another shard than the one owning the ticket
	ReasonRound         = "wrong_round"    // the claim names another round than the ticket's
	ReasonCurrency      = "wrong_currency" // another currency than the campaign's
	ReasonAmount        = "wrong_amount"   // amount outside [min, max] or not the ticket's amount
	ReasonMAC           = "bad_mac"        // ticket MAC missing or not the generator's (with --key)
)

// Reasons lists every dead-letter reason (one metric series each).
var Reasons = []string{ReasonMalformed, ReasonCampaign, ReasonUnknownTicket, ReasonShard, ReasonRound,
	ReasonCurrency, ReasonAmount, ReasonMAC}

// Validator checks claims against the campaign's manifest: the settler's second check of
// what the verifier already checked, so that nothing the manifest disagrees with is paid.
type Validator struct {
	m   *ticket.Manifest
	mac *ticket.TicketMAC // nil without --key
	// amounts[id-1] is ticket id's amount, loaded from the shard files when they are
	// present, so that even without the MAC key a wrong amount is caught exactly.
	amounts []uint32
}

// ErrNoShards reports that the shard files are not next to the manifest.
var ErrNoShards = errors.New("shard files not found next to the manifest")

// NewValidator returns a validator for m. macKey (derived with ticket.MACKey) may be nil;
// amounts (see LoadAmounts) may be nil.
func NewValidator(m *ticket.Manifest, macKey []byte, amounts []uint32) (*Validator, error) {
	v := &Validator{m: m}
	if macKey != nil {
		tm, err := ticket.NewTicketMAC(macKey, m.Campaign)
		if err != nil {
			return nil, err
		}
		v.mac = tm
	}
	if amounts != nil && uint64(len(amounts)) != m.Count {
		return nil, fmt.Errorf("have %d ticket amounts for %d tickets", len(amounts), m.Count)
	}
	v.amounts = amounts
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
// the posting to make; otherwise reason is one of the Reason constants and detail says why.
func (v *Validator) Check(raw []byte) (p ledger.Posting, reason, detail string) {
	c, err := ticket.ParseClaim(raw)
	if err != nil {
		return p, ReasonMalformed, err.Error()
	}
	m := v.m
	if c.Campaign != m.Campaign {
		return p, ReasonCampaign, fmt.Sprintf("campaign %q, manifest is %q", c.Campaign, m.Campaign)
	}
	shard, ok := m.ShardOf(c.Ticket)
	if !ok {
		return p, ReasonUnknownTicket, fmt.Sprintf("ticket %d is in no shard (campaign has %d)", c.Ticket, m.Count)
	}
	if c.Shard != shard {
		return p, ReasonShard, fmt.Sprintf("ticket %d belongs to shard %d, claim says %d", c.Ticket, shard, c.Shard)
	}
	if r := m.RoundOf(shard, c.Ticket); c.Round != r {
		return p, ReasonRound, fmt.Sprintf("ticket %d is in round %d, claim says %d", c.Ticket, r, c.Round)
	}
	if c.Currency != m.Currency {
		return p, ReasonCurrency, fmt.Sprintf("currency %s, campaign pays %s", c.Currency, m.Currency)
	}
	if c.Amount < m.Min || c.Amount > m.Max {
		return p, ReasonAmount, fmt.Sprintf("amount %d outside [%d, %d]", c.Amount, m.Min, m.Max)
	}
	if v.amounts != nil {
		if want := int64(v.amounts[c.Ticket-1]); c.Amount != want {
			return p, ReasonAmount, fmt.Sprintf("ticket %d is worth %d, claim says %d", c.Ticket, want, c.Amount)
		}
	}
	if v.mac != nil {
		if !c.HasMAC() {
			return p, ReasonMAC, "claim carries no ticket MAC"
		}
		if !v.mac.Verify(c.Ticket, uint32(c.Amount), uint16(c.Round), c.MAC) {
			return p, ReasonMAC, fmt.Sprintf("ticket %d: MAC does not match (id, amount, round)", c.Ticket)
		}
	}
	return ledger.Posting{Campaign: c.Campaign, Ticket: c.Ticket, Shard: c.Shard, Round: c.Round, Amount: c.Amount,
		Currency: c.Currency, UID: c.UID, OpenedAt: c.OpenedAt}, "", ""
}
