// Package verifier is the server behind POST /v1/open: it opens a user's sealed ticket
// by local computation alone (session, AEAD, uid binding, the generator's ticket MAC,
// the shard's id range, the round's time window, expiry), remembers every opened ticket
// so that a retry gets the same answer, holds each of its users to the campaign's
// per_user rule, and answers 200 only once the signed claim is durable: acknowledged by
// every in-sync Kafka replica or, while Kafka is unreachable, fsynced to a local spool
// that is replayed to Kafka later. At start it rebuilds what it knows from the claims
// topic and the spool (see rebuild.go) before it is ready.
package verifier

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"shake/internal/control"
	ikafka "shake/internal/kafka"
	"shake/internal/obs"
	"shake/ticket"
)

// Config configures New. Zero values take the defaults noted.
type Config struct {
	Manifest        string   // path of manifest.json
	Key             string   // path of campaign.key
	SessionKey      string   // path of session.key
	MoreSessionKeys []string // more session.key paths accepted in a key rotation
	Brokers         []string // Kafka bootstrap host:port list
	Topic           string   // claims topic, default shake.claims
	Spool           string   // spool directory
	Listen          string   // default 127.0.0.1:8081
	// UIDShard is this verifier's share of the users (--uid-shard I/V, default 0/1):
	// other users' opens are 421 misdirected.
	UIDShard UIDShard

	// Kafka is the TLS and SASL of every Kafka connection (nil: plain text).
	Kafka *ikafka.Security

	SpoolMaxBytes int64 // default 1 GiB: beyond it opens get 503 while Kafka is down
	SegmentBytes  int64 // spool segment size, default 64 MiB
	QueueSize     int   // claims waiting for a writer, default 16384: beyond it 503
	BatchMax      int   // claims per durable batch, default 1024
	Producers     int   // writer goroutines, default 4
	// BatchTimeout is kafka-go's linger per partition batch, default 1 ms.
	BatchTimeout time.Duration
	// KafkaTimeout bounds one Kafka write before the batch is spooled, default 2 s.
	KafkaTimeout time.Duration
	// DownFor is how long the live path spools without trying Kafka after a failed
	// write (the replayer probes meanwhile), default 5 s.
	DownFor time.Duration
	// RetryAfter is the retry_after_ms of a 503, default 1 s.
	RetryAfter time.Duration

	ReadTimeout, WriteTimeout, IdleTimeout, ShutdownTimeout time.Duration
	Concurrency                                             int

	Logger   *slog.Logger
	Registry *obs.Registry
	// Now is the clock, default time.Now (tests move it).
	Now func() time.Time
	// HTTP is the admin listener, drain and connection limits, passed to obs.Listen.
	HTTP obs.Common
	// Switches are the --switches file and the admin key (see switches.go).
	Switches    control.Options
	TopicPolicy *ikafka.Policy // checked before any claim goes to the topic (readiness.go); nil: never
}

// Server is a verifier bound to its listen address.
type Server struct {
	cfg      Config
	man      *ticket.Manifest
	campaign string
	currency string
	opener   *ticket.Opener
	mac      *ticket.TicketMAC
	sess     *ticket.SessionKey
	table    *claimTable
	sp       *spool
	dur      *durable
	srv      *obs.Server
	log      *slog.Logger
	now      func() time.Time
	inWait   time.Duration

	// users counts opened tickets per (uid, round) for the per_user rule; nil when the
	// campaign has no limit.
	users *userTable
	// doubt holds the opens whose durable write failed (doubtKey): the write may still
	// land (a Kafka produce that timed out can be committed once the link heals), so the
	// user's count stays taken for that ticket, and the same token's retry reuses it.
	// A restart forgets it: the rebuild counts what the topic holds.
	doubt  sync.Map
	doubts atomic.Int64 // entries in doubt: the hot path looks there only when > 0 (no boxing)
	// ttl and expiresAt (unix seconds) bound a token's expires_at; skew is
	// ticket.ClockSkew in seconds.
	ttl         int64
	expiresAt   int64
	skew        int64
	signer      *ticket.ClaimSigner // signs every claim: the settler pays no unsigned claim
	misdirected []byte
	rb          rebuildState
	started     time.Time

	opens     [numResults]*obs.Counter
	mOpenTime *obs.Histogram
	sw        *control.Live[verifierSwitches] // the switches in force (switches.go)
	ctl       *control.Store
	topicGate
}

