// Package edge is the shake access-layer server: it holds one shard of precomputed
// tickets in memory and hands them out, sealed to the user who shook, with no database
// and no call to any other service. See docs/api.md, "Edge".
//
// The hot path is: session check (HMAC, constant time) → round lookup → per-user cap
// (lock-free table) → take the next position of the round (CAS on a cursor that lives
// in the memory-mapped state file) → seal the token → append JSON into a stack buffer.
// The only disk write, reserving blocks of positions in the state file with fdatasync,
// runs ahead of the cursor in a background goroutine.
package edge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"shake/internal/control"
	"shake/internal/obs"
	"shake/ticket"
)

// Startup errors (besides the state file's ErrState*). The CLI prints them on one line
// and exits 2.
var (
	// ErrConfig reports an invalid Config value.
	ErrConfig = errors.New("bad edge configuration")
	// ErrShard reports a missing, unreadable or corrupt shard file.
	ErrShard = errors.New("cannot load shard")
	// ErrKey reports a shard key that is missing, malformed or not this shard's.
	ErrKey = errors.New("bad shard key")
	// ErrSessionKey reports a missing or malformed session key.
	ErrSessionKey = errors.New("bad session key")
	// ErrListen reports a listen address that cannot be bound.
	ErrListen = errors.New("cannot listen")
)

// PerUserFromShard as Config.PerUser takes the campaign's rule (per_user in the shard
// header) as the edge's limit.
const PerUserFromShard = -1

// Defaults for zero Config fields.
const (
	DefaultListen      = "127.0.0.1:8080"
	DefaultMaxInFlight = 4096
	DefaultRetryAfter  = time.Second
	DefaultReserveWait = time.Second
	// MaxBodySize bounds a request body; /v1/shake takes an empty one.
	MaxBodySize = 1 << 10
	// maxPerUserCapacity bounds the default per-user table (2 GiB of entries).
	maxPerUserCapacity = 1 << 28
	// maxRoundSeries is the most rounds that get their own tickets-left series.
	maxRoundSeries = 1024
)

// Config configures an edge.
type Config struct {
	Tickets    string // shard file (DIR/edge-NNN.tickets)
	Key        string // that shard's raw 32-byte AEAD key (DIR/edge-NNN.key)
	SessionKey string // the 32-byte session.key shared with the login system
	// MoreSessionKeys are further session.key files accepted during a key rotation
	// (--session-key given more than once); SessionKey mints nothing here, so order only
	// matters for the cost of checking a forged token.
	MoreSessionKeys []string
	State           string // state file; it must exist unless InitState
	// InitState creates State for the shard's very first start and refuses an existing
	// one (--init-state). Without it a missing State is refused: starting afresh on a
	// shard that was served before would hand its tickets out again.
	InitState bool
	Listen    string // host:port, default 127.0.0.1:8080 (port 0 picks one)
	// PerUser is the most wins per user per round on this edge; 0 means no limit and
	// PerUserFromShard the campaign's per_user from the shard header (the CLI default).
	PerUser int
	// PerDevice is the most wins per device per round on this edge (0: no rule;
	// PerDeviceFromShard: the campaign's per_device from the shard header).
	PerDevice int
	// Pace spreads each timed round's tickets evenly over its window.
	Pace bool
	// MaxInFlight bounds concurrent /v1/shake requests; above it the answer is an
	// immediate 429. Default DefaultMaxInFlight.
	MaxInFlight int
	// PerUserCapacity is the number of (user, round) entries of the per-user table,
	// PerUserEntryBytes each. Default: 1.25 x the shard's ticket count (at least 4096),
	// enough for every ticket to go to a different user at a load factor of 0.8.
	PerUserCapacity int
	// RetryAfter is the hint sent with 429 (default 1s; whole seconds in Retry-After).
	RetryAfter time.Duration
	// ReserveWait bounds how long a request waits when a burst outruns the state
	// reservation (default 1s); after it the answer is 429.
	ReserveWait time.Duration
	// ShutdownTimeout bounds the wait for in-flight requests on shutdown (default 10s).
	ShutdownTimeout time.Duration
	Logger          *slog.Logger     // nil discards
	Now             func() time.Time // nil means time.Now
	Registry        *obs.Registry    // nil makes a new one (served on /metrics)
	// HTTP is the admin listener, drain and connection limits, passed to obs.Listen.
	HTTP obs.Common
	// Switches are the --switches file and the admin key (see switches.go).
	Switches control.Options
}

