package query

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"shake/ticket"
)

func newTestSession() (*ticket.SessionKey, error) { return ticket.NewSessionKey(testSessionKey) }

func newRequest(method, url, body string) (*http.Request, error) {
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	return http.NewRequest(method, url, r)
}

func readAll(t *testing.T, resp *http.Response) []byte {
	t.Helper()
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// rawGet sends a GET over a bare TCP connection (net/http refuses some oddities).
func rawGet(t *testing.T, addr, target string) (int, string) {
	t.Helper()
	return rawRequest(t, addr, "GET "+target+" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
}

// rawRequest writes raw on a new connection and reads the response.
func rawRequest(t *testing.T, addr, raw string) (int, string) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	b := readAll(t, resp)
	return resp.StatusCode, string(b)
}