// result is the outcome of one request; it picks the status, the body and the metric.
type result uint8

const (
	resOpened result = iota
	resRepeat
	resUnauthorized
	resBadRequest
	resTooLarge
	resInvalid
	resNotYours
	resExpired
	resAlreadyOpened
	resUnavailable
	resNotFound
	resMethod
	resLimit
	resMisdirected
	resRebuilding
	resRevoked
	numResults
)

var resultNames = [numResults]string{"opened", "repeat", "unauthorized", "bad_request", "too_large",
	"invalid_token", "not_your_ticket", "expired", "already_opened", "unavailable", "not_found", "method_not_allowed",
	"limit_reached", "misdirected", "rebuilding", "revoked"}

var resultStatus = [numResults]int{200, 200, 401, 400, 413, 422, 403, 410, 409, 503, 404, 405, 409, 421, 503, 422}

// New loads the manifest and keys, opens the spool (replaying what it holds at start and
// restoring the opened tickets it holds), starts the Kafka writers, binds the listen
// address and starts the rebuild from the claims topic; /readyz is ready and opens are
// served once that is done. Call Run to serve, or Close to release everything without
// serving.
func New(cfg Config) (*Server, error) {
	s, err := prepare(cfg)
	if err != nil {
		return nil, err
	}
	cfg = s.cfg
	reg := cfg.Registry
	s.registerRebuildMetrics(reg)

	// Restore what the spool still holds (claims of this campaign only; anything else
	// is replayed but not remembered). The topic follows in the background.
	s.sp, err = openSpool(cfg.Spool, cfg.SpoolMaxBytes, cfg.SegmentBytes, func(_, v []byte) { s.rb.add(s.restoreValue(v)) })
	if err != nil {
		return nil, err
	}
	for i := range s.opens {
		s.opens[i] = reg.Counter("shake_verifier_opens_total", "Open requests by result.", "result", resultNames[i])
	}
	s.mOpenTime = reg.Histogram("shake_verifier_open_seconds", "Latency of POST /v1/open, durable write included.", obs.LatencyBuckets)
	s.inWait = 2*cfg.KafkaTimeout + time.Second
	s.newGate(reg)
	s.dur = newDurable(durableConfig{
		Brokers: cfg.Brokers, Topic: cfg.Topic, QueueSize: cfg.QueueSize, BatchMax: cfg.BatchMax,
		Producers: cfg.Producers, BatchTimeout: cfg.BatchTimeout, KafkaTimeout: cfg.KafkaTimeout,
		DownFor: cfg.DownFor, ReplayBackoff: 100 * time.Millisecond, Kafka: cfg.Kafka, TopicOpen: s.topicOpen,
	}, s.sp, reg, cfg.Logger)
	common, err := s.setupSwitches()
	if err != nil {
		s.dur.close()
		return nil, err
	}
	s.srv, err = obs.Listen(obs.ServerConfig{
		Name: "verifier", Listen: cfg.Listen, MaxBodySize: MaxBodySize,
		ReadTimeout: cfg.ReadTimeout, WriteTimeout: cfg.WriteTimeout, IdleTimeout: cfg.IdleTimeout,
		Concurrency: cfg.Concurrency, ShutdownTimeout: cfg.ShutdownTimeout,
		Logger: cfg.Logger, Registry: reg, NotReady: s.notReady, Common: common,
	}, s.handle)
	if err != nil {
		s.ctl.Close()
		s.dur.close()
		return nil, err
	}
	man := s.man
	s.log.Info("verifier started; rebuilding from the claims topic", "campaign", man.Campaign,
		"shards", len(man.Shards), "tickets", man.Count, "uid_shard", cfg.UIDShard.String(),
		"per_user", man.PerUser, "claim_table_bytes", 4*man.Count, "user_table_bytes", s.users.bytes(),
		"restored_from_spool", s.rb.restored(), "spool_pending", s.sp.pendingRecs.Load(),
		"brokers", cfg.Brokers, "topic", cfg.Topic)
	s.startRebuild()
	return s, nil
}

// ownUID reports whether uid is of this verifier's uid shard.
func (s *Server) ownUID(uid uint64) bool { return s.cfg.UIDShard.owns(uid) }