// Server is a running edge.
type Server struct {
	cfg      Config
	hdr      ticket.ShardHeader
	records  []ticket.Record
	sealer   *ticket.Sealer
	sess     *ticket.SessionKey
	disp     *dispenser
	per      *perUser
	perDev   *perUser // wins per (device, round); nil: no device rule
	maxRisk  uint8    // sessions above this risk level are refused
	state    *stateFile
	srv      *obs.Server
	reg      *obs.Registry
	log      *slog.Logger
	now      func() time.Time
	realTime bool

	maxInFlight int64
	inflight    atomic.Int64
	retryBody   []byte
	retryAfter  []byte
	ttl         int64 // seconds
	expiresCap  int64 // unix seconds: no token outlives the campaign's issue end + ttl

	m       metrics
	sw      *control.Live[edgeSwitches] // the switches in force (switches.go)
	ctl     *control.Store
	swTable *perUser // the per-user table a per_user switch made on an edge without one
	// stopClock remembers when the paced release was stopped (pacestop.go).
	stopClock stopClock
	mShed     *obs.Counter
	runOnce   atomic.Bool
	closeOne  sync.Once
}

type metrics struct {
	won, miss, closed, retry, unauthorized, invalid, internal *obs.Counter
	latency                                                   *obs.Histogram
	perUserFull                                               *obs.Counter
	refusedUser, refusedDevice, refusedRisk                   *obs.Counter
}

var keyFileName = regexp.MustCompile(`^edge-(\d+)\.key$`)

// New loads and checks everything the edge needs and binds its listener, so that every
// startup failure is reported before the first request: the shard (ErrShard), the
// shard key (ErrKey: it must seal and open a probe token for this shard, and a key file
// named edge-NNN.key must name this shard), the session key (ErrSessionKey), the state
// file (ErrState, ErrStateCorrupt, ErrStateForeign, ErrStateLocked, ErrStateMissing,
// ErrStateExists) and the listen address (ErrListen).
func New(cfg Config) (*Server, error) {
	s, err := prepare(cfg)
	if err != nil {
		return nil, err
	}
	cfg = s.cfg
	t0 := time.Now()
	if err := s.loadShard(); err != nil {
		return nil, err
	}
	s.ttl = s.hdr.TTLSeconds
	loaded := time.Since(t0)

	st, err := openState(cfg.State, &s.hdr, cfg.InitState)
	if err != nil {
		return nil, err
	}
	s.state = st
	started := false
	defer func() {
		if !started && cfg.InitState {
			// This first start created the file and handed nothing out: take it back,
			// so that the same --init-state start succeeds once the problem is fixed.
			if err := os.Remove(cfg.State); err != nil {
				s.log.Warn("a failed first start could not remove the state file it created", "state", cfg.State, "err", err)
			}
		}
	}()
	s.disp = newDispenser(&s.hdr, st, cfg.Pace, cfg.ReserveWait, s.now, s.log)
	s.expiresCap = s.disp.issueUntil/1e9 + s.ttl
	if s.expiresCap > 1<<32-1 {
		st.close()
		return nil, fmt.Errorf("%w: %s: tickets would expire after 2106", ErrShard, cfg.Tickets)
	}
	if cfg.PerUser == PerUserFromShard {
		cfg.PerUser = s.hdr.PerUser
		if cfg.PerUser > MaxPerUser {
			// The table counts to MaxPerUser. A campaign that allows more wins per round
			// than that gets no limit here rather than a stricter one than it set: the
			// verifier enforces the rule on every open either way.
			s.log.Warn("the campaign's per_user is above what the edge's table counts: no per-user limit on this edge",
				"per_user", cfg.PerUser, "max", MaxPerUser)
			cfg.PerUser = 0
		}
		s.cfg.PerUser = cfg.PerUser
	}
	s.setupTables(cfg.PerUser)
	s.maxInFlight = int64(cfg.MaxInFlight)
	ms := max(cfg.RetryAfter.Milliseconds(), 1)
	s.retryBody = []byte(`{"result":"retry","retry_after_ms":` + strconv.FormatInt(ms, 10) + `}`)
	s.retryAfter = []byte(strconv.FormatInt(max((ms+999)/1000, 1), 10))
	s.registerMetrics()
	common, err := s.setupSwitches()
	if err != nil {
		st.close()
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}

	srv, err := obs.Listen(obs.ServerConfig{
		Name: "edge", Listen: cfg.Listen, MaxBodySize: MaxBodySize,
		ShutdownTimeout: cfg.ShutdownTimeout, Logger: cfg.Logger, Registry: s.reg,
		Ready: s.ready, Common: common,
	}, s.handle)
	if err != nil {
		s.ctl.Close()
		st.close()
		return nil, fmt.Errorf("%w: %w", ErrListen, err)
	}
	s.srv = srv
	started = true
	issued, lost, left := s.disp.totals()
	s.log.Info("shard loaded", "campaign", s.hdr.Campaign, "shard", s.hdr.Shard, "tickets", s.hdr.Count,
		"rounds", len(s.hdr.Rounds), "issued", issued, "lost", lost, "left", left,
		"load_ms", loaded.Milliseconds(), "per_user", cfg.PerUser, "pace", cfg.Pace, "state", cfg.State)
	return s, nil
}

