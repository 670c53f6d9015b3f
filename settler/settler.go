// Package settler moves claims from Kafka into the ledger exactly once: a consumer group
// reads claims, checks each against the manifest, posts the good ones in one ledger
// transaction per batch, sends the bad ones to the dead-letter topic, and commits the
// offsets only after both. Reconcile proves the result against the shard files.
package settler

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"

	"shake/internal/control"
	ikafka "shake/internal/kafka"
	"shake/internal/obs"
	"shake/settler/ledger"
	"shake/ticket"
)

// Defaults for Config fields left zero.
const (
	DefaultTopic          = ikafka.ClaimsTopic
	DefaultGroup          = "shake-settler"
	DefaultBatch          = 2000
	DefaultLinger         = 50 * time.Millisecond
	DefaultBreakerFails   = 5
	DefaultCooldown       = 2 * time.Second
	DefaultBackoffMin     = 50 * time.Millisecond
	DefaultBackoffMax     = 2 * time.Second
	DefaultAttemptTimeout = 15 * time.Second
	DefaultDrainTimeout   = 10 * time.Second
	// DefaultStallTimeout is how long a partition's committed offset may stand still
	// while claims wait on it before the group reader is recreated.
	DefaultStallTimeout   = 30 * time.Second
	DefaultSessionTimeout = 10 * time.Second
	// DefaultDLQTimeout is how long one batch's dead letters may keep failing to be
	// written before the settler logs them and moves on.
	DefaultDLQTimeout = 30 * time.Second
	// MaxBatch bounds a batch whatever the flags say: a batch is held in memory and
	// posted in one transaction.
	MaxBatch = 100_000
)

// ErrStopped is returned by Run when it gave up on a batch because shutdown's grace
// period ran out (the ledger was unreachable); the batch was not committed and will be
// delivered again.
var ErrStopped = errors.New("settler stopped with a batch uncommitted")

// Config configures a Settler.
type Config struct {
	Brokers   []string
	Topic     string // default shake.claims; dead letters go to Topic + ".dlq"
	Group     string // consumer group, default shake-settler
	Manifest  *ticket.Manifest
	Validator *Validator
	Ledger    ledger.Ledger
	// Kafka is the TLS and SASL of every Kafka connection: the group reader, the
	// dead-letter writer, the watchdog's queries (nil: plain text).
	Kafka *ikafka.Security

	Batch  int           // most claims per batch (default 2000, at most MaxBatch)
	Linger time.Duration // how long a batch waits for more claims after its first (default 50ms)

	BreakerFailures int           // consecutive ledger failures that open the breaker (default 5)
	BreakerCooldown time.Duration // open -> half-open after this (default 2s)
	BackoffMin      time.Duration // first retry delay (default 50ms)
	BackoffMax      time.Duration // retry delay cap (default 2s)
	AttemptTimeout  time.Duration // one ledger call (default 15s)
	DrainTimeout    time.Duration // after shutdown, how long the batch in hand may take (default 10s)
	StallTimeout    time.Duration // a partition's claims waiting, its committed offset still, breaker closed: recreate the reader (default 30s)
	SessionTimeout  time.Duration // consumer group session timeout (default 10s)
	DLQTimeout      time.Duration // dead letters failing this long: log them, count them, commit (default 30s)

	Registry *obs.Registry // metrics (nil: a private registry)
	Logger   *slog.Logger  // nil discards
	// Switches are the --switches file and the admin key (see switches.go).
	Switches control.Options
	// Now is the clock (tests); nil uses time.Now.
	Now func() time.Time
	// TopicPolicy, when set, is checked against the claims topic before the first
	// claim is consumed (again, since the start-up check may not have reached Kafka);
	// until it passes the settler is not ready, naming why (kafkaready.go).
	TopicPolicy *ikafka.Policy
}