func setDefault(v *int, d int) {
	if *v <= 0 {
		*v = d
	}
}

func setDefaultD(v *time.Duration, d time.Duration) {
	if *v <= 0 {
		*v = d
	}
}

// Addr returns the bound host:port.
func (s *Server) Addr() string { return s.srv.Addr() }

// Handler returns the request handler for /v1/open (the health, readiness and metrics
// endpoints are added by Run's server).
func (s *Server) Handler() fasthttp.RequestHandler { return s.handle }

// Run serves until ctx is cancelled, then stops accepting, finishes in-flight requests,
// flushes or spools every queued claim and closes the spool.
func (s *Server) Run(ctx context.Context) error {
	err := s.srv.Serve(ctx)
	s.ctl.Close()
	s.stopBackground()
	if cerr := s.dur.close(); err == nil {
		err = cerr
	}
	return err
}

// Close releases a server that was never Run (tests): it flushes and closes like Run.
func (s *Server) Close() error {
	s.srv.Close()
	s.ctl.Close()
	s.stopBackground()
	return s.dur.close()
}

// handle serves POST /v1/open.
func (s *Server) handle(ctx *fasthttp.RequestCtx) {
	if string(ctx.Path()) != "/v1/open" {
		s.opens[resNotFound].Inc()
		obs.NotFound(ctx)
		return
	}
	if !ctx.IsPost() {
		s.opens[resMethod].Inc()
		obs.MethodNotAllowed(ctx, "POST")
		return
	}
	// Every answer from here on is given under one version of the switches.
	sw, epoch := s.sw.Enter()
	defer s.sw.Exit(epoch)
	if sw.openPaused {
		s.pausedOpen(ctx, sw)
		return
	}
	start := time.Now()
	o := getOp()
	r := s.open(o, ctx.Request.Header.Peek(fasthttp.HeaderAuthorization), ctx.PostBody())
	s.opens[r].Inc()
	switch r {
	case resOpened, resRepeat:
		obs.WriteJSON(ctx, fasthttp.StatusOK, o.resp)
	case resMisdirected:
		obs.WriteJSON(ctx, fasthttp.StatusMisdirectedRequest, s.misdirected)
	case resUnavailable, resRebuilding:
		o.resp = append(o.resp[:0], `{"error":"unavailable","retry_after_ms":`...)
		o.resp = strconv.AppendInt(o.resp, s.cfg.RetryAfter.Milliseconds(), 10)
		o.resp = append(o.resp, '}')
		secs := (s.cfg.RetryAfter + time.Second - 1) / time.Second
		ctx.Response.Header.Set(fasthttp.HeaderRetryAfter, strconv.Itoa(int(secs)))
		obs.WriteJSON(ctx, fasthttp.StatusServiceUnavailable, o.resp)
	default:
		obs.WriteError(ctx, resultStatus[r], resultNames[r])
	}
	putOp(o)
	s.mOpenTime.ObserveDuration(time.Since(start))
}

