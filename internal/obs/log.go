package obs

import (
	"context"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
)

// NewLogger returns a slog logger writing to w at level and above, as JSON lines when
// format is "json" and as logfmt-style text for anything else (the CLI validates the
// format before calling this).
func NewLogger(w io.Writer, format string, level slog.Level) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// SignalContext returns a context cancelled on SIGINT or SIGTERM; call the cancel
// function to stop listening for the signals.
func SignalContext(parent context.Context) (context.Context, context.CancelFunc) {
	return signal.NotifyContext(parent, os.Interrupt, syscall.SIGTERM)
}
