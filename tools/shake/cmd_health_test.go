package main

import (
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func runHealthCmd(args ...string) (int, string, string) {
	var out, errb strings.Builder
	code := run(append([]string{"health"}, args...), &out, &errb)
	return code, out.String(), errb.String()
}

func TestHealthExitCodes(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("/ok", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(204) })
	mux.HandleFunc("/notready", func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, `{"ready":false,"reason":"shard not loaded"}`, 503)
	})
	mux.HandleFunc("/moved", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/ok", 302) })
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(5 * time.Second):
		case <-r.Context().Done():
		}
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()

	cases := []struct {
		name, path string
		args       []string
		code       int
		why        string
	}{
		{"2xx", "/ok", nil, 0, ""},
		{"503 with its reason", "/notready", nil, 1, "answered 503"},
		{"redirect is not followed", "/moved", nil, 1, "answered 302"},
		{"timeout", "/slow", []string{"--timeout", "200ms"}, 1, "Timeout"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			start := time.Now()
			code, out, errs := runHealthCmd(append([]string{srv.URL + c.path}, c.args...)...)
			if code != c.code {
				t.Fatalf("exit %d, want %d (stdout %q stderr %q)", code, c.code, out, errs)
			}
			if c.code == 0 && (errs != "" || !strings.HasPrefix(out, "ok 204 ")) {
				t.Fatalf("ok: stdout %q stderr %q", out, errs)
			}
			if c.code == 1 {
				if !strings.Contains(errs, c.why) || strings.Count(errs, "\n") != 1 || out != "" {
					t.Fatalf("want one line with %q on stderr, got stdout %q stderr %q", c.why, out, errs)
				}
			}
			if time.Since(start) > 3*time.Second {
				t.Fatalf("took %v: --timeout not honoured", time.Since(start))
			}
		})
	}
	if _, _, errs := runHealthCmd(srv.URL + "/notready"); !strings.Contains(errs, "shard not loaded") {
		t.Fatalf("the reason of a 503 is not in the line: %q", errs)
	}
}

func TestHealthRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	code, out, errs := runHealthCmd("http://" + addr + "/healthz")
	if code != 1 || out != "" || !strings.Contains(errs, "refused") {
		t.Fatalf("closed port: exit %d stdout %q stderr %q", code, out, errs)
	}
}

func TestHealthUsage(t *testing.T) {
	for _, args := range [][]string{
		nil,
		{"127.0.0.1:8080/healthz"},
		{"ftp://127.0.0.1/x"},
		{"http://127.0.0.1:1/healthz", "--timeout", "0s"},
		{"http://127.0.0.1:1/healthz", "--timeout", "soon"},
		{"http://127.0.0.1:1/a", "http://127.0.0.1:1/b"},
	} {
		code, out, errs := runHealthCmd(args...)
		if code != 2 || out != "" || strings.Count(errs, "\n") != 1 || !strings.HasPrefix(errs, "shake health") {
			t.Errorf("%q: exit %d stdout %q stderr %q, want exit 2 and one line", args, code, out, errs)
		}
	}
}
