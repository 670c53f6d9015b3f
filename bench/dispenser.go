package bench

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/valyala/fasthttp"

	"shake/internal/obs"
	"shake/ticket"
)

// The baseline dispensers: what people build instead of shake. Each is an HTTP server on
// loopback answering POST /v1/shake exactly like an edge (session check, then a sealed,
// user-bound ticket), but it takes the ticket from a shared store on every request: a
// Redis list (LPOP) or a PostgreSQL table (UPDATE ... FOR UPDATE SKIP LOCKED).

// baselineCampaign is the campaign id the baseline tickets are minted for.
const baselineCampaign = "bench-baseline"

// baselineTTL is how long a baseline ticket token stays valid.
const baselineTTL = time.Hour

// storedTicketLen is a ticket as the baselines store it: id u64 | amount u32 | MAC(12),
// big endian.
const storedTicketLen = 8 + 4 + ticket.MACSize

// errNoTicket is what a store's take returns when its pool is empty.
var errNoTicket = errors.New("no ticket left")

// baselineAmount is the deterministic amount of baseline ticket id (1..1000 fen).
func baselineAmount(id uint64) uint32 { return uint32(1 + (id*7919)%1000) }

// encodeStored writes ticket id's stored form into b (storedTicketLen bytes).
func encodeStored(b []byte, mac *ticket.TicketMAC, id uint64) {
	amount := baselineAmount(id)
	binary.BigEndian.PutUint64(b, id)
	binary.BigEndian.PutUint32(b[8:], amount)
	m := mac.Sum(id, amount, 0)
	copy(b[12:], m[:])
}

// takeFunc takes one ticket for uid from the store; errNoTicket when empty.
type takeFunc func(ctx context.Context, uid uint64) (id uint64, amount uint32, mac [ticket.MACSize]byte, err error)

// dispenser serves /v1/shake from a store.
type dispenser struct {
	sk     *ticket.SessionKey
	sealer *ticket.Sealer
	take   takeFunc
}

var (
	bodyMiss       = []byte(`{"result":"miss"}`)
	bodyUnauth     = []byte(`{"error":"unauthorized"}`)
	bodyUnavailble = []byte(`{"error":"unavailable","retry_after_ms":100}`)
)

func (d *dispenser) handle(ctx *fasthttp.RequestCtx) {
	if string(ctx.Path()) != "/v1/shake" {
		obs.NotFound(ctx)
		return
	}
	if !ctx.IsPost() {
		obs.MethodNotAllowed(ctx, "POST")
		return
	}
	tok, ok := ticket.BearerToken(ctx.Request.Header.Peek("Authorization"))
	now := time.Now()
	var uid uint64
	var err error
	if ok {
		uid, err = d.sk.Verify(tok, now.Unix())
	}
	if !ok || err != nil {
		obs.WriteJSON(ctx, fasthttp.StatusUnauthorized, bodyUnauth)
		return
	}
	id, amount, mac, err := d.take(ctx, uid)
	if errors.Is(err, errNoTicket) {
		obs.WriteJSON(ctx, fasthttp.StatusOK, bodyMiss)
		return
	}
	if err != nil {
		obs.WriteJSON(ctx, fasthttp.StatusServiceUnavailable, bodyUnavailble)
		return
	}
	exp := now.Add(baselineTTL)
	t := ticket.TicketToken{Ticket: id, UID: uid, Amount: amount, MAC: mac,
		IssuedAt: uint32(now.Unix()), ExpiresAt: uint32(exp.Unix())}
	var buf [256]byte
	b := append(buf[:0], `{"result":"won","token":"`...)
	b = d.sealer.Seal(b, &t)
	b = append(b, `","campaign":"`+baselineCampaign+`","expires_at":"`...)
	b = exp.UTC().AppendFormat(b, time.RFC3339)
	b = append(b, `"}`...)
	obs.WriteJSON(ctx, fasthttp.StatusOK, b)
}

// startDispenser serves d on a loopback port until the returned stop is called.
func startDispenser(name string, d *dispenser) (url string, stop func(), err error) {
	srv, err := obs.Listen(obs.ServerConfig{Name: name, Listen: "127.0.0.1:0"}, d.handle)
	if err != nil {
		return "", nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { srv.Serve(ctx); close(done) }()
	return "http://" + srv.Addr(), func() { cancel(); <-done }, nil
}

// newBaselineKeys returns the session verifier, a sealer and a ticket MAC for a baseline.
func newBaselineKeys(sessionKey []byte) (*ticket.SessionKey, *ticket.Sealer, *ticket.TicketMAC, error) {
	sk, err := ticket.NewSessionKey(sessionKey)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("%w: session key: %v", ErrConfig, err)
	}
	ck, gen := ticket.NewKey(), ticket.NewGeneration()
	shardKey, err := ticket.ShardKey(ck, baselineCampaign, gen, 0)
	if err != nil {
		return nil, nil, nil, err
	}
	sealer, err := ticket.NewSealer(shardKey, 0)
	if err != nil {
		return nil, nil, nil, err
	}
	macKey, err := ticket.MACKey(ck, baselineCampaign, gen)
	if err != nil {
		return nil, nil, nil, err
	}
	mac, err := ticket.NewTicketMAC(macKey, baselineCampaign)
	if err != nil {
		return nil, nil, nil, err
	}
	return sk, sealer, mac, nil
}

func decodeStored(b []byte) (id uint64, amount uint32, mac [ticket.MACSize]byte, err error) {
	if len(b) != storedTicketLen {
		return 0, 0, mac, fmt.Errorf("stored ticket of %d bytes, want %d", len(b), storedTicketLen)
	}
	id = binary.BigEndian.Uint64(b)
	amount = binary.BigEndian.Uint32(b[8:])
	copy(mac[:], b[12:])
	if amount != baselineAmount(id) {
		return 0, 0, mac, fmt.Errorf("stored ticket %d has amount %d, want %d", id, amount, baselineAmount(id))
	}
	return id, amount, mac, nil
}
