package verifier

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"

	ikafka "shake/internal/kafka"
	"shake/internal/obs"
	"shake/ticket"
)

// Errors of the durable path; each makes an open answer 503.
var (
	ErrQueueFull = errors.New("claim queue is full")
	ErrClosed    = errors.New("verifier is shutting down")
)

// op is one request's state, pooled so that the hot path allocates nothing: the token
// scratch space, the claim being made durable and the channel its result comes back on.
type op struct {
	tok     ticket.TicketToken
	scratch [ticket.TokenRawLen]byte
	key     []byte
	value   []byte
	resp    []byte
	done    chan error
	// leaked is set by the writer when kafka-go may still hold key and value (a write
	// that was cut short by its deadline): the op must then not be reused.
	leaked bool
}

var opPool = sync.Pool{New: func() any {
	return &op{
		key:   make([]byte, 0, 24),
		value: make([]byte, 0, ticket.MaxClaimLen),
		resp:  make([]byte, 0, 256),
		done:  make(chan error, 1),
	}
}}

func getOp() *op { return opPool.Get().(*op) }

func putOp(o *op) {
	if o.leaked {
		return
	}
	o.key, o.value, o.resp = o.key[:0], o.value[:0], o.resp[:0]
	opPool.Put(o)
}

// durableConfig configures the durable path.
type durableConfig struct {
	Brokers       []string
	Topic         string
	QueueSize     int
	BatchMax      int
	Producers     int
	BatchTimeout  time.Duration
	KafkaTimeout  time.Duration
	DownFor       time.Duration
	ReplayBackoff time.Duration
	Kafka         *ikafka.Security // TLS and SASL; nil is plain text
	// TopicOpen reports whether the claims topic passed its policy (nil: always):
	// until then claims are spooled and the spool is not replayed.
	TopicOpen func() bool
}

// durable makes claims durable: a bounded queue that concurrent requests append to,
// Producers writer goroutines that each take whatever is queued (up to BatchMax) as one
// batch, write it to Kafka with acks from every in-sync replica and, when Kafka fails,
// append the same batch to the spool with one fsync. A replayer moves spooled claims to
// Kafka, in order, when it is reachable again.
type durable struct {
	cfg durableConfig
	w   *kafka.Writer
	sp  *spool
	log *slog.Logger

	mu     sync.RWMutex // guards closed against the close of queue
	closed bool
	queue  chan *op
	wg     sync.WaitGroup

	// downUntil (unix nanos) is when the live path next tries Kafka after a failure;
	// until then batches go straight to the spool instead of each waiting out a timeout.
	downUntil atomic.Int64
	wake      chan struct{}
	stopRep   context.CancelFunc
	repDone   chan struct{}

	mProduced, mSpooled, mReplayed, mKafkaErr, mSpoolErr, mQueueFull *obs.Counter
	mProduce, mBatch                                                 *obs.Histogram
}

// kafkaBatchSize is kafka-go's per-partition batch size (see newDurable).
const kafkaBatchSize = 64

var batchBuckets = []float64{1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096}