// Settler consumes claims and posts them. Create with New, then Run.
type Settler struct {
	cfg      Config
	sw       *control.Live[settlerSwitches] // the switches in force (switches.go)
	ctl      *control.Store
	log      *slog.Logger
	br       *Breaker
	funded   atomic.Bool
	running  atomic.Bool
	dlqTopic string

	reg          *obs.Registry
	mPosted      *obs.Counter
	mDup         *obs.Counter
	mAmount      *obs.Counter
	mBatches     *obs.Counter
	mLedgerErrs  *obs.Counter
	mCommitErrs  *obs.Counter
	mFetchErrs   *obs.Counter
	mRestarts    *obs.Counter
	stalled      atomic.Bool // set by watchStall, cleared when every partition moves again
	mGroupLag    *obs.Gauge
	mStalled     *obs.Gauge
	mDLQErrs     *obs.Counter
	mDLQ         map[string]*obs.Counter
	mDLQDropped  map[string]*obs.Counter
	mBatchSize   *obs.Histogram
	mPostLatency *obs.Histogram
	mE2E         *obs.Histogram
	mBreaker     *obs.Gauge
	mLagTotal    *obs.Gauge
	lag          map[int]*obs.Gauge // per partition; touched by the Run goroutine only
	lagVal       map[int]int64

	// The watchdog interrupts the Run loop's fetch through these: restart asks for a
	// new group reader, fetchCancel ends the fetch in progress (see interrupt).
	restart     atomic.Bool
	fetchMu     sync.Mutex
	fetchCancel context.CancelFunc
	settling    atomic.Bool // Run is inside settle: it is not waiting on the group

	dlqDown atomic.Bool // the last dead-letter write failed for DLQTimeout

	// Kafka readiness (kafkaready.go): the topic gate, whether the last look found the
	// claims topic and this settler's member in its group, and the client id that
	// member is known by.
	gate     *ikafka.Gate
	kafkaOK  atomic.Bool
	clientID string

	money moneyMetrics
}

// batchBuckets are the histogram bounds for batch sizes (claims, not seconds).
var batchBuckets = []float64{1, 10, 50, 100, 250, 500, 1000, 2000, 5000, 10000, 50000, 100000}