// checkRecords is the edge's own check of the money invariant the generator made:
// every amount fits a ticket, and the records add up to the header's total.
func checkRecords(h *ticket.ShardHeader, recs []ticket.Record) error {
	if uint64(len(recs)) != h.Count {
		return fmt.Errorf("%d records for %d tickets", len(recs), h.Count)
	}
	var sum int64
	for i := range recs {
		a := recs[i].Amount
		if a > ticket.MaxTicketAmount {
			return fmt.Errorf("ticket %d amount %d above the maximum", h.FirstTicket+uint64(i), a)
		}
		sum += int64(a)
	}
	if sum != h.Amount {
		return fmt.Errorf("records sum to %d, header says %d", sum, h.Amount)
	}
	if len(h.Rounds) == 1 && h.Rounds[0].AlwaysOpen() && h.CreatedAt.IsZero() {
		// Without created_at an always-open shard has no end of issue, and a ticket
		// issued after the refund point could be both refunded and opened.
		return errors.New("always-open shard has no created_at: cannot bound issuance")
	}
	return nil
}

// loadKeys reads the shard and session keys and proves the shard key works for this
// shard by sealing and opening a probe token.
func (s *Server) loadKeys() error {
	key, err := ticket.ReadKeyFile(s.cfg.Key)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrKey, err)
	}
	if m := keyFileName.FindStringSubmatch(filepath.Base(s.cfg.Key)); m != nil {
		// The generator names each key after its shard; a mismatched pair would seal
		// every token under another shard's key and the verifier would reject them all.
		if n, err := strconv.Atoi(m[1]); err == nil && n != s.hdr.Shard {
			return fmt.Errorf("%w: %s is shard %d's key, %s is shard %d", ErrKey, s.cfg.Key, n, s.cfg.Tickets, s.hdr.Shard)
		}
	}
	if err := ticket.CheckShardKey(key, s.hdr.Campaign, s.hdr.Shard, s.hdr.KeyCheck); err != nil {
		return fmt.Errorf("%w: %s is not the key %s was generated with: %w", ErrKey, s.cfg.Key, s.cfg.Tickets, err)
	}
	if s.hdr.KeyCheck == "" {
		s.log.Warn("shard has no key check (made by an older generator): the key is only checked for form", "shard", s.cfg.Tickets)
	}
	for _, p := range append([]string{s.cfg.Key, s.cfg.SessionKey}, s.cfg.MoreSessionKeys...) {
		// A key other users can read lets any of them seal this shard's tickets or
		// forge sessions.
		if err := ticket.CheckKeyFileMode(p); errors.Is(err, ticket.ErrKeyExposed) {
			s.log.Warn("key file is readable by other users; chmod 600 it", "file", p, "err", err)
		}
	}
	sealer, err := ticket.NewSealer(key, s.hdr.Shard)
	if err != nil {
		return fmt.Errorf("%w: %s: %w", ErrKey, s.cfg.Key, err)
	}
	keys := make([][]byte, s.hdr.Shard+1)
	for i := range keys {
		keys[i] = key
	}
	opener, err := ticket.NewOpener(keys)
	if err != nil {
		return fmt.Errorf("%w: %s: %w", ErrKey, s.cfg.Key, err)
	}
	probe := ticket.TicketToken{Ticket: s.hdr.FirstTicket, UID: 1, Amount: 1, Round: 0, IssuedAt: 1, ExpiresAt: 2}
	tok := sealer.Seal(nil, &probe)
	var got ticket.TicketToken
	if err := opener.Open(&got, tok, make([]byte, ticket.TokenRawLen)); err != nil ||
		got.Shard != uint16(s.hdr.Shard) || got.Ticket != probe.Ticket || got.UID != probe.UID {
		return fmt.Errorf("%w: %s does not open a token it sealed for shard %d", ErrKey, s.cfg.Key, s.hdr.Shard)
	}
	s.sealer = sealer

	if s.sess, err = ticket.LoadSessionKeys(s.cfg.SessionKey, s.cfg.MoreSessionKeys); err != nil {
		return fmt.Errorf("%w: %w", ErrSessionKey, err)
	}
	return nil
}