// newDurable starts the writers and the replayer. The writer never creates the topic:
// operators do (shake topics create), with the replication money needs, not whatever
// the brokers default to; a write to a missing topic fails and its claims wait in the
// spool.
func newDurable(cfg durableConfig, sp *spool, reg *obs.Registry, log *slog.Logger) *durable {
	d := &durable{
		cfg: cfg,
		sp:  sp,
		log: log,
		w: &kafka.Writer{
			Addr:  kafka.TCP(cfg.Brokers...),
			Topic: cfg.Topic,
			// Key = ticket id; the hash spreads claims over partitions and keeps any
			// repeat of one ticket in one partition.
			Balancer:     &kafka.Hash{},
			RequiredAcks: kafka.RequireAll,
			Async:        false,
			// kafka-go allocates a []Message of BatchSize for every partition batch it
			// opens, so BatchSize is the expected claims per partition per linger, not our
			// group size: 1024 made each small write allocate ~160 KB per partition and
			// the GC dominated the verifier's CPU. A fuller partition simply opens another
			// batch; our groups of up to BatchMax claims still go in one WriteMessages.
			BatchSize:  kafkaBatchSize,
			BatchBytes: int64(cfg.BatchMax) * ticket.MaxClaimLen,
			// kafka-go's default is 1 s, which would add a second to every open.
			BatchTimeout:           cfg.BatchTimeout,
			MaxAttempts:            2,
			WriteBackoffMin:        10 * time.Millisecond,
			WriteBackoffMax:        100 * time.Millisecond,
			ReadTimeout:            cfg.KafkaTimeout,
			WriteTimeout:           cfg.KafkaTimeout,
			AllowAutoTopicCreation: false, // operators create topics: see newDurable
			Transport: cfg.Kafka.Secure(&kafka.Transport{
				DialTimeout: cfg.KafkaTimeout,
				IdleTimeout: 30 * time.Second,
				// Short, since kafka-go refreshes leaders only on this timer, never on a
				// NOT_LEADER answer: after a leader move, writes to that partition fail
				// (and spool) until the next refresh.
				MetadataTTL: time.Second,
			}),
		},
		queue:      make(chan *op, cfg.QueueSize),
		wake:       make(chan struct{}, 1),
		repDone:    make(chan struct{}),
		mProduced:  reg.Counter("shake_verifier_claims_produced_total", "Claims acknowledged by Kafka on the live path."),
		mSpooled:   reg.Counter("shake_verifier_claims_spooled_total", "Claims fsynced to the spool because Kafka failed."),
		mReplayed:  reg.Counter("shake_verifier_spool_replayed_total", "Spooled claims replayed to Kafka."),
		mKafkaErr:  reg.Counter("shake_verifier_kafka_errors_total", "Failed Kafka writes (live and replay)."),
		mSpoolErr:  reg.Counter("shake_verifier_spool_errors_total", "Failed spool appends (full or I/O)."),
		mQueueFull: reg.Counter("shake_verifier_queue_full_total", "Opens refused because the claim queue was full."),
		mProduce:   reg.Histogram("shake_verifier_produce_seconds", "Latency of Kafka writes of claim batches.", obs.LatencyBuckets),
		mBatch:     reg.Histogram("shake_verifier_batch_claims", "Claims per durable batch.", batchBuckets),
	}
	reg.GaugeFunc("shake_verifier_queue_depth", "Claims waiting for a writer.", func() float64 { return float64(len(d.queue)) })
	reg.GaugeFunc("shake_verifier_kafka_up", "1 while the live path writes to Kafka, 0 while it spools.", func() float64 {
		if d.kafkaUp() {
			return 1
		}
		return 0
	})
	reg.GaugeFunc("shake_verifier_spool_bytes", "Spooled bytes not yet replayed.", func() float64 { return float64(sp.pendingBytes.Load()) })
	reg.GaugeFunc("shake_verifier_spool_records", "Spooled claims not yet replayed.", func() float64 { return float64(sp.pendingRecs.Load()) })
	for i := 0; i < cfg.Producers; i++ {
		d.wg.Add(1)
		go d.writer()
	}
	rctx, cancel := context.WithCancel(context.Background())
	d.stopRep = cancel
	go d.replayer(rctx)
	return d
}

func (d *durable) kafkaUp() bool {
	return d.topicOpen() && time.Now().UnixNano() >= d.downUntil.Load()
}

// topicOpen reports whether claims may be written to the topic (its policy passed).
func (d *durable) topicOpen() bool { return d.cfg.TopicOpen == nil || d.cfg.TopicOpen() }

// writable reports whether a claim can be made durable somewhere right now.
func (d *durable) writable() bool {
	if d.kafkaUp() {
		return true
	}
	return !d.sp.lastErr.Load() && d.sp.pendingBytes.Load() < d.sp.maxBytes
}

// submit queues o without blocking; the result arrives on o.done.
func (d *durable) submit(o *op) error {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed {
		return ErrClosed
	}
	select {
	case d.queue <- o:
		return nil
	default:
		d.mQueueFull.Inc()
		return ErrQueueFull
	}
}

