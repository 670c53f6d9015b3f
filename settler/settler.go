// Package settler moves claims from Kafka into the ledger exactly once: a consumer group
// reads claims, checks each against the manifest, posts the good ones in one ledger
// transaction per batch, sends the bad ones to the dead-letter topic, and commits the
// offsets only after both. Reconcile proves the result against the shard files.
package settler

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"

	"shake/internal/obs"
	"shake/settler/ledger"
	"shake/ticket"
)

// Defaults for Config fields left zero.
const (
	DefaultTopic          = "shake.claims"
	DefaultGroup          = "shake-settler"
	DefaultBatch          = 2000
	DefaultLinger         = 50 * time.Millisecond
	DefaultBreakerFails   = 5
	DefaultCooldown       = 2 * time.Second
	DefaultBackoffMin     = 50 * time.Millisecond
	DefaultBackoffMax     = 2 * time.Second
	DefaultAttemptTimeout = 15 * time.Second
	DefaultDrainTimeout   = 10 * time.Second
	// DefaultStallTimeout is how long claims may wait with nothing settled before the
	// group reader is recreated.
	DefaultStallTimeout   = 30 * time.Second
	DefaultSessionTimeout = 10 * time.Second
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

	Batch  int           // most claims per batch (default 2000, at most MaxBatch)
	Linger time.Duration // how long a batch waits for more claims after its first (default 50ms)

	BreakerFailures int           // consecutive ledger failures that open the breaker (default 5)
	BreakerCooldown time.Duration // open -> half-open after this (default 2s)
	BackoffMin      time.Duration // first retry delay (default 50ms)
	BackoffMax      time.Duration // retry delay cap (default 2s)
	AttemptTimeout  time.Duration // one ledger call (default 15s)
	DrainTimeout    time.Duration // after shutdown, how long the batch in hand may take (default 10s)
	StallTimeout    time.Duration // claims waiting, nothing settled, breaker closed: recreate the reader (default 30s)
	SessionTimeout  time.Duration // consumer group session timeout (default 10s)

	Registry *obs.Registry // metrics (nil: a private registry)
	Logger   *slog.Logger  // nil discards
	// Now is the clock (tests); nil uses time.Now.
	Now func() time.Time
}

