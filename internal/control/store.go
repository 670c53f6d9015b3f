package control

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"

	"shake/internal/obs"
	"shake/ticket"
)

// SwitchesPath is the admin endpoint of the switches document.
const SwitchesPath = "/admin/switches"

// DefaultApplyTimeout bounds how long a PUT waits for the requests that started under
// the old switches to finish.
const DefaultApplyTimeout = 10 * time.Second

// Options is what a server takes from the command line for its switches.
type Options struct {
	// File persists the document (--switches): read at start, written (fsync, rename)
	// before a PUT answers 200, reread on SIGHUP. "" keeps it in memory only.
	File string
	// AdminKey is the raw admin key of the role (--admin-key admin-ROLE.key); without it
	// every PUT is refused.
	AdminKey []byte
	// Reset (--switches-reset) starts from the default document, version 0, whatever
	// File holds, and writes that to File before serving: the operator's way out of a
	// hostile document (a version no change can follow). Given knowingly: every switch
	// the file held is gone.
	Reset bool
}

// Config configures New.
type Config struct {
	Options
	Role string // "edge", "verifier" or "settler": the section exported as gauges
	// Apply compiles doc into the role's hot-path value and publishes it (Live.Publish),
	// returning once it is in force. It must refuse (and change nothing) a document the
	// role cannot honour.
	Apply func(ctx context.Context, doc *ticket.Switches) error
	// Check, when set, refuses a document that names what the campaign does not have
	// (a round, a shard), with a *ticket.FieldError; it runs before anything is
	// written or applied, at start, on PUT and on SIGHUP.
	Check        func(doc *ticket.Switches) error
	ApplyTimeout time.Duration // default DefaultApplyTimeout
	Logger       *slog.Logger
	Registry     *obs.Registry
}

// Store holds a server's switches document: it answers GET and PUT /admin/switches,
// persists and reloads the document, logs every change and exports it as metrics.
type Store struct {
	cfg   Config
	token []byte // the expected "Bearer <token>" header value; nil without a key
	log   *slog.Logger

	mu  sync.Mutex // serialises changes (PUT, SIGHUP)
	cur atomicDoc

	stopHUP context.CancelFunc
	hupDone chan struct{}
}

// atomicDoc is the current document for readers outside mu (GET, metrics).
type atomicDoc struct {
	mu sync.RWMutex
	d  *ticket.Switches
}

func (a *atomicDoc) load() *ticket.Switches {
	a.mu.RLock()
	defer a.mu.RUnlock()
	return a.d
}

func (a *atomicDoc) store(d *ticket.Switches) {
	a.mu.Lock()
	a.d = d
	a.mu.Unlock()
}