func (s *Server) registerMetrics() {
	r := s.reg
	const shakes = "shake_edge_shakes_total"
	const help = "POST /v1/shake answers by result."
	s.m.won = r.Counter(shakes, help, "result", "won")
	s.m.miss = r.Counter(shakes, help, "result", "miss")
	s.m.closed = r.Counter(shakes, help, "result", "closed")
	s.m.retry = r.Counter(shakes, help, "result", "retry")
	s.m.unauthorized = r.Counter(shakes, help, "result", "unauthorized")
	s.m.invalid = r.Counter(shakes, help, "result", "invalid")
	s.m.internal = r.Counter(shakes, help, "result", "internal")
	s.registerDeviceMetrics()
	s.m.latency = r.Histogram("shake_edge_shake_duration_seconds", "Time to answer POST /v1/shake (authenticated requests).", obs.LatencyBuckets)
	d := s.disp
	r.GaugeFunc("shake_edge_shard_tickets", "Tickets in this edge's shard.", func() float64 { return float64(s.hdr.Count) })
	r.CounterFunc("shake_edge_tickets_issued_total", "Tickets handed out, over every run on this state file.", func() float64 { i, _, _ := d.totals(); return float64(i) })
	r.CounterFunc("shake_edge_tickets_lost_total", "Tickets reserved but never handed out before a crash, over every run; never reissued.", func() float64 { _, l, _ := d.totals(); return float64(l) })
	r.GaugeFunc("shake_edge_tickets_left", "Tickets that can still be handed out, all rounds.", func() float64 { _, _, l := d.totals(); return float64(l) })
	if len(d.rounds) <= maxRoundSeries {
		for _, rd := range d.rounds {
			rd := rd
			r.GaugeFunc("shake_edge_round_tickets_left", "Tickets that can still be handed out, by round.", func() float64 { return float64(rd.left()) }, "round", strconv.Itoa(rd.index))
		}
	}
	r.CounterFunc("shake_edge_reservations_total", "Reservations written and fsynced to the state file.", func() float64 { return float64(d.nres.Load()) })
	r.GaugeFunc("shake_edge_reservation_block_tickets", "Current reservation block size (adapts to the take rate).", func() float64 { return float64(d.block.Load()) })
	r.CounterFunc("shake_edge_reservation_waits_total", "Requests that waited because a burst outran the reservation.", func() float64 { return float64(d.nwaits.Load()) })
	r.CounterFunc("shake_edge_reservation_wait_timeouts_total", "Requests answered 429 because the reservation did not arrive in time.", func() float64 { return float64(d.nwaitFail.Load()) })
	sync := r.Histogram("shake_edge_state_sync_seconds", "Time to write and fdatasync one reservation.", obs.LatencyBuckets)
	d.syncHist = sync.ObserveDuration
	r.GaugeFunc("shake_edge_state_failed", "1 once the state file could not be written (the edge then stops issuing).", func() float64 {
		if d.failed.Load() {
			return 1
		}
		return 0
	})
	r.GaugeFunc("shake_edge_in_flight", "POST /v1/shake requests being handled.", func() float64 { return float64(s.inflight.Load()) })
	if s.per != nil {
		p := s.per
		r.GaugeFunc("shake_edge_per_user_entries", "Occupied (user, round) entries of the per-user table.", func() float64 { return float64(p.used.Load()) })
		r.GaugeFunc("shake_edge_per_user_capacity", "Entries of the per-user table.", func() float64 { return float64(len(p.slots)) })
		r.CounterFunc("shake_edge_per_user_full_total", "Shakes answered miss because the per-user table had no room.", func() float64 { return float64(p.full.Load()) })
	}
}