// New checks cfg and returns a settler.
func New(cfg Config) (*Settler, error) {
	if len(cfg.Brokers) == 0 {
		return nil, errors.New("settler: no brokers")
	}
	if cfg.Manifest == nil || cfg.Validator == nil || cfg.Ledger == nil {
		return nil, errors.New("BUG: settler: manifest, validator and ledger are required")
	}
	if cfg.Batch < 0 || cfg.Batch > MaxBatch {
		return nil, fmt.Errorf("settler: batch %d outside 1..%d", cfg.Batch, MaxBatch)
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	if cfg.Topic == "" {
		cfg.Topic = DefaultTopic
	}
	if cfg.Group == "" {
		cfg.Group = DefaultGroup
	}
	if cfg.Batch == 0 {
		cfg.Batch = DefaultBatch
	}
	if cfg.BreakerFailures <= 0 {
		cfg.BreakerFailures = DefaultBreakerFails
	}
	def(&cfg.Linger, DefaultLinger)
	def(&cfg.BreakerCooldown, DefaultCooldown)
	def(&cfg.BackoffMin, DefaultBackoffMin)
	def(&cfg.BackoffMax, DefaultBackoffMax)
	def(&cfg.AttemptTimeout, DefaultAttemptTimeout)
	def(&cfg.DrainTimeout, DefaultDrainTimeout)
	def(&cfg.StallTimeout, DefaultStallTimeout)
	def(&cfg.SessionTimeout, DefaultSessionTimeout)
	def(&cfg.DLQTimeout, DefaultDLQTimeout)
	if cfg.Registry == nil {
		cfg.Registry = obs.NewRegistry()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Settler{cfg: cfg, log: cfg.Logger.With("role", "settler"), dlqTopic: ikafka.DLQTopic(cfg.Topic), reg: cfg.Registry,
		lag: map[int]*obs.Gauge{}, lagVal: map[int]int64{}}
	r := cfg.Registry
	s.mBreaker = r.Gauge("shake_settler_breaker_state", "Ledger circuit breaker: 0 closed, 1 open, 2 half-open.")
	s.br = NewBreaker(cfg.BreakerFailures, cfg.BreakerCooldown, cfg.Now, func(from, to BreakerState) {
		s.mBreaker.Set(int64(to))
		s.log.Warn("ledger circuit breaker", "from", from.String(), "to", to.String())
	})
	s.mPosted = r.Counter("shake_settler_posted_total", "Claims newly posted to the ledger.")
	s.mDup = r.Counter("shake_settler_duplicates_total", "Claims already in the ledger (redelivered), posted no second time.")
	s.mAmount = r.Counter("shake_settler_posted_amount_total", "Sum of newly posted amounts, minor units.")
	s.mBatches = r.Counter("shake_settler_batches_total", "Batches posted and committed.")
	s.mLedgerErrs = r.Counter("shake_settler_ledger_errors_total", "Failed ledger calls (each retried).")
	s.mCommitErrs = r.Counter("shake_settler_commit_errors_total", "Failed offset commits (the claims will be redelivered and deduplicated).")
	s.mFetchErrs = r.Counter("shake_settler_fetch_errors_total", "Failed fetches from Kafka.")
	s.mRestarts = r.Counter("shake_settler_reader_restarts_total", "Group readers recreated because the consumer stalled.")
	s.mDLQErrs = r.Counter("shake_settler_dlq_errors_total", "Failed writes to the dead-letter topic (each retried).")
	s.mDLQ = make(map[string]*obs.Counter, len(Reasons))
	s.mDLQDropped = make(map[string]*obs.Counter, len(Reasons))
	for _, reason := range Reasons {
		s.mDLQ[reason] = r.Counter("shake_settler_dlq_total", "Claims sent to the dead-letter topic, by reason.", "reason", reason)
		s.mDLQDropped[reason] = r.Counter("shake_settler_dlq_unwritten_total",
			"Rejected claims whose dead letter could not be written for --dlq-timeout: logged and committed (they stay in the claims topic), by reason.", "reason", reason)
	}
	s.mBatchSize = r.Histogram("shake_settler_batch_size", "Claims per batch.", batchBuckets)
	s.mPostLatency = r.Histogram("shake_settler_post_seconds", "Latency of one successful ledger transaction.", obs.LatencyBuckets)
	s.mE2E = r.Histogram("shake_settler_claim_to_commit_seconds", "From a claim's Kafka timestamp to its batch being posted and committed.", obs.LatencyBuckets)
	s.mLagTotal = r.Gauge("shake_settler_consumer_lag", "Claims behind the high watermark, summed over this member's partitions.")
	s.money = newMoneyMetrics(r)
	s.initKafkaReady()
	if err := s.setupSwitches(); err != nil {
		return nil, err
	}
	return s, nil
}

// Reasons NotReadyReason gives, as /readyz shows them.
const (
	ReadyStarting      = "starting"            // Run has not started consuming, or has stopped
	ReadyUnfunded      = "unfunded"            // the campaign's budget is not funded in the ledger yet
	ReadyBreakerOpen   = "ledger_breaker_open" // the ledger failed; postings wait for the breaker
	ReadyStalled       = "stalled"             // a partition's claims wait and its committed offset does not move
	ReadyDLQUnwritable = "dlq_unwritable"      // the dead-letter topic refused writes for --dlq-timeout
	// ReadyKafkaUnreachable: the claims topic cannot be reached or this settler has not
	// joined its consumer group: nothing is being consumed.
	ReadyKafkaUnreachable = "kafka_unreachable"
)

// NotReadyReason returns "" when the settler is consuming with everything it needs,
// else why not (one of the Ready* reasons).
func (s *Settler) NotReadyReason() string {
	switch {
	case !s.funded.Load():
		return ReadyUnfunded
	case s.gate != nil && !s.gate.Open():
		return s.gate.Reason()
	case !s.running.Load():
		return ReadyStarting
	case !s.kafkaOK.Load():
		return ReadyKafkaUnreachable
	case s.br.State() == BreakerOpen:
		return ReadyBreakerOpen
	case s.stalled.Load():
		return ReadyStalled
	case s.dlqDown.Load():
		return ReadyDLQUnwritable
	}
	return ""
}

// Ready reports whether the settler is consuming: the campaign is funded in the ledger,
// the breaker is not open, no partition is stalled and dead letters can be written.
func (s *Settler) Ready() bool { return s.NotReadyReason() == "" }

// BreakerState returns the ledger breaker's state.
func (s *Settler) BreakerState() BreakerState { return s.br.State() }

// Run consumes until ctx is cancelled, then finishes the batch in hand (posting and
// committing it within DrainTimeout) and returns nil. It returns an error only for a
// fault that retrying cannot fix.
func (s *Settler) Run(ctx context.Context) error {
	if ok, err := s.fundAndGate(ctx); !ok {
		return err
	}
	m := s.cfg.Manifest
	rd := s.newReader()
	defer func() { rd.Close() }()
	dlq := &kafka.Writer{
		Addr:                   kafka.TCP(s.cfg.Brokers...),
		Topic:                  s.dlqTopic,
		Balancer:               &kafka.Hash{},
		RequiredAcks:           kafka.RequireAll,
		BatchTimeout:           5 * time.Millisecond,
		AllowAutoTopicCreation: false, // operators create <topic>.dlq with the claims topic
		Transport:              s.cfg.Kafka.Secure(&kafka.Transport{DialTimeout: 10 * time.Second}),
	}
	defer dlq.Close()
	s.running.Store(true)
	defer s.running.Store(false)
	s.log.Info("consuming", "topic", s.cfg.Topic, "group", s.cfg.Group, "campaign", m.Campaign, "batch", s.cfg.Batch, "linger", s.cfg.Linger)

	msgs := make([]kafka.Message, 0, s.cfg.Batch)
	b := &batch{postings: make([]ledger.Posting, 0, s.cfg.Batch)}
	wctx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	go s.watchStall(wctx)
	fetch := s.newFetch(ctx)
	defer func() { fetch.cancel() }()
	for ctx.Err() == nil {
		if s.restart.Swap(false) {
			// A partition stands still while claims wait on it (a member the broker
			// keeps that consumes nothing, a reader that stopped delivering after a
			// broker restart): a new group member forces a rebalance, which drops a
			// member that does not rejoin, and starts from the committed offsets.
			// Nothing is skipped; anything uncommitted comes again.
			fetch.cancel()
			closeReader(rd, s.log)
			rd = s.newReader()
			fetch = s.newFetch(ctx)
			s.mRestarts.Inc()
			s.log.Warn("group reader recreated")
		}
		msgs = s.collect(fetch.ctx, rd, msgs[:0])
		if len(msgs) == 0 {
			continue
		}
		s.kafkaOK.Store(true) // claims came through the group: reached and joined
		epoch, ok := s.enterUnpaused(ctx)
		if !ok {
			break // stopped while paused: the claims in hand were never committed
		}
		// The batch in hand is finished even after shutdown began, within DrainTimeout.
		dctx, cancel := drainContext(ctx, s.cfg.DrainTimeout)
		s.settling.Store(true)
		err := s.settle(dctx, rd, dlq, msgs, b)
		s.settling.Store(false)
		cancel()
		s.sw.Exit(epoch)
		if err != nil {
			return err
		}
	}
	s.log.Info("stopped")
	return nil
}

// newFetch returns the context the fetches of one group reader run under, and lets
// interrupt cancel it.
func (s *Settler) newFetch(parent context.Context) scope {
	f := newScope(parent)
	s.fetchMu.Lock()
	s.fetchCancel = f.cancel
	s.fetchMu.Unlock()
	return f
}

// interrupt asks the Run loop for a new group reader and ends the fetch it may be
// blocked in: a stalled group leaves FetchMessage waiting for ever.
func (s *Settler) interrupt() {
	s.restart.Store(true)
	s.fetchMu.Lock()
	if s.fetchCancel != nil {
		s.fetchCancel()
	}
	s.fetchMu.Unlock()
}

// scope is a cancellable context: the fetches of one group reader.
type scope struct {
	ctx    context.Context
	cancel context.CancelFunc
}

func newScope(parent context.Context) scope {
	ctx, cancel := context.WithCancel(parent)
	return scope{ctx, cancel}
}

// watchStall watches every partition's committed offset (asked of the broker, whoever
// owns the partition). A partition whose committed offset stands still for StallTimeout
// while claims wait on it, with this settler's ledger breaker closed, is stalled: the
// settler reports not ready and interrupts its Run loop for a new group reader. It also
// exports the group's lag.
func (s *Settler) watchStall(ctx context.Context) {
	client := s.cfg.Kafka.Client(s.cfg.Brokers, 5*time.Second)
	tick := time.NewTicker(min(max(s.cfg.StallTimeout/6, 100*time.Millisecond), kafkaLookEvery))
	defer tick.Stop()
	type seen struct {
		committed int64
		since     time.Time // when committed last moved, or the partition was caught up
	}
	parts := map[int]seen{}
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		offs, err := groupOffsets(ctx, client, s.cfg.Group, s.cfg.Topic)
		s.lookAtGroup(ctx, client, err)
		if err != nil {
			continue // the broker is down: nothing to tell
		}
		now := time.Now()
		var lag int64
		var stalled []int
		// A paused settler (the switches) holds its claims on purpose: not a stall.
		healthy := s.br.State() == BreakerClosed && !s.paused()
		for p, o := range offs {
			lag += o.lag()
			w, ok := parts[p]
			if !ok || w.committed != o.committed || o.lag() == 0 || !healthy {
				parts[p] = seen{o.committed, now}
				continue
			}
			if now.Sub(w.since) >= s.cfg.StallTimeout {
				stalled = append(stalled, p)
			}
		}
		s.mGroupLag.Set(lag)
		s.mStalled.Set(int64(len(stalled)))
		if len(stalled) == 0 {
			s.stalled.Store(false)
			continue
		}
		// Not ready until the partitions move again: whatever watches /readyz sees it.
		s.stalled.Store(true)
		if s.settling.Load() {
			continue // the Run loop is posting, not waiting on the group: look again later
		}
		slices.Sort(stalled)
		s.log.Error("consumer stalled: claims wait on partitions whose committed offset does not move; recreating the group reader",
			"partitions", stalled, "group_lag", lag, "for", s.cfg.StallTimeout)
		s.interrupt()
		// The new member's rebalance may take up to its rebalance timeout (the session
		// timeout) before it fetches: give it that and a full StallTimeout.
		grace := now.Add(s.cfg.SessionTimeout)
		for _, p := range stalled {
			parts[p] = seen{offs[p].committed, grace}
		}
	}
}

// partOffsets is where a group stands on one partition.
type partOffsets struct {
	committed int64 // the group's committed offset, or the partition's first if none
	end       int64 // the high watermark
}

func (o partOffsets) lag() int64 { return max(0, o.end-o.committed) }

// groupLag asks the broker how many claims of topic the group has not committed yet,
// over all partitions, whoever owns them.
func groupLag(ctx context.Context, c *kafka.Client, group, topic string) (int64, error) {
	offs, err := groupOffsets(ctx, c, group, topic)
	if err != nil {
		return 0, err
	}
	var lag int64
	for _, o := range offs {
		lag += o.lag()
	}
	return lag, nil
}

// groupOffsets asks the broker where group stands on every partition of topic.
func groupOffsets(ctx context.Context, c *kafka.Client, group, topic string) (map[int]partOffsets, error) {
	meta, err := c.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		return nil, err
	}
	var parts []int
	for _, t := range meta.Topics {
		if t.Name == topic {
			for _, p := range t.Partitions {
				parts = append(parts, p.ID)
			}
		}
	}
	if len(parts) == 0 {
		return nil, fmt.Errorf("topic %s has no partitions", topic)
	}
	committed, err := c.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{topic: parts}})
	if err != nil {
		return nil, err
	}
	first, err := listOffsets(ctx, c, topic, parts, false)
	if err != nil {
		return nil, err
	}
	last, err := listOffsets(ctx, c, topic, parts, true)
	if err != nil {
		return nil, err
	}
	done := map[int]int64{}
	for _, po := range committed.Topics[topic] {
		if po.Error != nil {
			return nil, po.Error
		}
		done[po.Partition] = po.CommittedOffset
	}
	out := make(map[int]partOffsets, len(parts))
	for _, p := range parts {
		// A partition the group never committed is absent or -1: it starts at the start.
		from, ok := done[p]
		if !ok || from < 0 {
			from = first[p]
		}
		out[p] = partOffsets{committed: from, end: last[p]}
	}
	return out, nil
}