// writer takes batches off the queue until it is closed and drained. It does not wait
// to fill a batch: while one batch is being written the queue fills up, so batches grow
// with the load and an idle verifier adds no delay.
func (d *durable) writer() {
	defer d.wg.Done()
	ops := make([]*op, 0, d.cfg.BatchMax)
	msgs := make([]kafka.Message, 0, d.cfg.BatchMax)
	recs := make([]spoolRecord, 0, d.cfg.BatchMax)
	for o := range d.queue {
		ops = append(ops[:0], o)
	fill:
		for len(ops) < d.cfg.BatchMax {
			select {
			case o, ok := <-d.queue:
				if !ok {
					break fill
				}
				ops = append(ops, o)
			default:
				break fill
			}
		}
		d.mBatch.Observe(float64(len(ops)))
		errs := d.persist(ops, msgs, recs)
		for i, o := range ops {
			o.done <- errs(i)
			ops[i] = nil
		}
	}
}

// persist makes ops durable and returns each op's result.
func (d *durable) persist(ops []*op, msgs []kafka.Message, recs []spoolRecord) func(int) error {
	failed := ops
	var werrs kafka.WriteErrors
	if d.kafkaUp() {
		msgs = msgs[:0]
		for _, o := range ops {
			msgs = append(msgs, kafka.Message{Key: o.key, Value: o.value})
		}
		ctx, cancel := context.WithTimeout(context.Background(), d.cfg.KafkaTimeout)
		start := time.Now()
		err := d.w.WriteMessages(ctx, msgs...)
		cancel()
		d.mProduce.ObserveDuration(time.Since(start))
		if err == nil {
			d.mProduced.Add(uint64(len(ops)))
			return func(int) error { return nil }
		}
		d.mKafkaErr.Inc()
		if leaderMoved(err) {
			// Routine during a leader election or a rolling restart; counted in
			// shake_verifier_kafka_errors_total, not worth a warning per batch. Spool
			// only briefly: the metadata refresh is at most MetadataTTL away. (A broker
			// that is shutting down may say the same, so not zero: each live batch
			// would wait on it.)
			d.downUntil.Store(time.Now().Add(min(leaderMoveBackoff, d.cfg.DownFor)).UnixNano())
			d.log.Debug("partition leader moved; spooling", "claims", len(ops), "err", err)
		} else {
			d.downUntil.Store(time.Now().Add(d.cfg.DownFor).UnixNano())
			d.log.Warn("kafka write failed; spooling", "claims", len(ops), "err", err)
		}
		if !errors.As(err, &werrs) || len(werrs) != len(ops) {
			werrs = nil
			// Cut short: kafka-go may still send these buffers later.
			for _, o := range ops {
				o.leaked = true
			}
		} else {
			failed = failed[:0:0]
			for i, o := range ops {
				if werrs[i] != nil {
					failed = append(failed, o)
				}
			}
		}
	}
	recs = recs[:0]
	for _, o := range failed {
		recs = append(recs, spoolRecord{Key: o.key, Value: o.value})
	}
	serr := d.sp.append(recs)
	if serr != nil {
		d.mSpoolErr.Inc()
		d.log.Error("spool append failed", "claims", len(recs), "err", serr)
	} else {
		d.mSpooled.Add(uint64(len(recs)))
		select {
		case d.wake <- struct{}{}:
		default:
		}
	}
	return func(i int) error {
		if werrs != nil && werrs[i] == nil {
			return nil
		}
		return serr
	}
}

