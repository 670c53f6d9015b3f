package verifier

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"

	"shake/internal/obs"
	"shake/ticket"
)

// The rebuild: before a verifier answers its first open, it reads every claim already
// made durable (every partition of the claims topic from its first offset up to the end
// offset it had when the rebuild began, and then whatever its own spool still holds) and
// marks each ticket as opened by its uid, counting it against the user's rule when the
// uid is of this verifier's uid shard. Only then is /readyz ready, so that every answer
// after a restart, kill -9 included, is the one given before it: the same 200 for a
// ticket the user opened, 409 already_opened for someone else's, 409 limit_reached for
// one beyond the rule.
//
// The topic is not trusted: a claim counts only if it is of this campaign, names a
// ticket inside the manifest, and carries a valid verifier signature. It is read with
// plain partition readers (no consumer group: nothing is committed, and the settler's
// group is left alone), one goroutine per partition up to twice the number of cores,
// since parsing and checking claims is the cost (ticket.ScanClaim reads the form the
// verifier writes without encoding/json, which cost ten times the rest). A topic that cannot be read is retried with
// backoff, each failure logged, and the verifier stays not ready meanwhile: serving
// without the topic's knowledge would let a restarted verifier pay a user beyond the
// rule or hand a ticket's 200 to a second user.

// restoreResult is what one restored claim did.
type restoreResult uint8

const (
	restoreCounted       restoreResult = iota // a ticket newly opened by one of our users, counted
	restoreMarked                             // a ticket newly opened by another shard's user
	restoreRepeat                             // already known (a repeat of the same claim)
	restoreLost                               // the ticket is held by another uid: not counted
	restoreMalformed                          // not a claim
	restoreOtherCampaign                      // a claim of another campaign on the same topic
	restoreBadClaim                           // this campaign's name, but outside the manifest or unsigned
	numRestoreResults
)

var restoreNames = [numRestoreResults]string{"counted", "marked", "repeat", "conflict", "malformed",
	"other_campaign", "bad_claim"}

// rebuildState is the rebuild's progress and metrics.
type rebuildState struct {
	counts  [numRestoreResults]atomic.Uint64
	metrics [numRestoreResults]*obs.Counter
	done    atomic.Bool
	failing atomic.Bool // the last attempt to read the claims topic failed
	cancel  context.CancelFunc
	exited  chan struct{}
	seconds atomic.Uint64 // float64 bits: time from New to ready
	errors  *obs.Counter
}

func (r *rebuildState) add(res restoreResult) {
	r.counts[res].Add(1)
	r.metrics[res].Inc()
}

// restoreValue checks one durable claim (from the topic or the spool) and records it.
func (s *Server) restoreValue(value []byte) restoreResult {
	// The fast path reads what a verifier writes; anything else (another producer's
	// spelling, or garbage) goes through the full JSON decoder.
	var c ticket.Claim
	if !ticket.ScanClaim(value, &c) {
		var err error
		if c, err = ticket.ParseClaim(value); err != nil {
			return restoreMalformed
		}
	}
	if c.Campaign != s.campaign {
		return restoreOtherCampaign
	}
	if !s.man.InShard(c.Shard, c.Ticket) || s.man.RoundOf(c.Shard, c.Ticket) != c.Round || !s.signer.Verify(&c) {
		return restoreBadClaim
	}
	own := s.ownUID(c.UID)
	if !s.table.restore(c.Shard, c.Ticket, c.UID, own) {
		if s.table.heldBy(c.Shard, c.Ticket, s.table.fingerprint(c.UID)) {
			return restoreRepeat
		}
		return restoreLost
	}
	if !own {
		return restoreMarked
	}
	if s.users != nil {
		s.users.restore(c.UID, uint16(c.Round))
	}
	return restoreCounted
}

// kafkaDialer returns the dialer the rebuild reads the topic with (TLS and SASL as
// configured for the writers).
func (s *Server) kafkaDialer() *kafka.Dialer {
	d := s.cfg.Kafka.Dialer(s.cfg.KafkaTimeout)
	d.ClientID = "shake-verifier-rebuild"
	return d
}

// partState is one partition's progress: the rebuild reads [next, end).
type partState struct {
	id        int
	next, end int64
	started   bool
}