// listOffsets returns each partition's first offset, or its last (high watermark).
func listOffsets(ctx context.Context, c *kafka.Client, topic string, parts []int, latest bool) (map[int]int64, error) {
	reqs := make([]kafka.OffsetRequest, len(parts))
	for i, p := range parts {
		if latest {
			reqs[i] = kafka.LastOffsetOf(p)
		} else {
			reqs[i] = kafka.FirstOffsetOf(p)
		}
	}
	res, err := c.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: reqs}})
	if err != nil {
		return nil, err
	}
	out := make(map[int]int64, len(parts))
	for _, po := range res.Topics[topic] {
		if po.Error != nil {
			return nil, po.Error
		}
		if latest {
			out[po.Partition] = po.LastOffset
		} else {
			out[po.Partition] = po.FirstOffset
		}
	}
	return out, nil
}

// drainContext returns a context that ends DrainTimeout after parent does.
func drainContext(parent context.Context, grace time.Duration) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.WithoutCancel(parent))
	stop := context.AfterFunc(parent, func() {
		t := time.AfterFunc(grace, cancel)
		context.AfterFunc(ctx, func() { t.Stop() })
	})
	return ctx, func() { stop(); cancel() }
}

// collect fetches one batch: it waits for a first claim, then takes more until the batch
// is full or Linger has passed since the first.
func (s *Settler) collect(ctx context.Context, rd *kafka.Reader, msgs []kafka.Message) []kafka.Message {
	m, err := rd.FetchMessage(ctx)
	if err != nil {
		if ctx.Err() == nil {
			s.mFetchErrs.Inc()
			s.log.Warn("fetch failed", "err", err)
			sleep(ctx, s.cfg.BackoffMin)
		}
		return msgs
	}
	msgs = append(msgs, m)
	lctx, cancel := context.WithTimeout(ctx, s.cfg.Linger)
	defer cancel()
	for len(msgs) < s.cfg.Batch {
		m, err := rd.FetchMessage(lctx)
		if err != nil {
			break
		}
		msgs = append(msgs, m)
	}
	return msgs
}