func (s *Server) ready() bool { return !s.disp.failed.Load() && !s.disp.stopping.Load() }

// Addr returns the bound listen address.
func (s *Server) Addr() string { return s.srv.Addr() }

// Handler returns the /v1/shake handler (without the /healthz, /readyz and /metrics
// wrapper), for in-process tests and benchmarks. It needs the reserver running: use
// Start when not calling Run.
func (s *Server) Handler() fasthttp.RequestHandler { return s.handle }

// Start starts the reserver without serving HTTP, for driving Handler in-process. The
// returned stop does what Run does after its listener closes: stop issuing, wait for
// in-flight requests, write the final state and release the state file and listener.
func (s *Server) Start() (stop func() error, err error) {
	if !s.runOnce.CompareAndSwap(false, true) {
		return nil, errors.New("edge: already started")
	}
	stopReserver, err := s.startReserver()
	if err != nil {
		s.srv.Close()
		s.close()
		return nil, err
	}
	return func() error {
		s.srv.Close()
		return s.shutdown(stopReserver)
	}, nil
}

// Run starts the reserver, serves until ctx is cancelled, then stops in order: stop
// accepting, finish in-flight requests, record the exact position of every round in
// the state file (so a clean stop loses no ticket), fsync, release the file.
func (s *Server) Run(ctx context.Context) error {
	if !s.runOnce.CompareAndSwap(false, true) {
		return errors.New("edge: Run called twice")
	}
	stopReserver, err := s.startReserver()
	if err != nil {
		s.srv.Close()
		s.close()
		return err
	}
	s.log.Info("edge ready", "addr", s.Addr())
	serveErr := s.srv.Serve(ctx)
	err = s.shutdown(stopReserver)
	return errors.Join(serveErr, err)
}

// startReserver reserves the first block of the open round and starts the reserver.
func (s *Server) startReserver() (stop func(), err error) {
	if err := s.disp.reserveAhead(s.now().UnixNano()); err != nil {
		return nil, err
	}
	rctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.disp.run(rctx, s.now)
	}()
	return func() { cancel(); <-done }, nil
}

// shutdown stops issuing, waits for the handlers still inside, stops the reserver and
// writes the final state.
func (s *Server) shutdown(stopReserver func()) error {
	s.disp.stopping.Store(true)
	s.disp.wakeAll()
	deadline := time.Now().Add(s.cfg.ShutdownTimeout)
	for s.inflight.Load() != 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	stopReserver()
	var err error
	if n := s.inflight.Load(); n != 0 {
		// A handler still inside may yet take a position: keep the reservation as it
		// is (those tickets count as lost on the next start) rather than risk it.
		// Nor close the state: unmapping the cursors under a handler that still reads
		// them would turn a clean stop into a crash. The process exits next and the
		// kernel releases the mapping and the lock.
		return fmt.Errorf("edge: %d requests still in flight at shutdown; state left at its last reservation", n)
	} else if ferr := s.disp.finish(); ferr != nil {
		err = ferr
	} else {
		issued, lost, left := s.disp.totals()
		s.log.Info("state synced", "issued", issued, "lost", lost, "left", left)
	}
	if cerr := s.close(); err == nil {
		err = cerr
	}
	return err
}

