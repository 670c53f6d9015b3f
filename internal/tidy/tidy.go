// Package tidy holds the house rules that gofmt and go vet do not check, as functions
// over a file's path and contents, so that TestTidy can apply them to the whole module
// and its unit tests to synthetic input:
//
//   - a function is at most MaxFuncLines lines and a .go file at most MaxFileLines, unless
//     it is on the allowlist, which can only shrink: a listed one that grew, or that no
//     longer needs to be listed, fails too;
//   - nothing refers to a file or document outside the repository;
//   - no issue numbers in code or docs: a comment or a test name says the property it
//     guards;
//   - the roles (edge, verifier, settler, query) never import each other, and ticket
//     imports nothing of the module;
//   - every relative link of a Markdown file names a file that exists and, with an
//     anchor, a heading of it, except targets on a list of documents not written yet,
//     which can only shrink too (links.go).
//
// Test files count (they are read and changed as often as the code); files marked
// "Code generated ... DO NOT EDIT." do not. third_party/ is upstream code and is skipped.
package tidy

import (
	"bufio"
	"bytes"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// The limits of the house.
const (
	MaxFuncLines = 70
	MaxFileLines = 600
)

// Long is a function or a file over its limit. Func is empty for a whole file.
type Long struct {
	Path  string // slash-separated, relative to the module root
	Func  string // "Name" or "Recv.Name"; "" for the file itself
	Lines int
}

// Key names the entry in the allowlist.
func (l Long) Key() string {
	if l.Func == "" {
		return "file " + l.Path
	}
	return "func " + l.Path + ":" + l.Func
}

// Problem is one broken rule, with where it was found.
type Problem struct {
	Path string
	Line int
	What string
}

func (p Problem) String() string {
	switch {
	case p.Path == "":
		return p.What
	case p.Line > 0:
		return fmt.Sprintf("%s:%d: %s", p.Path, p.Line, p.What)
	}
	return p.Path + ": " + p.What
}

var generated = regexp.MustCompile(`(?m)^// Code generated .* DO NOT EDIT\.$`)

// GoLengths returns the file (when over MaxFileLines) and every function or method
// (when over MaxFuncLines) of one .go source that breaks the length rules. A function's
// length runs from its func keyword to its closing brace. Generated files return nil.
func GoLengths(path string, src []byte) ([]Long, error) {
	if generated.Match(src) {
		return nil, nil
	}
	var out []Long
	if n := countLines(src); n > MaxFileLines {
		out = append(out, Long{Path: path, Lines: n})
	}
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, path, src, parser.SkipObjectResolution)
	if err != nil {
		return nil, fmt.Errorf("tidy: cannot parse %s: %w", path, err)
	}
	seen := map[string]int{}
	for _, d := range f.Decls {
		fd, ok := d.(*ast.FuncDecl)
		if !ok || fd.Body == nil {
			continue
		}
		name := funcName(fd)
		if seen[name]++; seen[name] > 1 {
			name += "#" + strconv.Itoa(seen[name]) // several init functions
		}
		n := fset.Position(fd.Body.Rbrace).Line - fset.Position(fd.Type.Func).Line + 1
		if n > MaxFuncLines {
			out = append(out, Long{Path: path, Func: name, Lines: n})
		}
	}
	return out, nil
}

func funcName(fd *ast.FuncDecl) string {
	if fd.Recv == nil || len(fd.Recv.List) == 0 {
		return fd.Name.Name
	}
	t := fd.Recv.List[0].Type
	if s, ok := t.(*ast.StarExpr); ok {
		t = s.X
	}
	switch r := t.(type) {
	case *ast.IndexExpr: // generic receiver T[P]
		t = r.X
	case *ast.IndexListExpr:
		t = r.X
	}
	if id, ok := t.(*ast.Ident); ok {
		return id.Name + "." + fd.Name.Name
	}
	return fd.Name.Name
}

func countLines(src []byte) int {
	n := bytes.Count(src, []byte{'\n'})
	if len(src) > 0 && src[len(src)-1] != '\n' {
		n++
	}
	return n
}

// The patterns of text no file of the repository may hold. Each is written so that its
// own source text does not match it, so this file passes its own rules.
var textRules = []struct {
	re   *regexp.Regexp
	what string
}{
	{regexp.MustCompile(`\.\./share[d]`), "refers to the shared folder outside the repository: point at docs/"},
	{regexp.MustCompile(`\bSPE[C]\.md\b`), "refers to the contract file outside the repository: point at docs/"},
	{regexp.MustCompile(`(^|[\s"'(=:\x60])/wor[k]/`), "an absolute path outside the repository"},
	{regexp.MustCompile(`(?i)issue[s]?[ \t_#-]*[0-9]+`), "an issue number: say the property the code guards instead"},
}