// Settler consumes claims and posts them. Create with New, then Run.
type Settler struct {
	cfg      Config
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
	stalled      atomic.Bool // set by watchStall, cleared when work resumes
	mGroupLag    *obs.Gauge
	mDLQErrs     *obs.Counter
	mDLQ         map[string]*obs.Counter
	mBatchSize   *obs.Histogram
	mPostLatency *obs.Histogram
	mE2E         *obs.Histogram
	mBreaker     *obs.Gauge
	mLagTotal    *obs.Gauge
	lag          map[int]*obs.Gauge // per partition; touched by the Run goroutine only
	lagVal       map[int]int64
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
	if cfg.Registry == nil {
		cfg.Registry = obs.NewRegistry()
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Settler{cfg: cfg, log: cfg.Logger.With("role", "settler"), dlqTopic: cfg.Topic + ".dlq", reg: cfg.Registry,
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
	s.mGroupLag = r.Gauge("shake_settler_group_lag", "Claims in the topic the group has not committed, over all partitions (asked of the broker).")
	s.mDLQErrs = r.Counter("shake_settler_dlq_errors_total", "Failed writes to the dead-letter topic (each retried).")
	s.mDLQ = make(map[string]*obs.Counter, len(Reasons))
	for _, reason := range Reasons {
		s.mDLQ[reason] = r.Counter("shake_settler_dlq_total", "Claims sent to the dead-letter topic, by reason.", "reason", reason)
	}
	s.mBatchSize = r.Histogram("shake_settler_batch_size", "Claims per batch.", batchBuckets)
	s.mPostLatency = r.Histogram("shake_settler_post_seconds", "Latency of one successful ledger transaction.", obs.LatencyBuckets)
	s.mE2E = r.Histogram("shake_settler_claim_to_commit_seconds", "From a claim's Kafka timestamp to its batch being posted and committed.", obs.LatencyBuckets)
	s.mLagTotal = r.Gauge("shake_settler_consumer_lag", "Claims behind the high watermark, summed over this member's partitions.")
	return s, nil
}

// Ready reports whether the settler is consuming: the campaign is funded in the ledger
// and the breaker is not open.
func (s *Settler) Ready() bool {
	return s.running.Load() && s.funded.Load() && s.br.State() != BreakerOpen && !s.stalled.Load()
}

// BreakerState returns the ledger breaker's state.
func (s *Settler) BreakerState() BreakerState { return s.br.State() }

// Run consumes until ctx is cancelled, then finishes the batch in hand (posting and
// committing it within DrainTimeout) and returns nil. It returns an error only for a
// fault that retrying cannot fix.
func (s *Settler) Run(ctx context.Context) error {
	m := s.cfg.Manifest
	// The budget must be funded before the first posting can debit it.
	if err := s.retry(ctx, "fund", func(actx context.Context) error {
		return s.cfg.Ledger.Fund(actx, m.Campaign, m.Currency, m.Budget)
	}); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	s.funded.Store(true)

	rd := s.newReader()
	defer func() { rd.Close() }()
	dlq := &kafka.Writer{
		Addr:                   kafka.TCP(s.cfg.Brokers...),
		Topic:                  s.dlqTopic,
		Balancer:               &kafka.Hash{},
		RequiredAcks:           kafka.RequireAll,
		BatchTimeout:           5 * time.Millisecond,
		AllowAutoTopicCreation: true,
	}
	defer dlq.Close()
	s.running.Store(true)
	defer s.running.Store(false)
	s.log.Info("consuming", "topic", s.cfg.Topic, "group", s.cfg.Group, "campaign", m.Campaign, "batch", s.cfg.Batch, "linger", s.cfg.Linger)

	msgs := make([]kafka.Message, 0, s.cfg.Batch)
	b := &batch{postings: make([]ledger.Posting, 0, s.cfg.Batch)}
	stalled := make(chan struct{}, 1)
	wctx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	go s.watchStall(wctx, stalled)
	fetch := newScope(ctx)
	defer func() { fetch.cancel() }()
	for ctx.Err() == nil {
		select {
		case <-stalled:
			// The group reader has stopped delivering while claims wait (seen after
			// broker restarts): a new reader rejoins the group from the committed
			// offsets. Nothing is skipped; anything uncommitted comes again.
			fetch.cancel()
			rd.Close()
			rd = s.newReader()
			fetch = newScope(ctx)
			s.mRestarts.Inc()
		default:
		}
		msgs = s.collect(fetch.ctx, rd, msgs[:0])
		if len(msgs) == 0 {
			continue
		}
		// The batch in hand is finished even after shutdown began, within DrainTimeout.
		dctx, cancel := drainContext(ctx, s.cfg.DrainTimeout)
		err := s.settle(dctx, rd, dlq, msgs, b)
		cancel()
		if err != nil {
			return err
		}
	}
	s.log.Info("stopped")
	return nil
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

// newReader returns the consumer-group reader.
func (s *Settler) newReader() *kafka.Reader {
	return kafka.NewReader(kafka.ReaderConfig{
		Brokers:           s.cfg.Brokers,
		GroupID:           s.cfg.Group,
		Topic:             s.cfg.Topic,
		MinBytes:          1,
		MaxBytes:          16 << 20,
		MaxWait:           250 * time.Millisecond,
		QueueCapacity:     max(100, min(s.cfg.Batch, 10000)),
		CommitInterval:    0, // synchronous: CommitMessages returns once the broker has the offsets
		StartOffset:       kafka.FirstOffset,
		HeartbeatInterval: s.cfg.SessionTimeout / 5,
		SessionTimeout:    s.cfg.SessionTimeout,
		RebalanceTimeout:  s.cfg.SessionTimeout,
		ReadBackoffMin:    50 * time.Millisecond,
		ReadBackoffMax:    time.Second,
		ErrorLogger:       kafka.LoggerFunc(func(f string, a ...any) { s.log.Warn("kafka reader: " + fmt.Sprintf(f, a...)) }),
	})
}

// watchStall signals stalled when the group's committed lag (claims in the topic not yet
// committed by anyone, asked of the broker) stays above zero while this settler settles
// nothing for StallTimeout with its ledger breaker closed. It also exports that lag.
func (s *Settler) watchStall(ctx context.Context, stalled chan<- struct{}) {
	client := &kafka.Client{Addr: kafka.TCP(s.cfg.Brokers...), Timeout: 5 * time.Second}
	tick := time.NewTicker(max(s.cfg.StallTimeout/6, 100*time.Millisecond))
	defer tick.Stop()
	lastWork, lastChange := s.work(), time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		lag, err := groupLag(ctx, client, s.cfg.Group, s.cfg.Topic)
		if err != nil {
			continue // the broker is down: nothing to tell
		}
		s.mGroupLag.Set(lag)
		if w := s.work(); w != lastWork || lag == 0 || s.br.State() != BreakerClosed {
			lastWork, lastChange = w, time.Now()
			s.stalled.Store(false)
			continue
		}
		if time.Since(lastChange) >= s.cfg.StallTimeout {
			// Not ready until something settles again: whatever watches /readyz sees it.
			s.stalled.Store(true)
			s.log.Error("consumer stalled: claims are waiting but nothing was settled; restarting the group reader",
				"group_lag", lag, "for", time.Since(lastChange).Round(time.Second))
			select {
			case stalled <- struct{}{}:
			default:
			}
			lastChange = time.Now()
		}
	}
}

// work counts the claims this settler has dealt with (posted, duplicate, dead-lettered).
func (s *Settler) work() uint64 {
	n := s.mPosted.Value() + s.mDup.Value()
	for _, c := range s.mDLQ {
		n += c.Value()
	}
	return n
}

// groupLag asks the broker how many claims of topic the group has not committed yet,
// over all partitions, whoever owns them.
func groupLag(ctx context.Context, c *kafka.Client, group, topic string) (int64, error) {
	meta, err := c.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		return 0, err
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
		return 0, fmt.Errorf("topic %s has no partitions", topic)
	}
	committed, err := c.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{topic: parts}})
	if err != nil {
		return 0, err
	}
	first, err := listOffsets(ctx, c, topic, parts, false)
	if err != nil {
		return 0, err
	}
	last, err := listOffsets(ctx, c, topic, parts, true)
	if err != nil {
		return 0, err
	}
	done := map[int]int64{}
	for _, po := range committed.Topics[topic] {
		if po.Error != nil {
			return 0, po.Error
		}
		done[po.Partition] = po.CommittedOffset
	}
	var lag int64
	for _, p := range parts {
		// A partition the group never committed is absent or -1: it starts at the start.
		from, ok := done[p]
		if !ok || from < 0 {
			from = first[p]
		}
		lag += max(0, last[p]-from)
	}
	return lag, nil
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
	dead     []kafka.Message
}

