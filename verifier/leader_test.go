package verifier

import (
	"errors"
	"fmt"
	"io"
	"testing"

	"github.com/segmentio/kafka-go"
)

// TestLeaderMoved: only failures that all say "the leader moved" keep the live path on
// Kafka; anything else (a broker down, a timeout) spools for DownFor as before.
func TestLeaderMoved(t *testing.T) {
	for _, c := range []struct {
		err  error
		want bool
	}{
		{kafka.NotLeaderForPartition, true},
		{fmt.Errorf("write: %w", kafka.LeaderNotAvailable), true},
		{kafka.WriteErrors{nil, kafka.NotLeaderForPartition, kafka.NotLeaderForPartition}, true},
		{kafka.WriteErrors{nil, kafka.NotLeaderForPartition, io.EOF}, false},
		{kafka.WriteErrors{nil, nil}, false},
		{io.ErrUnexpectedEOF, false},
		{errors.New("dial tcp: connection refused"), false},
		{kafka.RequestTimedOut, false},
	} {
		if got := leaderMoved(c.err); got != c.want {
			t.Errorf("leaderMoved(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}