// New builds the store, loads and applies the file when there is one (a missing file
// starts from the defaults; an invalid one is an error: the operator must look), and
// starts rereading the file on SIGHUP. Call Close when the server stops.
func New(cfg Config) (*Store, error) {
	if cfg.Apply == nil {
		panic("BUG: control.New without Apply")
	}
	if cfg.ApplyTimeout <= 0 {
		cfg.ApplyTimeout = DefaultApplyTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Registry == nil {
		cfg.Registry = obs.NewRegistry()
	}
	s := &Store{cfg: cfg, log: cfg.Logger.With("component", "switches")}
	if cfg.AdminKey != nil {
		s.token = bearer(cfg.AdminKey)
	} else {
		s.log.Warn("no --admin-key: PUT /admin/switches is refused, switches cannot be changed")
	}
	doc := ticket.DefaultSwitches()
	if cfg.Reset {
		if err := s.reset(); err != nil {
			return nil, err
		}
	} else if cfg.File == "" {
		s.log.Warn("no --switches file: switches changed at run time will not survive a restart")
	} else if d, err := readFile(cfg.File); err == nil {
		doc = d
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("switches file %s: %w", cfg.File, err)
	} else {
		s.log.Info("switches file does not exist yet: starting from the defaults", "file", cfg.File)
	}
	if err := s.check(doc); err != nil {
		return nil, fmt.Errorf("switches file %s: %w", cfg.File, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.ApplyTimeout)
	defer cancel()
	if err := cfg.Apply(ctx, doc); err != nil {
		return nil, fmt.Errorf("switches file %s: %w", cfg.File, err)
	}
	s.cur.store(doc)
	s.registerMetrics()
	if doc.Version > 0 {
		s.log.Info("switches loaded", "file", cfg.File, "version", doc.Version, "switches", string(doc.JSON()))
	}
	if cfg.File != "" {
		hctx, stop := context.WithCancel(context.Background())
		s.stopHUP, s.hupDone = stop, make(chan struct{})
		hup := make(chan os.Signal, 1)
		signal.Notify(hup, syscall.SIGHUP)
		go func() {
			defer close(s.hupDone)
			defer signal.Stop(hup)
			for {
				select {
				case <-hctx.Done():
					return
				case <-hup:
					if err := s.Reload(); err != nil {
						s.log.Error("SIGHUP: switches file not applied", "file", cfg.File, "err", err)
					}
				}
			}
		}()
	}
	return s, nil
}

// reset replaces the switches file with the default document (--switches-reset),
// logging what it held.
func (s *Store) reset() error {
	if s.cfg.File == "" {
		s.log.Warn("--switches-reset without --switches: starting from the defaults, as always")
		return nil
	}
	old, err := os.ReadFile(s.cfg.File)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("--switches-reset: %w", err)
	}
	if len(old) > ticket.MaxSwitchesBytes {
		old = old[:ticket.MaxSwitchesBytes]
	}
	if err := writeFile(s.cfg.File, ticket.DefaultSwitches()); err != nil {
		return fmt.Errorf("--switches-reset: cannot write %s: %w", s.cfg.File, err)
	}
	s.log.Warn("--switches-reset: the switches file is replaced by the defaults, version 0",
		"file", s.cfg.File, "old", string(bytes.TrimSpace(old)))
	return nil
}

// Close stops rereading the file on SIGHUP. A nil Store is closed already.
func (s *Store) Close() {
	if s != nil && s.stopHUP != nil {
		s.stopHUP()
		<-s.hupDone
		s.stopHUP = nil
	}
}

// Current returns the document in force.
func (s *Store) Current() *ticket.Switches { return s.cur.load() }

// Reload rereads the file (SIGHUP). A document identical to the current one is a no-op;
// a different one must carry a higher version.
func (s *Store) Reload() error {
	d, err := readFile(s.cfg.File)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := s.cur.load()
	if bytes.Equal(d.JSON(), cur.JSON()) {
		return nil
	}
	if d.Version <= cur.Version {
		return &ticket.FieldError{Field: "version", Reason: fmt.Sprintf("%d is not above the current %d", d.Version, cur.Version)}
	}
	return s.applyLocked(d, "sighup", false)
}

// ReadFile reads and validates a switches file as a start loads it, without applying
// it (the servers' --dry-run). A missing file is an error wrapping os.ErrNotExist.
func ReadFile(path string) (*ticket.Switches, error) { return readFile(path) }

// readFile reads and validates a switches file, refusing one another user could have
// written (checkTrusted).
func readFile(path string) (*ticket.Switches, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if err := checkTrusted(path, fi); err != nil {
		return nil, err
	}
	b, err := io.ReadAll(io.LimitReader(f, ticket.MaxSwitchesBytes+1))
	if err != nil {
		return nil, err
	}
	return ticket.ParseSwitches(b)
}

// writeFile replaces path with d atomically and durably: a temporary file in the same
// directory, fsynced, renamed over path, and the directory fsynced.
func writeFile(path string, d *ticket.Switches) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if _, err := f.Write(append(d.JSON(), '\n')); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	ok = true
	df, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer df.Close()
	return df.Sync()
}