// settle validates, dead-letters, posts and commits one batch. Nothing is committed
// unless everything before it succeeded.
func (s *Settler) settle(ctx context.Context, rd *kafka.Reader, dlq *kafka.Writer, msgs []kafka.Message, b *batch) error {
	b.postings, b.dead = b.postings[:0], b.dead[:0]
	for i := range msgs {
		p, reason, detail := s.cfg.Validator.Check(msgs[i].Value)
		if reason != "" {
			b.dead = append(b.dead, deadLetter(&msgs[i], reason, detail))
			continue
		}
		b.postings = append(b.postings, p)
	}
	if len(b.postings) > 0 {
		var res ledger.Result
		err := s.retry(ctx, "post", func(actx context.Context) error {
			start := time.Now()
			var err error
			res, err = s.cfg.Ledger.Post(actx, b.postings)
			if err == nil {
				s.mPostLatency.ObserveDuration(time.Since(start))
			}
			return err
		})
		if err != nil {
			return err
		}
		s.mPosted.Add(uint64(res.Posted))
		s.mDup.Add(uint64(res.Duplicates))
		s.mAmount.Add(uint64(res.Amount))
	}
	if len(b.dead) > 0 {
		if err := s.retryWith(ctx, "dead-letter", nil, s.mDLQErrs, func(actx context.Context) error {
			return dlq.WriteMessages(actx, b.dead...)
		}); err != nil {
			return err
		}
		for i := range b.dead {
			s.mDLQ[string(b.dead[i].Headers[0].Value)].Inc()
		}
		s.log.Warn("claims dead-lettered", "count", len(b.dead), "topic", s.dlqTopic)
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
// ErrConflict: retrying cannot change the answer). Every failure counts
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
		if errors.Is(err, ledger.ErrInvalid) || errors.Is(err, ledger.ErrConflict) {
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

// deadLetter wraps a rejected claim for the dead-letter topic: the value is a JSON
// envelope {"reason","detail","topic","partition","offset","claim"} where claim is the
// original message (embedded as JSON when it is JSON, else as a string), and the
// headers repeat the reason (first header, read back by settle) and the source.
func deadLetter(m *kafka.Message, reason, detail string) kafka.Message {
	env := struct {
		Reason    string          `json:"reason"`
		Detail    string          `json:"detail"`
		Topic     string          `json:"topic"`
		Partition int             `json:"partition"`
		Offset    int64           `json:"offset"`
		Claim     json.RawMessage `json:"claim"`
	}{Reason: reason, Detail: detail, Topic: m.Topic, Partition: m.Partition, Offset: m.Offset}
	if json.Valid(m.Value) {
		env.Claim = m.Value
	} else {
		env.Claim, _ = json.Marshal(string(m.Value))
	}
	v, err := json.Marshal(env)
	if err != nil {
		panic("BUG: dead letter envelope: " + err.Error())
	}
	return kafka.Message{
		Key:   m.Key,
		Value: v,
		Headers: []kafka.Header{
			{Key: "reason", Value: []byte(reason)},
			{Key: "source", Value: []byte(m.Topic + "/" + strconv.Itoa(m.Partition) + "/" + strconv.FormatInt(m.Offset, 10))},
		},
	}
}
