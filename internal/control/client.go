package control

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/valyala/fasthttp"

	"shake/ticket"
)

// Client changes the switches of many servers at once (shake ctl, the demo).
type Client struct {
	Token   string        // the admin token ("" sends none: reads only)
	Timeout time.Duration // per request, default 15s (a PUT waits for in-flight requests)
}

// Result is one server's outcome.
type Result struct {
	Server string
	Doc    *ticket.Switches // the document the server confirmed (nil on failure)
	Err    error
}

// NormalizeServer accepts "host:port" or an http:// URL and returns the URL base.
func NormalizeServer(s string) string {
	s = strings.TrimRight(strings.TrimSpace(s), "/")
	if !strings.HasPrefix(s, "http://") && !strings.HasPrefix(s, "https://") {
		s = "http://" + s
	}
	return s
}

func (c *Client) timeout() time.Duration {
	if c.Timeout <= 0 {
		return 15 * time.Second
	}
	return c.Timeout
}

// do sends one request and returns the status and body.
func (c *Client) do(method, url string, body []byte) (int, []byte, error) {
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.Header.SetMethod(method)
	req.SetRequestURI(url)
	if c.Token != "" {
		req.Header.Set(fasthttp.HeaderAuthorization, "Bearer "+c.Token)
	}
	if body != nil {
		req.Header.SetContentType("application/json")
		req.SetBody(body)
	}
	if err := fasthttp.DoTimeout(req, resp, c.timeout()); err != nil {
		return 0, nil, err
	}
	return resp.StatusCode(), append([]byte(nil), resp.Body()...), nil
}

// Get reads one server's document.
func (c *Client) Get(server string) (*ticket.Switches, error) {
	status, body, err := c.do(fasthttp.MethodGet, NormalizeServer(server)+SwitchesPath, nil)
	if err != nil {
		return nil, err
	}
	if status != fasthttp.StatusOK {
		return nil, fmt.Errorf("GET %s: %d %s", SwitchesPath, status, strings.TrimSpace(string(body)))
	}
	return ticket.ParseSwitches(body)
}

// Put replaces one server's document; it returns the document the server confirmed.
func (c *Client) Put(server string, d *ticket.Switches) (*ticket.Switches, error) {
	status, body, err := c.do(fasthttp.MethodPut, NormalizeServer(server)+SwitchesPath, d.JSON())
	if err != nil {
		return nil, err
	}
	if status != fasthttp.StatusOK {
		var e errorBody
		if json.Unmarshal(body, &e) == nil && e.Error != "" {
			return nil, fmt.Errorf("%d %s: %s", status, e.Error, e.Message)
		}
		return nil, fmt.Errorf("%d %s", status, strings.TrimSpace(string(body)))
	}
	return ticket.ParseSwitches(body)
}

// Show reads every server's document, in parallel.
func (c *Client) Show(servers []string) []Result {
	out := make([]Result, len(servers))
	var wg sync.WaitGroup
	for i, s := range servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d, err := c.Get(s)
			out[i] = Result{Server: s, Doc: d, Err: err}
		}()
	}
	wg.Wait()
	return out
}

// Change applies change to every server's own document and puts it back with one
// version, above every server's current one, so the fleet agrees on what version N
// means. Servers whose document could not be read are not changed (their Result says
// why). change must be deterministic: it runs once per server.
func (c *Client) Change(servers []string, change func(*ticket.Switches) error) []Result {
	out := c.Show(servers)
	var top uint64
	for _, r := range out {
		if r.Err == nil && r.Doc.Version > top {
			top = r.Doc.Version
		}
	}
	var wg sync.WaitGroup
	for i := range out {
		if out[i].Err != nil {
			out[i].Err = fmt.Errorf("not changed: cannot read its switches: %w", out[i].Err)
			continue
		}
		d := *out[i].Doc
		if err := change(&d); err != nil {
			out[i] = Result{Server: out[i].Server, Err: err}
			continue
		}
		d.Version = top + 1
		wg.Add(1)
		go func() {
			defer wg.Done()
			got, err := c.Put(out[i].Server, &d)
			out[i] = Result{Server: out[i].Server, Doc: got, Err: err}
		}()
	}
	wg.Wait()
	return out
}