func (s *Server) close() error {
	var err error
	s.closeOne.Do(func() { s.ctl.Close(); err = s.state.close() })
	return err
}

// Close releases a server that was built but will not Run: its listener and state file.
func (s *Server) Close() error {
	if s.runOnce.Load() {
		return nil
	}
	s.srv.Close()
	return s.close()
}

// prepare checks cfg, applies its defaults and returns the server to load into.
func prepare(cfg Config) (*Server, error) {
	if cfg.Tickets == "" || cfg.Key == "" || cfg.SessionKey == "" || cfg.State == "" {
		return nil, fmt.Errorf("%w: tickets, key, session key and state are required", ErrConfig)
	}
	if cfg.PerUser < PerUserFromShard || cfg.PerUser > MaxPerUser || cfg.PerDevice < PerDeviceFromShard || cfg.PerDevice > MaxPerUser {
		return nil, fmt.Errorf("%w: per-user limit %d or per-device limit %d outside 0..%d", ErrConfig, cfg.PerUser, cfg.PerDevice, MaxPerUser)
	}
	if cfg.PerUserCapacity > 1<<31 {
		return nil, fmt.Errorf("%w: per-user capacity %d above %d", ErrConfig, cfg.PerUserCapacity, 1<<31)
	}
	if cfg.MaxInFlight < 0 || cfg.PerUserCapacity < 0 || cfg.RetryAfter < 0 || cfg.ReserveWait < 0 {
		return nil, fmt.Errorf("%w: negative limit", ErrConfig)
	}
	if cfg.Listen == "" {
		cfg.Listen = DefaultListen
	}
	if cfg.MaxInFlight == 0 {
		cfg.MaxInFlight = DefaultMaxInFlight
	}
	if cfg.RetryAfter == 0 {
		cfg.RetryAfter = DefaultRetryAfter
	}
	if cfg.ReserveWait == 0 {
		cfg.ReserveWait = DefaultReserveWait
	}
	if cfg.ShutdownTimeout == 0 {
		cfg.ShutdownTimeout = obs.DefaultShutdownTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{cfg: cfg, log: cfg.Logger.With("role", "edge"), now: cfg.Now, realTime: cfg.Now == nil}
	if s.now == nil {
		s.now = time.Now
	}
	s.reg = cfg.Registry
	if s.reg == nil {
		s.reg = obs.NewRegistry()
	}

	return s, nil
}

// loadShard loads the shard (its checksum, header and records: ErrShard) and the keys
// (loadKeys).
func (s *Server) loadShard() error {
	sh, err := ticket.LoadShard(s.cfg.Tickets)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrShard, err)
	}
	s.hdr, s.records = sh.Header, sh.Records
	if err := checkRecords(&s.hdr, s.records); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrShard, s.cfg.Tickets, err)
	}
	return s.loadKeys()
}

// Check is New for --dry-run: it runs the same loading and checks (the config, the
// shard, both keys, and the state file read-only: inspectState), binds nothing and
// writes nothing, and returns one line per check. The caller checks the switches file
// and the listen addresses.
func Check(cfg Config) ([]string, error) {
	s, err := prepare(cfg)
	if err != nil {
		return nil, err
	}
	if err := s.loadShard(); err != nil {
		return nil, err
	}
	h := &s.hdr
	var lines []string
	lines = append(lines,
		fmt.Sprintf("shard %s: campaign %s shard %d of %d, tickets %d..%d, amount %d, %d round(s), per_user %d, checksum and header valid",
			s.cfg.Tickets, h.Campaign, h.Shard, h.Shards, h.FirstTicket, h.FirstTicket+h.Count-1, h.Amount, len(h.RoundRanges), h.PerUser),
		fmt.Sprintf("key %s seals and opens this shard's tokens", s.cfg.Key),
		fmt.Sprintf("session key %s", s.cfg.SessionKey))
	st, err := inspectState(s.cfg.State, h, s.cfg.InitState)
	if err != nil {
		return lines, err
	}
	lines = append(lines, "state "+st)
	return lines, nil
}