// batch holds the scratch of one batch, reused.
type batch struct {
	postings []ledger.Posting
	index    []int // index[i] is the message of postings[i]
	dead     []kafka.Message
}

// settle validates, dead-letters, posts and commits one batch. Nothing is committed
// unless everything before it succeeded.
func (s *Settler) settle(ctx context.Context, rd *kafka.Reader, dlq *kafka.Writer, msgs []kafka.Message, b *batch) error {
	b.postings, b.index, b.dead = b.postings[:0], b.index[:0], b.dead[:0]
	for i := range msgs {
		p, reason, detail := s.cfg.Validator.Check(msgs[i].Value)
		if reason != "" {
			b.dead = append(b.dead, deadLetter(&msgs[i], reason, detail))
			continue
		}
		b.postings = append(b.postings, p)
		b.index = append(b.index, i)
	}
	if err := s.post(ctx, msgs, b); err != nil {
		return err
	}
	if len(b.dead) > 0 {
		if err := s.writeDead(ctx, dlq, b.dead); err != nil {
			return err
		}
	}
	if err := rd.CommitMessages(ctx, msgs...); err != nil {
		// The ledger has the batch; a failed commit (usually a rebalance) only means the
		// claims come again and are recognised as duplicates.
		s.mCommitErrs.Inc()
		s.log.Warn("offset commit failed; the batch will be redelivered and deduplicated", "err", err)
	}
	now := time.Now()
	for i := range msgs {
		if !msgs[i].Time.IsZero() {
			s.mE2E.ObserveDuration(now.Sub(msgs[i].Time))
		}
	}
	s.mBatches.Inc()
	s.mBatchSize.Observe(float64(len(msgs)))
	s.observeLag(msgs)
	return nil
}

