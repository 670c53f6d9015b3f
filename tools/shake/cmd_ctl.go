package main

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"shake/internal/control"
	"shake/ticket"
)

func init() {
	register(command{name: "ctl", summary: "show or change the switches of running servers (show, set, pause, resume)", run: runCtl})
}

const ctlUsage = `
Usage: shake ctl --servers URL[,URL...] show [--json]
       shake ctl --admin-key admin.key --servers URL[,URL...] set KEY=VALUE...
       shake ctl --admin-key admin.key --servers URL[,URL...] pause | resume

Reads or changes the switches document of every server named by --servers: their admin
listeners (edge and verifier --admin-listen, the settler's --listen), as host:port or
http://host:port. ctl first asks each server's /healthz for its role, and sends each
server only the token of its role, derived from the operator's admin.key (a role's own
admin-ROLE.key reaches that role's servers only). 'show' sends no token at all: the
document is no secret.

Every change is fanned out with one version, one above every server's current one, and
each server answers only once the change is in force (and written to its --switches
file). One line per server names its role and which of the changed switches act there;
then one line per changed switch says how many servers of its role confirmed it. Exit 1
unless every server confirmed and every changed switch reached at least one server of
its role ("edge.paused reached 0 edges": nothing was paused).

  show               a table of each server's role, version and its role's switches;
                     --json prints one JSON object per server instead
  set KEY=VALUE...   changes switches in each server's own document, for example
                     edge.shed_ratio=0.5 edge.closed_rounds=0,2 verifier.revoked_shards=3
                     edge.per_user=null verifier.message="back soon" settler.paused=true
  pause              closes the whole event: edge.paused=true (every shake answers closed)
  resume             reopens it: edge.paused=false

Keys: ` + "edge.paused, edge.closed_rounds, edge.pace_factor, edge.shed_ratio, edge.retry_after_ms, edge.per_user, verifier.open_paused, verifier.revoked_shards, verifier.message, settler.paused" + `.

A version is at most 2^53-1 and a server refuses a jump of more than 2^20 above its
current one; ctl walks a server that fell far behind up in such steps, and never wraps.
`

func runCtl(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("ctl", ctlUsage, stderr)
	keyPath := fs.String("admin-key", "", "the operator's admin.key `file` (required to change; show needs none)")
	servers := fs.String("servers", "", "admin listeners, comma-separated `URL` list (required)")
	timeout := fs.Duration("timeout", 15*time.Second, "per-server request timeout")
	asJSON := fs.Bool("json", false, "show: one JSON object per server instead of a table")
	if ok, code := parseFlagsArgs(fs, args, 1, -1); !ok {
		return code
	}
	if err := requireFlag(fs, "servers"); err != nil {
		return usageError(stderr, "ctl: %v", err)
	}
	var list []string
	for _, s := range strings.Split(*servers, ",") {
		if s = strings.TrimSpace(s); s != "" {
			list = append(list, control.NormalizeServer(s))
		}
	}
	if len(list) == 0 {
		return usageError(stderr, "ctl: --servers names no server")
	}
	if *timeout <= 0 {
		return usageError(stderr, "ctl: --timeout must be > 0")
	}
	c := &control.Client{Timeout: *timeout}
	if *keyPath != "" {
		k, err := ticket.ReadKeyFile(*keyPath)
		if err != nil {
			return usageError(stderr, "ctl: --admin-key: %v", err)
		}
		c.Key = k
	}
	rest := fs.Args()
	verb := rest[0]
	if *asJSON && verb != "show" {
		return usageError(stderr, "ctl: --json applies to show only")
	}
	sets, code := ctlSets(verb, rest[1:], stderr)
	if code >= 0 {
		return code
	}
	if verb == "show" {
		return ctlShow(stdout, c.Show(list), *asJSON)
	}
	if c.Key == nil {
		return usageError(stderr, "ctl: %s: --admin-key is required to change switches", verb)
	}
	change := func(d *ticket.Switches) error {
		for _, kv := range sets {
			if err := d.Set(kv[0], kv[1]); err != nil {
				return err
			}
		}
		return nil
	}
	var keys []string
	for _, kv := range sets {
		if !slices.Contains(keys, kv[0]) {
			keys = append(keys, kv[0])
		}
	}
	return ctlReport(stdout, c.Change(list, change), keys)
}