// rebuildTopic reads the claims topic until every partition is read up to its end
// offset at the start of the rebuild, retrying what fails with backoff until ctx ends.
func (s *Server) rebuildTopic(ctx context.Context) error {
	backoff := 100 * time.Millisecond
	var parts []*partState
	for attempt := 1; ; attempt++ {
		if parts == nil {
			ps, err := s.topicPartitions(ctx)
			if err == nil && len(ps) == 0 {
				err = fmt.Errorf("topic %s has no partitions", s.cfg.Topic)
			}
			if err == nil {
				s.rb.failing.Store(false)
				for _, p := range ps {
					parts = append(parts, &partState{id: p})
				}
			} else {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				s.rb.failing.Store(true)
				s.rb.errors.Inc()
				s.log.Warn("cannot read the claims topic to rebuild; retrying", "topic", s.cfg.Topic,
					"attempt", attempt, "retry_in", backoff, "err", err)
				if !sleepCtx(ctx, backoff) {
					return ctx.Err()
				}
				backoff = min(backoff*2, 5*time.Second)
				continue
			}
		}
		err := s.readPartitions(ctx, parts)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		s.rb.failing.Store(true)
		s.rb.errors.Inc()
		s.log.Warn("claims topic read failed during the rebuild; retrying the unfinished partitions",
			"topic", s.cfg.Topic, "attempt", attempt, "retry_in", backoff, "err", err)
		if !sleepCtx(ctx, backoff) {
			return ctx.Err()
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

// topicPartitions asks the brokers, in turn, for the topic's partitions.
func (s *Server) topicPartitions(ctx context.Context) ([]int, error) {
	d := s.kafkaDialer()
	var errs []error
	for _, b := range s.cfg.Brokers {
		conn, err := d.DialContext(ctx, "tcp", b)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		_ = conn.SetDeadline(time.Now().Add(s.cfg.KafkaTimeout))
		ps, err := conn.ReadPartitions(s.cfg.Topic)
		conn.Close()
		if err != nil {
			errs = append(errs, err)
			continue
		}
		ids := make([]int, 0, len(ps))
		for _, p := range ps {
			if p.Topic == s.cfg.Topic {
				ids = append(ids, p.ID)
			}
		}
		return ids, nil
	}
	return nil, errors.Join(errs...)
}

// readPartitions reads the unfinished partitions in parallel and returns the first
// error (the others keep their progress for the next attempt).
func (s *Server) readPartitions(ctx context.Context, parts []*partState) error {
	work := make(chan *partState, len(parts))
	for _, p := range parts {
		if !p.started || p.next < p.end {
			work <- p
		}
	}
	close(work)
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
	)
	// Twice the cores: while one reader waits for a fetch, another parses.
	for range min(len(parts), 2*max(2, runtime.GOMAXPROCS(0))) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for p := range work {
				if err := s.readPartition(ctx, p); err != nil {
					mu.Lock()
					if first == nil {
						first = fmt.Errorf("partition %d: %w", p.id, err)
					}
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	return first
}

// rebuildFetchBytes bounds one fetch of the rebuild (about 20,000 claims).
const rebuildFetchBytes = 8 << 20

// readPartition reads p from p.next up to p.end (fixed at its first visit).
func (s *Server) readPartition(ctx context.Context, p *partState) error {
	d := s.kafkaDialer()
	var conn *kafka.Conn
	var errs []error
	for _, b := range s.cfg.Brokers {
		c, err := d.DialLeader(ctx, "tcp", b, s.cfg.Topic, p.id)
		if err == nil {
			conn = c
			break
		}
		errs = append(errs, err)
	}
	if conn == nil {
		return errors.Join(errs...)
	}
	defer conn.Close()
	// Closing the connection is what interrupts a fetch when ctx ends.
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	_ = conn.SetDeadline(time.Now().Add(s.cfg.KafkaTimeout))
	first, last, err := conn.ReadOffsets()
	if err != nil {
		return err
	}
	if !p.started {
		p.next, p.end, p.started = first, last, true
	}
	// Retention may have removed the start meanwhile; what is gone is gone for the
	// settler too (and is already in the ledger).
	p.next = max(p.next, first)
	for p.next < p.end {
		if _, err := conn.Seek(p.next, kafka.SeekAbsolute|kafka.SeekDontCheck); err != nil {
			return err
		}
		_ = conn.SetDeadline(time.Now().Add(2 * s.cfg.KafkaTimeout))
		b := conn.ReadBatchWith(kafka.ReadBatchConfig{MinBytes: 1, MaxBytes: rebuildFetchBytes, MaxWait: 500 * time.Millisecond})
		for {
			m, err := b.ReadMessage()
			if err != nil {
				if !errors.Is(err, io.EOF) {
					b.Close()
					return err
				}
				break
			}
			if m.Offset >= p.end {
				p.next = p.end
				break
			}
			s.rb.add(s.restoreValue(m.Value))
			p.next = m.Offset + 1
		}
		if err := b.Close(); err != nil {
			return err
		}
		// A batch can end in offsets that hold no message (compacted records, control
		// records): the connection's offset is past them, so the loop always advances.
		if o, _ := conn.Offset(); o > p.next {
			p.next = min(o, p.end)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	return nil
}

// sleepCtx sleeps for d or until ctx ends, and reports whether it slept the whole time.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// registerRebuildMetrics registers the rebuild's metrics.
func (s *Server) registerRebuildMetrics(reg *obs.Registry) {
	for i := range s.rb.metrics {
		s.rb.metrics[i] = reg.Counter("shake_verifier_rebuild_claims_total",
			"Durable claims read at start (topic and spool), by what they did.", "result", restoreNames[i])
	}
	s.rb.errors = reg.Counter("shake_verifier_rebuild_errors_total", "Failed attempts to read the claims topic at start.")
	reg.GaugeFunc("shake_verifier_rebuild_seconds", "Time from start to ready: the rebuild from the spool and the claims topic.",
		func() float64 { return math.Float64frombits(s.rb.seconds.Load()) })
	reg.GaugeFunc("shake_verifier_rebuilding", "1 until the rebuild is done (opens answer 503 meanwhile).", func() float64 {
		if s.rb.done.Load() {
			return 0
		}
		return 1
	})
	reg.GaugeFunc("shake_verifier_user_table_bytes", "Memory of the per-user rule's table.", func() float64 { return float64(s.users.bytes()) })
	reg.GaugeFunc("shake_verifier_user_table_entries", "(user, round) entries in the per-user rule's table.", func() float64 { return float64(s.users.entries()) })
}

// restored returns the claims restored so far (tickets newly marked as opened).
func (r *rebuildState) restored() uint64 {
	return r.counts[restoreCounted].Load() + r.counts[restoreMarked].Load()
}

// startRebuild starts the topic gate's checks and reads the claims topic in the
// background, and makes the server ready when it is done.
func (s *Server) startRebuild() {
	s.startGate()
	ctx, cancel := context.WithCancel(context.Background())
	s.rb.cancel = cancel
	s.rb.exited = make(chan struct{})
	go func() {
		defer close(s.rb.exited)
		if err := s.rebuildTopic(ctx); err != nil {
			s.log.Warn("rebuild stopped before it was done; the verifier never became ready", "err", err)
			return
		}
		s.finishRebuild()
	}()
}

// finishRebuild records the rebuild's time and makes the server ready.
func (s *Server) finishRebuild() {
	secs := time.Since(s.started).Seconds()
	s.rb.seconds.Store(math.Float64bits(secs))
	s.rb.done.Store(true)
	args := []any{"rebuild_seconds", secs, "user_table_bytes", s.users.bytes(), "user_table_entries", s.users.entries()}
	for i := range s.rb.counts {
		args = append(args, "claims_"+restoreNames[i], s.rb.counts[i].Load())
	}
	s.log.Info("verifier ready", args...)
	if n := s.rb.counts[restoreBadClaim].Load(); n > 0 {
		s.log.Warn("claims of this campaign on the topic were ignored: outside the manifest or without a valid verifier signature",
			"claims", n, "topic", s.cfg.Topic)
	}
}

// stopRebuild stops a rebuild still running and waits for it.
func (s *Server) stopRebuild() {
	if s.rb.cancel != nil {
		s.rb.cancel()
		<-s.rb.exited
	}
}