// observeLag updates the per-partition lag gauges from the last message of each
// partition in the batch: high watermark - offset - 1 claims are still behind it.
func (s *Settler) observeLag(msgs []kafka.Message) {
	for i := range msgs {
		m := &msgs[i]
		g, ok := s.lag[m.Partition]
		if !ok {
			g = s.reg.Gauge("shake_settler_partition_lag", "Claims behind the high watermark, per partition.",
				"partition", strconv.Itoa(m.Partition))
			s.lag[m.Partition] = g
		}
		l := max(m.HighWaterMark-m.Offset-1, 0)
		s.lagVal[m.Partition] = l
		g.Set(l)
	}
	var total int64
	for _, v := range s.lagVal {
		total += v
	}
	s.mLagTotal.Set(total)
}

// retry runs fn until it succeeds, ctx ends, or it fails for good (ErrInvalid,
// ErrConflict, ErrOverBudget: retrying cannot change the answer). Every failure counts
// against the breaker; while the breaker is open nothing is attempted (and, since the
// Run loop is waiting here, nothing is fetched).
func (s *Settler) retry(ctx context.Context, what string, fn func(context.Context) error) error {
	return s.retryWith(ctx, what, s.br, s.mLedgerErrs, fn)
}

// retryWith is retry with a given breaker (nil: none) and error counter: dead letters go
// to Kafka, and a slow Kafka must not open the ledger's breaker.
func (s *Settler) retryWith(ctx context.Context, what string, br *Breaker, errs *obs.Counter, fn func(context.Context) error) error {
	for attempt := 0; ; attempt++ {
		for br != nil {
			ok, wait := br.Allow()
			if ok {
				break
			}
			if !sleep(ctx, wait) {
				return fmt.Errorf("%w: %s: %v", ErrStopped, what, ctx.Err())
			}
		}
		actx, cancel := context.WithTimeout(ctx, s.cfg.AttemptTimeout)
		err := fn(actx)
		cancel()
		if err == nil {
			if br != nil {
				br.Success()
			}
			return nil
		}
		if errors.Is(err, ledger.ErrInvalid) || errors.Is(err, ledger.ErrConflict) || errors.Is(err, ledger.ErrOverBudget) ||
			errors.Is(err, ledger.ErrOtherGeneration) || errors.Is(err, ledger.ErrManifestChanged) {
			if br != nil {
				br.Success() // the ledger answered; it is up
			}
			return err
		}
		errs.Inc()
		if br != nil {
			br.Failure()
		}
		d := backoff(attempt, s.cfg.BackoffMin, s.cfg.BackoffMax, rand.Int64N)
		s.log.Warn(what+" failed, retrying", "attempt", attempt+1, "in", d, "breaker", s.br.State().String(), "err", err)
		if !sleep(ctx, d) {
			return fmt.Errorf("%w: %s: %v", ErrStopped, what, err)
		}
	}
}

