package main

import (
	"bytes"
	"strings"
	"testing"
)

// TestLogFormatCheckedOnce: every command with --log-format refuses a format other than
// text or json, from the command line or from SHAKE_LOG_FORMAT, with exit 2 and one line
// naming the flag, before it looks at anything else.
func TestLogFormatCheckedOnce(t *testing.T) {
	for _, cmd := range []string{"edge", "verifier", "settler", "broker", "query", "reconcile"} {
		for _, viaEnv := range []bool{false, true} {
			args := []string{cmd, "--log-format", "xml"}
			if viaEnv {
				t.Setenv("SHAKE_LOG_FORMAT", "xml")
				args = args[:1]
			}
			var stdout, stderr bytes.Buffer
			code := run(args, &stdout, &stderr)
			msg := stderr.String()
			if code != 2 || strings.Count(msg, "\n") != 1 || !strings.Contains(msg, "--log-format") || !strings.Contains(msg, "text or json") {
				t.Errorf("shake %s with log format xml (environment %v): exit %d, stderr %q; want 2 and one line naming --log-format", cmd, viaEnv, code, msg)
			}
		}
	}
}