// replayer moves spooled claims to Kafka in spool order, one batch at a time, and
// advances the spool's replay offset after each acknowledged batch.
func (d *durable) replayer(ctx context.Context) {
	defer close(d.repDone)
	var (
		buf     []byte
		recs    []spoolRecord
		msgs    []kafka.Message
		backoff = d.cfg.ReplayBackoff
	)
	sleep := func(t time.Duration) bool {
		select {
		case <-ctx.Done():
			return false
		case <-d.wake:
			return true
		case <-time.After(t):
			return true
		}
	}
	for ctx.Err() == nil {
		if !d.topicOpen() {
			// The claims topic has not passed its policy: what is spooled stays there.
			if !sleep(250 * time.Millisecond) {
				return
			}
			continue
		}
		var (
			end   cursor
			bytes int64
			err   error
		)
		recs, buf, end, bytes, err = d.sp.readBatch(d.cfg.BatchMax, buf, recs)
		if err != nil {
			d.log.Error("spool read failed", "err", err)
			if !sleep(time.Second) {
				return
			}
			continue
		}
		if len(recs) == 0 {
			if end != d.sp.cursor() {
				// The cursor stepped over an exhausted sealed segment: drop it.
				if err := d.sp.commit(end, 0, 0); err != nil {
					d.log.Error("spool commit failed", "err", err)
					if !sleep(time.Second) {
						return
					}
				}
				continue
			}
			if !sleep(250 * time.Millisecond) {
				return
			}
			continue
		}
		msgs = msgs[:0]
		for _, r := range recs {
			msgs = append(msgs, kafka.Message{Key: r.Key, Value: r.Value})
		}
		wctx, cancel := context.WithTimeout(ctx, d.cfg.KafkaTimeout)
		start := time.Now()
		err = d.w.WriteMessages(wctx, msgs...)
		cancel()
		if err != nil {
			buf = nil // kafka-go may still hold the old buffer
			if !d.replayFailed(err, len(recs), &backoff, sleep) {
				return
			}
			continue
		}
		d.mProduce.ObserveDuration(time.Since(start))
		backoff = d.cfg.ReplayBackoff
		if err := d.sp.commit(end, len(recs), bytes); err != nil {
			d.log.Error("spool commit failed", "err", err)
		}
		d.mReplayed.Add(uint64(len(recs)))
		d.downUntil.Store(0)
		d.log.Info("replayed spooled claims", "claims", len(recs), "left", d.sp.pendingRecs.Load())
	}
}

// replayFailed counts and logs a failed replay of n claims and waits before the next
// attempt: briefly after a leader move (Kafka is up and the metadata at most MetadataTTL
// old), else backoff, which doubles up to 2 s. It returns false when stopped meanwhile.
func (d *durable) replayFailed(err error, n int, backoff *time.Duration, sleep func(time.Duration) bool) bool {
	d.mKafkaErr.Inc()
	d.log.Warn("spool replay failed", "claims", n, "err", err)
	if leaderMoved(err) {
		return sleep(d.cfg.ReplayBackoff)
	}
	d.downUntil.Store(time.Now().Add(d.cfg.DownFor).UnixNano())
	ok := sleep(*backoff)
	*backoff = min(*backoff*2, 2*time.Second)
	return ok
}

// close stops taking claims, lets the writers flush or spool everything queued, stops
// the replayer and closes the Kafka writer and the spool. What stays in the spool is
// replayed at the next start.
func (d *durable) close() error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil
	}
	d.closed = true
	close(d.queue)
	d.mu.Unlock()
	d.wg.Wait()
	d.stopRep()
	<-d.repDone
	werr := d.w.Close()
	serr := d.sp.close()
	if serr != nil {
		return fmt.Errorf("cannot close spool: %w", serr)
	}
	if werr != nil {
		d.log.Warn("kafka writer close", "err", werr)
	}
	return nil
}

// leaderMoveBackoff is how long the live path spools after a write failed only because
// partition leaders moved.
const leaderMoveBackoff = 250 * time.Millisecond

// leaderMoved reports whether every failure in err says that a partition's leader has
// moved (a leader election, a rolling restart): Kafka is up and kafka-go's metadata,
// refreshed every MetadataTTL, will point at the new leader shortly. The failed claims
// are spooled, and the live path tries Kafka again after leaderMoveBackoff, not DownFor.
func leaderMoved(err error) bool {
	var werrs kafka.WriteErrors
	if !errors.As(err, &werrs) {
		return isLeaderMove(err)
	}
	n := 0
	for _, e := range werrs {
		if e == nil {
			continue
		}
		if !isLeaderMove(e) {
			return false
		}
		n++
	}
	return n > 0
}

func isLeaderMove(err error) bool {
	return errors.Is(err, kafka.NotLeaderForPartition) || errors.Is(err, kafka.LeaderNotAvailable)
}