// sleep waits d or until ctx ends; it reports whether the full d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// writeDead writes a batch's dead letters. Retrying cannot go on for ever: one
// poisoned record or a dead-letter topic that refuses writes would stop all settlement.
// After DLQTimeout of failures (only one attempt while the topic is known to be down) it
// logs each dead letter (reason, source, length and SHA-256 of the record, which stays
// in the claims topic at that offset), counts it in shake_settler_dlq_unwritten_total,
// marks the settler not ready (dlq_unwritable) and returns nil so that the batch is
// committed: a rejected claim is not paid either way. It returns an error only when ctx
// ended (shutdown), and then the batch is not committed and comes again.
func (s *Settler) writeDead(ctx context.Context, dlq *kafka.Writer, dead []kafka.Message) error {
	wait := s.cfg.DLQTimeout
	if s.dlqDown.Load() {
		wait = min(wait, s.cfg.AttemptTimeout, max(s.cfg.DLQTimeout/6, time.Second))
	}
	wctx, cancel := context.WithTimeout(ctx, wait)
	err := s.retryWith(wctx, "dead-letter", nil, s.mDLQErrs, func(actx context.Context) error {
		return dlq.WriteMessages(actx, dead...)
	})
	cancel()
	if err == nil {
		if s.dlqDown.Swap(false) {
			s.log.Info("the dead-letter topic takes writes again", "topic", s.dlqTopic)
		}
		for i := range dead {
			s.mDLQ[string(dead[i].Headers[0].Value)].Inc()
		}
		s.log.Warn("claims dead-lettered", "count", len(dead), "topic", s.dlqTopic)
		return nil
	}
	if ctx.Err() != nil {
		return err
	}
	s.dlqDown.Store(true)
	for i := range dead {
		h := dead[i].Headers
		reason := string(h[0].Value)
		s.mDLQDropped[reason].Inc()
		s.log.Error("dead letter not written; the rejected claim stays in the claims topic", "topic", s.dlqTopic,
			"reason", reason, "source", string(h[1].Value), "claim_bytes", string(h[2].Value), "claim_sha256", string(h[3].Value), "err", err)
	}
	return nil
}