// TextProblems returns every line of a text file that refers outside the repository or
// names an issue number.
func TextProblems(path string, src []byte) []Problem {
	var out []Problem
	sc := bufio.NewScanner(bytes.NewReader(src))
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	for line := 1; sc.Scan(); line++ {
		for _, r := range textRules {
			if r.re.Match(sc.Bytes()) {
				out = append(out, Problem{Path: path, Line: line, What: r.what})
			}
		}
	}
	return out
}

// Roles are the packages that never import each other (a role's subpackages, like
// settler/ledger, belong to it).
var Roles = []string{"edge", "verifier", "settler", "query"}

// ImportProblems checks the layering of one non-test .go file of package directory dir
// (slash-separated, relative to the root of module mod): a role imports no other role,
// and ticket imports nothing of the module.
func ImportProblems(mod, dir, path string, src []byte) ([]Problem, error) {
	f, err := parser.ParseFile(token.NewFileSet(), path, src, parser.ImportsOnly)
	if err != nil {
		return nil, fmt.Errorf("tidy: cannot parse %s: %w", path, err)
	}
	own := roleOf(dir)
	var out []Problem
	for _, imp := range f.Imports {
		p, _ := strconv.Unquote(imp.Path.Value)
		rel, ok := strings.CutPrefix(p, mod+"/")
		if !ok {
			continue
		}
		if dir == "ticket" {
			out = append(out, Problem{Path: path, What: "ticket imports " + p + ": the vocabulary imports nothing of the module"})
		}
		if r := roleOf(rel); r != "" && own != "" && r != own {
			out = append(out, Problem{Path: path, What: own + " imports the role " + p + ": shared things go in ticket or internal/"})
		}
	}
	return out, nil
}

func roleOf(dir string) string {
	for _, r := range Roles {
		if dir == r || strings.HasPrefix(dir, r+"/") {
			return r
		}
	}
	return ""
}

// Allowlist is the set of functions and files allowed over their limit, each with the
// length it had when listed: it may not grow.
type Allowlist map[string]int

// ParseAllowlist reads lines "file PATH LINES" and "func PATH:NAME LINES"; blank lines
// and lines starting with # are ignored.
func ParseAllowlist(src []byte) (Allowlist, error) {
	a := Allowlist{}
	sc := bufio.NewScanner(bytes.NewReader(src))
	for line := 1; sc.Scan(); line++ {
		s := strings.TrimSpace(sc.Text())
		if s == "" || strings.HasPrefix(s, "#") {
			continue
		}
		f := strings.Fields(s)
		n, err := strconv.Atoi(f[len(f)-1])
		if len(f) != 3 || (f[0] != "file" && f[0] != "func") || err != nil || n <= 0 {
			return nil, fmt.Errorf("tidy: allowlist line %d: want \"file PATH LINES\" or \"func PATH:NAME LINES\", got %q", line, s)
		}
		key := f[0] + " " + f[1]
		if _, dup := a[key]; dup {
			return nil, fmt.Errorf("tidy: allowlist line %d: %s listed twice", line, key)
		}
		a[key] = n
	}
	return a, sc.Err()
}

// Ratchet compares what is over its limit with the allowlist. It reports an unlisted
// one, a listed one that grew, and a listed one that is no longer over its limit (or no
// longer exists): the list can only shrink.
func Ratchet(longs []Long, allow Allowlist) []Problem {
	var out []Problem
	found := map[string]bool{}
	for _, l := range longs {
		key := l.Key()
		found[key] = true
		limit := MaxFuncLines
		if l.Func == "" {
			limit = MaxFileLines
		}
		listed, ok := allow[key]
		switch {
		case !ok:
			out = append(out, Problem{Path: l.Path, What: fmt.Sprintf("%s is %d lines, over the limit of %d: split it", key, l.Lines, limit)})
		case l.Lines > listed:
			out = append(out, Problem{Path: l.Path, What: fmt.Sprintf("%s grew to %d lines (allowlisted at %d, limit %d): a listed one may only shrink", key, l.Lines, listed, limit)})
		}
	}
	for key := range allow {
		if !found[key] {
			out = append(out, Problem{What: key + " is allowlisted but no longer over its limit (or gone): remove it from the allowlist"})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].String() < out[j].String() })
	return out
}

// FormatAllowlist writes the allowlist that lists exactly longs, sorted, with header
// lines saying how to regenerate it.
func FormatAllowlist(longs []Long, header string) []byte {
	lines := make([]string, 0, len(longs))
	for _, l := range longs {
		lines = append(lines, fmt.Sprintf("%s %d", l.Key(), l.Lines))
	}
	sort.Strings(lines)
	var b bytes.Buffer
	b.WriteString(header)
	for _, s := range lines {
		b.WriteString(s + "\n")
	}
	return b.Bytes()
}
