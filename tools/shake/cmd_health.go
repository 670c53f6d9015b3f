package main

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"
)

func init() {
	register(command{name: "health", summary: "exit 0 when a URL answers 2xx, else 1 (a container healthcheck)", run: runHealth})
}

const healthUsage = `
Usage: shake health URL [--timeout 2s]

Sends GET URL and exits 0 when it answers 2xx within --timeout, 1 otherwise with one line
on stderr saying why (refused, timed out, or the status and the start of the body). It is
the healthcheck of an image with no shell and no curl:
  healthcheck: {test: ["CMD", "/usr/local/bin/shake", "health", "http://127.0.0.1:9080/readyz"]}
Redirects are not followed and proxy variables are ignored: the check is of this URL.
Exit 2 on bad usage (no URL, a URL that is not http or https, a timeout not > 0).
`

// healthBodyMaxBytes bounds how much of an answer is read: enough for the reason a
// /readyz gives, never a whole page.
const healthBodyMaxBytes = 512

func runHealth(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("health", healthUsage, stderr)
	timeout := fs.Duration("timeout", 2*time.Second, "how long to wait for the whole answer")
	if ok, code := parseFlagsArgs(fs, args, 1, 1); !ok {
		return code
	}
	if *timeout <= 0 {
		return usageError(stderr, "health: --timeout must be > 0")
	}
	target := fs.Arg(0)
	u, err := url.Parse(target)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return usageError(stderr, "health: URL %q is not an http:// or https:// URL", target)
	}
	status, body, err := healthGet(u.String(), *timeout)
	if err != nil {
		fmt.Fprintf(stderr, "shake health: %s: %v\n", target, err)
		return 1
	}
	if status < 200 || status > 299 {
		fmt.Fprintf(stderr, "shake health: %s: answered %d %q\n", target, status, body)
		return 1
	}
	fmt.Fprintf(stdout, "ok %d %s\n", status, target)
	return 0
}

// healthGet sends one GET and returns the status and the start of the body.
func healthGet(target string, timeout time.Duration) (status int, body string, err error) {
	client := &http.Client{
		Timeout:   timeout,
		Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true},
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
	defer client.CloseIdleConnections()
	resp, err := client.Get(target)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, healthBodyMaxBytes))
	if err != nil {
		return 0, "", fmt.Errorf("reading the answer: %w", err)
	}
	return resp.StatusCode, string(b), nil
}