// Bounds of a dead letter: the claims topic takes records of up to the broker's limit
// (1 MiB by default), and a record that is not JSON is embedded as a JSON string, which
// can take six bytes per byte (control bytes) or three (invalid UTF-8).
const (
	// MaxDeadClaimBytes is the most of a rejected record's value a dead letter embeds;
	// a longer one is cut to its first MaxDeadClaimBytes bytes, marked truncated.
	MaxDeadClaimBytes = 4 << 10
	maxDeadDetail     = 512
	maxDeadKey        = 256
	// MaxDeadLetterBytes bounds a dead letter's value whatever it wraps.
	MaxDeadLetterBytes = 6*(MaxDeadClaimBytes+maxDeadDetail) + 1024
)

// deadLetter wraps a rejected claim for the dead-letter topic: the value is a JSON
// envelope {"reason","detail","topic","partition","offset","claim"} where claim is the
// original message (embedded as JSON when it is JSON, else as a string). A record longer
// than MaxDeadClaimBytes is embedded as a string of its first MaxDeadClaimBytes bytes
// with "claim_truncated":true, "claim_bytes" (its length) and "claim_sha256"; the whole
// record stays in the claims topic at topic/partition/offset. The value never exceeds
// MaxDeadLetterBytes. The headers are the reason (read back by settle and writeDead),
// the source, and the record's length and SHA-256.
func deadLetter(m *kafka.Message, reason, detail string) kafka.Message {
	env := struct {
		Reason         string          `json:"reason"`
		Detail         string          `json:"detail"`
		Topic          string          `json:"topic"`
		Partition      int             `json:"partition"`
		Offset         int64           `json:"offset"`
		Claim          json.RawMessage `json:"claim"`
		ClaimTruncated bool            `json:"claim_truncated,omitempty"`
		ClaimBytes     int             `json:"claim_bytes,omitempty"`
		ClaimSHA256    string          `json:"claim_sha256,omitempty"`
	}{Reason: reason, Detail: cut(detail, maxDeadDetail), Topic: m.Topic, Partition: m.Partition, Offset: m.Offset}
	sum := sha256.Sum256(m.Value)
	hash := hex.EncodeToString(sum[:])
	switch {
	case len(m.Value) > MaxDeadClaimBytes:
		env.Claim, _ = json.Marshal(string(m.Value[:MaxDeadClaimBytes]))
		env.ClaimTruncated, env.ClaimBytes, env.ClaimSHA256 = true, len(m.Value), hash
	case json.Valid(m.Value):
		env.Claim = m.Value
	default:
		env.Claim, _ = json.Marshal(string(m.Value))
	}
	v, err := json.Marshal(env)
	if err != nil {
		panic("BUG: dead letter envelope: " + err.Error())
	}
	if len(v) > MaxDeadLetterBytes {
		panic(fmt.Sprintf("BUG: dead letter of %d bytes, bound %d", len(v), MaxDeadLetterBytes))
	}
	return kafka.Message{
		Key:   m.Key[:min(len(m.Key), maxDeadKey)],
		Value: v,
		Headers: []kafka.Header{
			{Key: "reason", Value: []byte(reason)},
			{Key: "source", Value: []byte(m.Topic + "/" + strconv.Itoa(m.Partition) + "/" + strconv.FormatInt(m.Offset, 10))},
			{Key: "claim_bytes", Value: strconv.AppendInt(nil, int64(len(m.Value)), 10)},
			{Key: "claim_sha256", Value: []byte(hash)},
		},
	}
}

// cut returns s cut to at most n bytes.
func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