// open runs every check, then claims the ticket and makes the claim durable. On
// resOpened and resRepeat, o.resp holds the 200 body.
func (s *Server) open(o *op, auth, body []byte) result {
	if !s.rb.done.Load() {
		// Until the rebuild is done this verifier does not know what it answered before.
		return resRebuilding
	}
	now := s.now()
	st, ok := ticket.BearerToken(auth)
	if !ok {
		return resUnauthorized
	}
	uid, err := s.sess.Verify(st, now.Unix())
	if err != nil {
		return resUnauthorized
	}
	if !s.ownUID(uid) {
		return resMisdirected
	}
	if r := s.verify(o, body, uid, now.Unix()); r != resOpened {
		return r
	}
	if s.revoked(int(o.tok.Shard)) {
		return resRevoked
	}
	t := &o.tok
	shard := int(t.Shard)
	fp := s.table.fingerprint(uid)
	deadline := time.Time{}
	for {
		switch s.table.claim(shard, t.Ticket, fp) {
		case claimOther:
			return resAlreadyOpened
		case claimDurable:
			s.appendOpened(o)
			return resRepeat
		case claimInFlight:
			// The same user's first open is still being written (a client retry after a
			// timeout): wait for its outcome rather than answer before it is durable.
			if deadline.IsZero() {
				deadline = time.Now().Add(s.inWait)
			} else if time.Now().After(deadline) {
				return resUnavailable
			}
			time.Sleep(time.Millisecond)
			continue
		}
		break
	}
	if int64(t.ExpiresAt) <= now.Unix() {
		// The earlier open this expired token was let through for failed meanwhile and
		// freed the ticket: an expired token never starts a new claim.
		s.table.release(shard, t.Ticket)
		return resExpired
	}
	// The per-user rule, after the repeat check (a counted ticket opened again is the
	// same 200 above) and reserved before the durable write, under the stripe's lock:
	// two concurrent opens of one user cannot both pass it.
	if s.users != nil {
		retry := false
		if s.doubts.Load() > 0 {
			if _, retry = s.doubt.LoadAndDelete(doubtKey{uid, shard, t.Ticket}); retry {
				s.doubts.Add(-1)
			}
		}
		if !retry && !s.users.reserve(uid, t.Round) {
			s.table.release(shard, t.Ticket)
			return resLimit
		}
	}
	// We own the ticket: build the signed claim and make it durable.
	s.makeClaim(o, uid, now)
	if err := s.dur.submit(o); err != nil {
		s.unclaim(uid, t)
		return resUnavailable
	}
	if err := <-o.done; err != nil {
		s.unclaim(uid, t)
		return resUnavailable
	}
	s.table.markDurable(shard, t.Ticket, fp)
	s.appendOpened(o)
	return resOpened
}

// makeClaim writes the signed claim for o.tok opened by uid at now into o.key and
// o.value. It allocates nothing.
func (s *Server) makeClaim(o *op, uid uint64, now time.Time) {
	t := &o.tok
	c := ticket.Claim{
		Campaign: s.campaign, Ticket: t.Ticket, Shard: int(t.Shard), Round: int(t.Round),
		Amount: int64(t.Amount), Currency: s.currency, UID: uid,
		IssuedAt: time.Unix(int64(t.IssuedAt), 0), OpenedAt: now.Truncate(time.Millisecond), MAC: t.MAC,
	}
	// The signature covers every field as the wire carries it (milliseconds), so it is
	// made last; the settler posts no claim without it.
	s.signer.Sign(&c)
	o.key = c.AppendKey(o.key[:0])
	o.value = c.AppendJSON(o.value[:0])
}

// doubtKey names an open whose durable write failed: uid, shard, ticket.
type doubtKey struct {
	uid    uint64
	shard  int
	ticket uint64
}

// unclaim frees the ticket after a failed write, so that the user's retry can claim it
// again, but keeps the user's count for it (see doubt): the write may still land, and
// then a second ticket would break the per_user rule.
func (s *Server) unclaim(uid uint64, t *ticket.TicketToken) {
	s.table.release(int(t.Shard), t.Ticket)
	if s.users != nil {
		if _, had := s.doubt.LoadOrStore(doubtKey{uid, int(t.Shard), t.Ticket}, struct{}{}); !had {
			s.doubts.Add(1)
		}
	}
}

// verify is the local verification chain: body, AEAD open, uid binding, expiry, ticket
// MAC, shard range, round and amount bounds. It returns resOpened when all pass, with
// the token in o.tok. It allocates nothing.
func (s *Server) verify(o *op, body []byte, uid uint64, now int64) result {
	if len(body) > MaxBodySize {
		return resTooLarge
	}
	tok, ok := parseOpenBody(body)
	if !ok {
		return resBadRequest
	}
	t := &o.tok
	if s.opener.Open(t, tok, o.scratch[:]) != nil {
		return resInvalid
	}
	if t.UID != uid {
		return resNotYours
	}
	if !s.mac.Verify(t.Ticket, t.Amount, t.Round, t.MAC) {
		return resInvalid
	}
	// A shard key can only seal its own shard's tickets: this is what keeps a stolen
	// edge from handing out another shard's tickets.
	shard := int(t.Shard)
	if !s.man.InShard(shard, t.Ticket) || s.man.RoundOf(shard, t.Ticket) != int(t.Round) {
		return resInvalid
	}
	// Second check of the generator's amount invariant, at the point of use.
	if a := int64(t.Amount); a < s.man.Min || a > s.man.Max || a > ticket.MaxTicketAmount {
		return resInvalid
	}
	// The time window. An edge seals a token only while its round is open (for a
	// campaign without rounds, from created_at to issue_until), stamps it with its clock
	// and makes it expire at min(issued_at + ttl, expires_at). A token issued outside
	// its round or in the future, or expiring later than that, was not sealed by an
	// edge that follows the manifest (a stolen edge key minting for a round of 2030, or
	// tokens that expire in 2099): 422. The same check as the settler's (CheckTimes,
	// with ticket.ClockSkew of slack); opening after the expiry is the 410 below.
	iss, exp := int64(t.IssuedAt), int64(t.ExpiresAt)
	if iss > now+s.skew || exp > iss+s.ttl || exp > s.expiresAt {
		return resInvalid
	}
	expired := exp <= now
	switch s.man.CheckTimesMilli(int(t.Round), iss*1000, now*1000) {
	case nil:
	case ticket.ErrOpenedAfterExpiry:
		expired = true
	default:
		return resInvalid
	}
	// Expiry last, once the slot is known to be valid: a user retrying an open that
	// already succeeded (its answer lost in a timeout) gets the same 200 even after the
	// token expired, as docs/api.md promises; open() never starts a new claim for it.
	if expired && !s.table.heldBy(shard, t.Ticket, s.table.fingerprint(uid)) {
		return resExpired
	}
	return resOpened
}

