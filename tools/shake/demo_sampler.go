package main

import (
	"context"
	"fmt"
	"math"
	"sync"
	"time"

	"shake/bench"
	"shake/internal/control"
	"shake/internal/promscrape"
)

// demoSampler reads the servers' counters about once a second while the demo runs, for
// the report's charts of tickets left per shard, settlement and its lag.
type demoSampler struct {
	edges   []string // admin bases, in shard order
	settler string

	mu      sync.Mutex
	samples []bench.EventSample
	prev    []promscrape.Bucket // the settler's claim-to-commit buckets at the last sample
}

// maxDemoSamples bounds the samples kept (a day at one a second).
const maxDemoSamples = bench.MaxSeriesSeconds

// run samples every interval until ctx ends, then once more.
func (s *demoSampler) run(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		s.sample(context.Background())
		select {
		case <-ctx.Done():
			s.sample(context.Background())
			return
		case <-t.C:
		}
	}
}

// sample reads every server once; what cannot be read is NaN.
func (s *demoSampler) sample(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	smp := bench.EventSample{At: time.Now(), SettledTickets: math.NaN(), SettledAmount: math.NaN(),
		SettleLagP99: math.NaN(), KafkaLag: math.NaN()}
	for _, e := range s.edges {
		v := math.NaN()
		if ss, err := promscrape.Scrape(ctx, scrapeClient, e); err == nil {
			if left, ok := ss.Get("shake_edge_tickets_left"); ok {
				v = left
			}
		}
		smp.TicketsLeft = append(smp.TicketsLeft, v)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if ss, err := promscrape.Scrape(ctx, scrapeClient, s.settler); err == nil {
		get := func(name string) float64 {
			if v, ok := ss.Get(name); ok {
				return v
			}
			return math.NaN()
		}
		smp.SettledTickets, smp.SettledAmount = get("shake_settler_posted_total"), get("shake_settler_posted_amount_total")
		smp.KafkaLag = get("shake_settler_consumer_lag")
		now := ss.Buckets("shake_settler_claim_to_commit_seconds")
		smp.SettleLagP99 = promscrape.Quantile(0.99, promscrape.Delta(now, s.prev))
		s.prev = now
	}
	if len(s.samples) < maxDemoSamples {
		s.samples = append(s.samples, smp)
	}
}

// startSampler starts sampling the demo's servers; stop ends it and returns the samples.
func (d *demo) startSampler(edges int) (stop func() []bench.EventSample) {
	s := &demoSampler{settler: control.NormalizeServer(d.summary.Admin["settler"])}
	for i := 0; i < edges; i++ {
		s.edges = append(s.edges, control.NormalizeServer(d.summary.Admin[fmt.Sprintf("edge-%03d", i)]))
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.run(ctx, time.Second); close(done) }()
	return func() []bench.EventSample {
		cancel()
		<-done
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.samples
	}
}
