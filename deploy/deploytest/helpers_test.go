package deploytest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"shake/internal/testbin"
)

// deployDir is the deploy/ directory of the repository.
func deployDir(t *testing.T) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	return filepath.Dir(filepath.Dir(file))
}

// tool returns the path of a command, or skips the test naming the Debian package.
func tool(t *testing.T, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("%s not installed (Debian package %s; .ci/run installs it): skipping", name, pkg)
	}
	return p
}

// shakeBinary returns the shake binary for the whole-process tests, built once.
func shakeBinary(t *testing.T) string { return testbin.Shake(t) }

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// alertNames returns the alert names of a rules file, in order.
func alertNames(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, m := range regexp.MustCompile(`(?m)^\s*- alert:\s*(\S+)\s*$`).FindAllSubmatch(b, -1) {
		names = append(names, string(m[1]))
	}
	return names
}

var httpClient = &http.Client{Timeout: 5 * time.Second}

// getJSON fetches url into v.
func getJSON(url string, v any) error {
	resp, err := httpClient.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	b.ReadFrom(resp.Body)
	if resp.StatusCode != 200 {
		return fmt.Errorf("%s: %s: %s", url, resp.Status, strings.TrimSpace(b.String()))
	}
	return json.Unmarshal(b.Bytes(), v)
}

// waitHTTP waits until url answers 200.
func waitHTTP(t *testing.T, url string, within time.Duration) {
	t.Helper()
	for deadline := time.Now().Add(within); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if resp, err := httpClient.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
	}
	t.Fatalf("%s never answered 200 within %v", url, within)
}

// tail returns the last n bytes of b.
func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}