// appendOpened writes the 200 body for o.tok into o.resp.
func (s *Server) appendOpened(o *op) {
	b := append(o.resp[:0], `{"result":"opened","campaign":"`...)
	b = append(b, s.campaign...)
	b = append(b, `","ticket":"`...)
	b = strconv.AppendUint(b, o.tok.Ticket, 10)
	b = append(b, `","amount":`...)
	b = strconv.AppendUint(b, uint64(o.tok.Amount), 10)
	b = append(b, `,"currency":"`...)
	b = append(b, s.currency...)
	b = append(b, `"}`...)
	o.resp = b
}

// prepare checks cfg, applies its defaults, and loads and proves the keys and the
// manifest: everything New does before it touches the spool, Kafka or a socket.
func prepare(cfg Config) (*Server, error) {
	started := time.Now()
	if cfg.Topic == "" {
		cfg.Topic = ikafka.ClaimsTopic
	}
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:8081"
	}
	if len(cfg.Brokers) == 0 {
		return nil, errors.New("verifier: no Kafka brokers given")
	}
	if cfg.Spool == "" {
		return nil, errors.New("verifier: no spool directory given")
	}
	setDefault(&cfg.QueueSize, 16384)
	setDefault(&cfg.BatchMax, 1024)
	setDefault(&cfg.Producers, 4)
	setDefaultD(&cfg.BatchTimeout, time.Millisecond)
	setDefaultD(&cfg.KafkaTimeout, 2*time.Second)
	setDefaultD(&cfg.DownFor, 5*time.Second)
	setDefaultD(&cfg.RetryAfter, time.Second)
	if cfg.UIDShard.Count == 0 {
		cfg.UIDShard = UIDShard{Index: 0, Count: 1}
	}
	if cfg.UIDShard.Count > MaxUIDShards || cfg.UIDShard.Index >= cfg.UIDShard.Count {
		return nil, fmt.Errorf("verifier: bad uid shard %d/%d", cfg.UIDShard.Index, cfg.UIDShard.Count)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Registry == nil {
		cfg.Registry = obs.NewRegistry()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	ck, err := ticket.ReadKeyFile(cfg.Key)
	if err != nil {
		return nil, about(ErrKey, err)
	}
	man, err := ticket.LoadManifestKey(cfg.Manifest, ck)
	if err != nil {
		return nil, about(ErrManifest, err)
	}
	sk, err := ticket.LoadSessionKeys(cfg.SessionKey, cfg.MoreSessionKeys)
	if err != nil {
		return nil, about(ErrSessionKey, err)
	}
	for _, p := range append([]string{cfg.Key, cfg.SessionKey}, cfg.MoreSessionKeys...) {
		// A key other users can read lets any of them forge sessions or claims.
		if err := ticket.CheckKeyFileMode(p); errors.Is(err, ticket.ErrKeyExposed) {
			cfg.Logger.Warn("key file is readable by other users; chmod 600 it", "file", p, "err", err)
		}
	}
	s := &Server{cfg: cfg, man: man, campaign: man.Campaign, currency: man.Currency, log: cfg.Logger, now: cfg.Now,
		started: started}
	if man.IssueUntil.IsZero() || man.ExpiresAt.IsZero() {
		return nil, about(ErrManifest, fmt.Errorf("manifest %s: no issue_until or expires_at: the time windows cannot be checked", cfg.Manifest))
	}
	s.ttl, s.expiresAt, s.skew = man.TTLSeconds, man.ExpiresAt.Unix(), int64(ticket.ClockSkew/time.Second)
	s.misdirected = fmt.Appendf(nil, `{"error":"misdirected","uid_shard":"%s"}`, cfg.UIDShard)
	s.sess = sk
	keys := make([][]byte, len(man.Shards))
	firsts := make([]uint64, len(man.Shards))
	counts := make([]uint64, len(man.Shards))
	for i, sh := range man.Shards {
		if keys[i], err = ticket.ShardKey(ck, man.Campaign, man.Generation, i); err != nil {
			return nil, about(ErrKey, fmt.Errorf("campaign key %s: %w", cfg.Key, err))
		}
		// A wrong campaign.key would answer 422 to every genuine token: refuse to start.
		if err := ticket.CheckShardKey(keys[i], man.Campaign, i, sh.KeyCheck); err != nil {
			return nil, about(ErrKey, fmt.Errorf("campaign key %s is not the key manifest %s was generated with: %w", cfg.Key, cfg.Manifest, err))
		}
		firsts[i], counts[i] = sh.FirstTicket, sh.Count
	}
	if s.opener, err = ticket.NewOpener(keys); err != nil {
		return nil, err
	}
	mk, err := ticket.MACKey(ck, man.Campaign, man.Generation)
	if err != nil {
		return nil, fmt.Errorf("campaign key %s: %w", cfg.Key, err)
	}
	if s.mac, err = ticket.NewTicketMAC(mk, man.Campaign); err != nil {
		return nil, err
	}
	var seed [8]byte
	_, _ = rand.Read(seed[:])
	s.table = newClaimTable(firsts, counts, binary.LittleEndian.Uint64(seed[:]))
	if s.signer, err = man.ClaimSigner(ck); err != nil {
		return nil, fmt.Errorf("campaign key %s: %w", cfg.Key, err)
	}
	if man.PerUser > 0 {
		// Every entry holds at least one ticket opened by one of this verifier's users:
		// size for this verifier's share of the campaign's tickets.
		s.users = newUserTable(man.Count/cfg.UIDShard.Count+1, man.PerUser)
	}
	return s, nil
}

// What a start-up error is about, for errors.Is (the command line names the flag):
// the campaign key, the manifest, the session key, the spool.
var (
	ErrKey        = errors.New("bad campaign key")
	ErrManifest   = errors.New("bad manifest")
	ErrSessionKey = errors.New("bad session key")
	ErrSpool      = errors.New("bad spool")
)

// startError marks err as being about kind (ErrKey...) without changing its message.
type startError struct{ kind, err error }

func (e startError) Error() string   { return e.err.Error() }
func (e startError) Unwrap() []error { return []error{e.kind, e.err} }

func about(kind, err error) error { return startError{kind, err} }

// Check is New for --dry-run: the same configuration, key and manifest checks
// (prepare), and the spool looked at without writing (its directory writable or
// creatable, only segment files in it). It binds nothing, writes nothing and produces
// nothing; it returns one line per check.
func Check(cfg Config) ([]string, error) {
	s, err := prepare(cfg)
	if err != nil {
		return nil, err
	}
	m := s.man
	lines := []string{
		fmt.Sprintf("manifest %s: campaign %s generation %s, %d tickets in %d shards, per_user %d, signature valid", s.cfg.Manifest, m.Campaign, m.Generation, m.Count, len(m.Shards), m.PerUser),
		fmt.Sprintf("key %s derives every shard's key of the manifest (key checks pass)", s.cfg.Key),
		fmt.Sprintf("session-key %s", s.cfg.SessionKey),
		fmt.Sprintf("uid-shard %s", s.cfg.UIDShard),
	}
	sp, err := inspectSpool(s.cfg.Spool)
	if err != nil {
		return lines, about(ErrSpool, err)
	}
	return append(lines, "spool "+sp), nil
}
