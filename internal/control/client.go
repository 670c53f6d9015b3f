package control

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/valyala/fasthttp"

	"shake/ticket"
)

// Client changes the switches of many servers at once (shake ctl, the demo). It learns
// each server's role from its /healthz and sends a server only the token of its role,
// derived from Key; reads carry no token at all.
type Client struct {
	// Key is the operator's admin.key (every role's token is derived from it) or one
	// role's admin key (it reaches that role's servers only). nil: reads only.
	Key     []byte
	Timeout time.Duration // per request, default 15s (a PUT waits for in-flight requests)
}

// Result is one server's outcome.
type Result struct {
	Server string
	Role   string           // from the server's /healthz ("" when it could not be learned)
	Doc    *ticket.Switches // the document the server confirmed (nil on failure)
	Err    error
	Note   string // a change that worked but not as asked (a version of its own)
}

// maxCatchUpSteps bounds the extra PUTs that walk a server far behind the fleet's
// version up to it, MaxSwitchesVersionStep at a time.
const maxCatchUpSteps = 16

// ErrVersionExhausted reports a server whose version leaves no room for another change:
// a hostile document; restart that server with --switches-reset.
var ErrVersionExhausted = errors.New("no version left above the current")

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

// do sends one request (with Authorization: Bearer token unless token is "") and
// returns the status and body.
func (c *Client) do(method, url, token string, body []byte) (int, []byte, error) {
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.Header.SetMethod(method)
	req.SetRequestURI(url)
	if token != "" {
		req.Header.Set(fasthttp.HeaderAuthorization, "Bearer "+token)
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

// Role asks a server's admin listener which role it has (its /healthz "role").
func (c *Client) Role(server string) (string, error) {
	status, body, err := c.do(fasthttp.MethodGet, NormalizeServer(server)+"/healthz", "", nil)
	if err != nil {
		return "", err
	}
	var h struct {
		Status string `json:"status"`
		Role   string `json:"role"`
	}
	if status != fasthttp.StatusOK || json.Unmarshal(body, &h) != nil || h.Role == "" {
		return "", fmt.Errorf("GET /healthz: %d %s: does not name the server's role", status, strings.TrimSpace(string(body)))
	}
	return h.Role, nil
}

// Get reads one server's document (no token: the document is not a secret).
func (c *Client) Get(server string) (*ticket.Switches, error) {
	status, body, err := c.do(fasthttp.MethodGet, NormalizeServer(server)+SwitchesPath, "", nil)
	if err != nil {
		return nil, err
	}
	if status != fasthttp.StatusOK {
		return nil, fmt.Errorf("GET %s: %d %s", SwitchesPath, status, strings.TrimSpace(string(body)))
	}
	return ticket.ParseSwitches(body)
}

// Put replaces the document of one server of role; it returns the document the server
// confirmed.
func (c *Client) Put(server, role string, d *ticket.Switches) (*ticket.Switches, error) {
	if c.Key == nil {
		return nil, errors.New("no admin key: switches cannot be changed")
	}
	token, err := ticket.TokenForRole(c.Key, role)
	if err != nil {
		return nil, err
	}
	status, body, err := c.do(fasthttp.MethodPut, NormalizeServer(server)+SwitchesPath, token, d.JSON())
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

// Show learns every server's role and reads its document, in parallel.
func (c *Client) Show(servers []string) []Result {
	out := make([]Result, len(servers))
	var wg sync.WaitGroup
	for i, s := range servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i].Server = s
			if out[i].Role, out[i].Err = c.Role(s); out[i].Err == nil {
				out[i].Doc, out[i].Err = c.Get(s)
			}
		}()
	}
	wg.Wait()
	return out
}

// Change applies change to every server's own document and puts it back with one
// version, above every server's current one, so the fleet agrees on what version N
// means; each server gets only its role's token. Servers whose document could not be
// read are not changed (their Result says why). change must be deterministic: it runs
// once per server.
//
// A server far behind that version (another holds a hostile one) is walked up to it
// with its own document, MaxSwitchesVersionStep at a time, at most maxCatchUpSteps
// times; beyond that, or when the highest version has no successor, it gets its own
// version plus one and its Result's Note says so: a hostile version never stops a
// change. Only a server that itself holds the highest version is refused (ctl never
// wraps): restart it with --switches-reset.
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
		r := &out[i]
		if r.Err != nil {
			r.Err = fmt.Errorf("not changed: %w", r.Err)
			continue
		}
		cur := r.Doc
		if cur.Version >= ticket.MaxSwitchesVersion {
			r.Doc, r.Err = nil, fmt.Errorf("not changed: %w: it holds %d, the highest there is (a hostile document: restart it with --switches-reset)",
				ErrVersionExhausted, cur.Version)
			continue
		}
		d := *cur
		if err := change(&d); err != nil {
			r.Doc, r.Err = nil, err
			continue
		}
		d.Version = top + 1
		if top >= ticket.MaxSwitchesVersion || d.Version-cur.Version > maxCatchUpSteps*ticket.MaxSwitchesVersionStep {
			d.Version = cur.Version + 1
			r.Note = fmt.Sprintf("given version %d, its own plus one: another server holds version %d, out of reach (a hostile document? see --switches-reset)", d.Version, top)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.Doc, r.Err = c.catchUpAndPut(r.Server, r.Role, cur, &d)
		}()
	}
	wg.Wait()
	return out
}

// catchUpAndPut puts d on a server whose document is cur. A server more than
// MaxSwitchesVersionStep behind d's version is first walked up with its own document
// unchanged, one bounded step at a time.
func (c *Client) catchUpAndPut(server, role string, cur, d *ticket.Switches) (*ticket.Switches, error) {
	for d.Version-cur.Version > ticket.MaxSwitchesVersionStep {
		step := *cur
		step.Version = cur.Version + ticket.MaxSwitchesVersionStep
		got, err := c.Put(server, role, &step)
		if err != nil {
			return nil, fmt.Errorf("catching up from version %d: %w", cur.Version, err)
		}
		cur = got
	}
	return c.Put(server, role, d)
}