// ctlSets parses the action's arguments into KEY=VALUE pairs, each checked on the
// defaults first (a typo is a usage error before any server is touched). code is -1 to
// go on, else the exit code.
func ctlSets(verb string, args []string, stderr io.Writer) (sets [][2]string, code int) {
	switch verb {
	case "show":
		if len(args) > 0 {
			return nil, usageError(stderr, "ctl: show takes no arguments, got %q", args[0])
		}
		return nil, -1
	case "pause", "resume":
		if len(args) > 0 {
			return nil, usageError(stderr, "ctl: %s takes no arguments, got %q", verb, args[0])
		}
		sets = [][2]string{{"edge.paused", fmt.Sprint(verb == "pause")}}
	case "set":
		if len(args) == 0 {
			return nil, usageError(stderr, "ctl: set needs at least one KEY=VALUE")
		}
		for _, kv := range args {
			k, v, ok := strings.Cut(kv, "=")
			if !ok {
				return nil, usageError(stderr, "ctl: set: %q is not KEY=VALUE", kv)
			}
			sets = append(sets, [2]string{k, v})
		}
	default:
		return nil, usageError(stderr, "ctl: unknown action %q (want show, set, pause or resume)", verb)
	}
	probe := ticket.DefaultSwitches()
	for _, kv := range sets {
		if err := probe.Set(kv[0], kv[1]); err != nil {
			return nil, usageError(stderr, "ctl: %s: %v", verb, err)
		}
	}
	return sets, -1
}

// rolePlural names the servers of a role in ctl's summary lines.
func rolePlural(role string, n int) string {
	if n == 1 {
		return role
	}
	if role == ticket.RoleQuery {
		return "query servers"
	}
	return role + "s"
}

// ctlReport prints one line per server (its role, and which of the changed keys act
// there) and one per changed key (how many servers of its role confirmed it), and
// returns 0 only when every server confirmed and every key reached its role.
func ctlReport(stdout io.Writer, res []control.Result, keys []string) int {
	code := 0
	reached := make(map[string]int)
	for _, r := range res {
		role := r.Role
		if role == "" {
			role = "unknown-role"
		}
		var applies []string
		for _, k := range keys {
			if sec, _, _ := strings.Cut(k, "."); sec == r.Role {
				applies = append(applies, k)
			}
		}
		where := "applies: " + strings.Join(applies, ",")
		switch {
		case r.Role == "":
			where = "applies: unknown (its role could not be learned)"
		case len(applies) == 0:
			where = fmt.Sprintf("applies: nothing (the %s acts on %s.* only)", role, role)
		}
		if r.Err != nil {
			code = 1
			fmt.Fprintf(stdout, "%s %s FAILED %v (%s)\n", r.Server, role, r.Err, where)
			continue
		}
		for _, k := range applies {
			reached[k]++
		}
		line := fmt.Sprintf("%s %s ok version %d %s", r.Server, role, r.Doc.Version, where)
		if r.Note != "" {
			line += "; " + r.Note
		}
		fmt.Fprintln(stdout, line)
	}
	for _, k := range keys {
		sec, _, _ := strings.Cut(k, ".")
		n := reached[k]
		fmt.Fprintf(stdout, "%s reached %d %s\n", k, n, rolePlural(sec, n))
		if n == 0 {
			code = 1
		}
	}
	return code
}

// ctlShowRow is one server in `ctl show --json`.
type ctlShowRow struct {
	Server   string          `json:"server"`
	Role     string          `json:"role,omitempty"`
	Version  *uint64         `json:"version,omitempty"`
	Switches json.RawMessage `json:"switches,omitempty"`
	Error    string          `json:"error,omitempty"`
}

// ctlShow prints every server's document, a table or JSON lines, and returns 0 only
// when every server answered.
func ctlShow(stdout io.Writer, res []control.Result, asJSON bool) int {
	code := 0
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	if !asJSON {
		fmt.Fprintln(tw, "SERVER\tROLE\tVERSION\tSWITCHES")
	}
	for _, r := range res {
		if r.Err != nil {
			code = 1
		}
		if asJSON {
			row := ctlShowRow{Server: r.Server, Role: r.Role}
			if r.Err != nil {
				row.Error = r.Err.Error()
			} else {
				row.Version, row.Switches = &r.Doc.Version, r.Doc.JSON()
			}
			b, _ := json.Marshal(row)
			fmt.Fprintf(stdout, "%s\n", b)
			continue
		}
		if r.Err != nil {
			fmt.Fprintf(tw, "%s\t%s\t-\tFAILED %v\n", r.Server, orDash(r.Role), r.Err)
			continue
		}
		var sw []string
		for _, f := range r.Doc.Fields() {
			if sec, name, _ := strings.Cut(f.Key, "."); sec == r.Role {
				sw = append(sw, name+"="+f.Value)
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\n", r.Server, r.Role, r.Doc.Version, strings.Join(sw, " "))
	}
	tw.Flush()
	return code
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