// applyLocked persists (when persist and there is a file), applies, logs and records
// d. s.mu is held.
func (s *Store) applyLocked(d *ticket.Switches, source string, persist bool) error {
	if err := s.check(d); err != nil {
		return err
	}
	old := s.cur.load()
	if persist && s.cfg.File != "" {
		if err := writeFile(s.cfg.File, d); err != nil {
			return fmt.Errorf("cannot write %s: %w", s.cfg.File, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.ApplyTimeout)
	defer cancel()
	err := s.cfg.Apply(ctx, d)
	// Whatever Apply says, from here on new requests run under d (Apply refuses before
	// publishing), so the record follows it.
	s.cur.store(d)
	of, nf := old.Fields(), d.Fields()
	for i := range nf {
		if of[i].Value != nf[i].Value {
			s.log.Info("switch changed", "switch", nf[i].Key, "old", of[i].Value, "new", nf[i].Value,
				"version", d.Version, "source", source)
		}
	}
	return err
}

// check runs Config.Check, if any.
func (s *Store) check(d *ticket.Switches) error {
	if s.cfg.Check == nil {
		return nil
	}
	return s.cfg.Check(d)
}

// Auth reports whether ctx carries the admin token. Without a configured key nothing
// is authorised.
func (s *Store) Auth(ctx *fasthttp.RequestCtx) bool { return authorized(ctx, s.token) }

// bearer is the Authorization header value an admin key's token gives.
func bearer(key []byte) []byte { return []byte("Bearer " + ticket.AdminToken(key)) }

// authorized reports whether ctx carries want ("Bearer <token>"); a nil want authorises
// nothing.
func authorized(ctx *fasthttp.RequestCtx, want []byte) bool {
	if want == nil {
		return false
	}
	return subtle.ConstantTimeCompare(ctx.Request.Header.Peek(fasthttp.HeaderAuthorization), want) == 1
}

// TokenAuth is the admin check of a server without switches (the query server, reconcile
// --watch): the request must carry key's token. A nil key authorises nothing.
func TokenAuth(key []byte) func(*fasthttp.RequestCtx) bool {
	var want []byte
	if key != nil {
		want = bearer(key)
	}
	return func(ctx *fasthttp.RequestCtx) bool { return authorized(ctx, want) }
}

// Wire returns c with the admin listener's /admin/... handler and its token check set
// to this store's.
func (s *Store) Wire(c obs.Common) obs.Common {
	c.Admin, c.AdminAuth = s.Handler, s.Auth
	return c
}

// Handler serves /admin/switches (GET: the document; PUT: replace it) and 404s any
// other /admin/ path.
func (s *Store) Handler(ctx *fasthttp.RequestCtx) {
	if string(ctx.Path()) != SwitchesPath {
		obs.NotFound(ctx)
		return
	}
	switch {
	case ctx.IsGet() || ctx.IsHead():
		obs.WriteJSON(ctx, fasthttp.StatusOK, s.cur.load().JSON())
	case ctx.IsPut():
		s.put(ctx)
	default:
		obs.MethodNotAllowed(ctx, "GET, HEAD, PUT")
	}
}

// errorBody is a refusal of a PUT.
type errorBody struct {
	Error   string `json:"error"`
	Field   string `json:"field,omitempty"`
	Message string `json:"message"`
	Current uint64 `json:"current_version"`
}

func (s *Store) refuse(ctx *fasthttp.RequestCtx, status int, code, field, msg string) {
	b, _ := json.Marshal(errorBody{Error: code, Field: field, Message: msg, Current: s.cur.load().Version})
	obs.WriteJSON(ctx, status, b)
	s.log.Warn("switches change refused", "status", status, "error", code, "field", field, "message", msg, "remote", ctx.RemoteIP().String())
}

func (s *Store) put(ctx *fasthttp.RequestCtx) {
	if s.token == nil {
		s.refuse(ctx, fasthttp.StatusUnauthorized, "unauthorized", "", "this server has no --admin-key: switches cannot be changed")
		return
	}
	if !s.Auth(ctx) {
		s.refuse(ctx, fasthttp.StatusUnauthorized, "unauthorized", "", "missing or wrong admin token (Authorization: Bearer <shake admin token>)")
		return
	}
	d, err := ticket.ParseSwitches(ctx.PostBody())
	if err != nil {
		var fe *ticket.FieldError
		if errors.As(err, &fe) {
			s.refuse(ctx, fasthttp.StatusBadRequest, "bad_switches", fe.Field, fe.Error())
		} else {
			s.refuse(ctx, fasthttp.StatusBadRequest, "bad_switches", "", err.Error())
		}
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := s.cur.load()
	if d.Version <= cur.Version {
		s.refuse(ctx, fasthttp.StatusConflict, "stale_version", "version",
			"version "+strconv.FormatUint(d.Version, 10)+" is not above the current "+strconv.FormatUint(cur.Version, 10))
		return
	}
	if d.Version-cur.Version > ticket.MaxSwitchesVersionStep {
		s.refuse(ctx, fasthttp.StatusConflict, "version_jump", "version",
			"version "+strconv.FormatUint(d.Version, 10)+" is more than "+strconv.Itoa(ticket.MaxSwitchesVersionStep)+
				" above the current "+strconv.FormatUint(cur.Version, 10))
		return
	}
	if err := s.applyLocked(d, "put", true); err != nil {
		var fe *ticket.FieldError
		switch {
		case errors.As(err, &fe):
			s.refuse(ctx, fasthttp.StatusBadRequest, "bad_switches", fe.Field, fe.Error())
		case errors.Is(err, context.DeadlineExceeded):
			s.refuse(ctx, fasthttp.StatusServiceUnavailable, "not_confirmed", "", err.Error())
		default:
			s.refuse(ctx, fasthttp.StatusInternalServerError, "internal", "", err.Error())
		}
		return
	}
	obs.WriteJSON(ctx, fasthttp.StatusOK, d.JSON())
}

// registerMetrics exports the version and one gauge per switch of the role's section.
func (s *Store) registerMetrics() {
	r := s.cfg.Registry
	r.GaugeFunc("shake_switches_version", "Version of the switches document in force.", func() float64 { return float64(s.cur.load().Version) })
	for _, k := range ticket.SwitchKeys() {
		sec, name, _ := cutDot(k)
		if sec != s.cfg.Role {
			continue
		}
		key := k
		r.GaugeFunc("shake_switch", "Each switch of this server's section: booleans 1/0, lists their length, per_user -1 when null.",
			func() float64 { return switchValue(s.cur.load(), key) }, "switch", sec+"."+name)
	}
}

func cutDot(k string) (string, string, bool) {
	for i := 0; i < len(k); i++ {
		if k[i] == '.' {
			return k[:i], k[i+1:], true
		}
	}
	return k, "", false
}

// switchValue is one switch as a gauge value.
func switchValue(d *ticket.Switches, key string) float64 {
	b := func(v bool) float64 {
		if v {
			return 1
		}
		return 0
	}
	switch key {
	case "edge.paused":
		return b(d.Edge.Paused)
	case "edge.closed_rounds":
		return float64(len(d.Edge.ClosedRounds))
	case "edge.pace_factor":
		return d.Edge.PaceFactor
	case "edge.shed_ratio":
		return d.Edge.ShedRatio
	case "edge.retry_after_ms":
		return float64(d.Edge.RetryAfterMs)
	case "edge.per_user":
		if d.Edge.PerUser == nil {
			return -1
		}
		return float64(*d.Edge.PerUser)
	case "verifier.open_paused":
		return b(d.Verifier.OpenPaused)
	case "verifier.revoked_shards":
		return float64(len(d.Verifier.RevokedShards))
	case "verifier.message":
		return float64(len(d.Verifier.Message))
	case "settler.paused":
		return b(d.Settler.Paused)
	}
	return 0
}
