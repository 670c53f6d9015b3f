package tidy

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strings"
	"testing"
)

// allowlistFile holds the functions and files allowed over their limit.
const allowlistFile = "allowlist.txt"

const allowlistHeader = `# Functions and .go files over the house limits (70 and 600 lines), each with its length
# when listed. The list can only shrink: TestTidy fails on an unlisted one over its limit,
# on a listed one that grew, and on a listed one that no longer needs to be here.
# Regenerate it (after merging, say) with:
#   SHAKE_TIDY_WRITE=1 go test -count=1 -run TestTidy ./internal/tidy/
`

// TestTidy applies the house rules to every file of the module but third_party/.
// SHAKE_TIDY_WRITE=1 rewrites the allowlist to what is over its limit now instead of
// checking it.
func TestTidy(t *testing.T) {
	root, mod := moduleRoot(t)
	var longs []Long
	var problems []Problem
	for _, rel := range repoFiles(t, root) {
		src, err := os.ReadFile(filepath.Join(root, filepath.FromSlash(rel)))
		if errors.Is(err, fs.ErrNotExist) {
			continue // listed by git, deleted in the work tree
		}
		if err != nil {
			t.Fatal(err)
		}
		if isBinary(src) {
			continue
		}
		problems = append(problems, TextProblems(rel, src)...)
		if !strings.HasSuffix(rel, ".go") || strings.Contains(rel, "/testdata/") {
			continue
		}
		l, err := GoLengths(rel, src)
		if err != nil {
			t.Fatal(err)
		}
		longs = append(longs, l...)
		if !strings.HasSuffix(rel, "_test.go") {
			p, err := ImportProblems(mod, path.Dir(rel), rel, src)
			if err != nil {
				t.Fatal(err)
			}
			problems = append(problems, p...)
		}
	}
	for _, p := range problems {
		t.Error(p)
	}
	if os.Getenv("SHAKE_TIDY_WRITE") == "1" {
		if err := os.WriteFile(allowlistFile, FormatAllowlist(longs, allowlistHeader), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote %s: %d entries", allowlistFile, len(longs))
		return
	}
	src, err := os.ReadFile(allowlistFile)
	if err != nil {
		t.Fatal(err)
	}
	allow, err := ParseAllowlist(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range Ratchet(longs, allow) {
		t.Errorf("%s (regenerate: SHAKE_TIDY_WRITE=1 go test -count=1 -run TestTidy ./internal/tidy/)", p)
	}
}

// moduleRoot walks up from the package directory to go.mod and returns the root and the
// module path.
func moduleRoot(t *testing.T) (string, string) {
	dir, err := filepath.Abs(".")
	if err != nil {
		t.Fatal(err)
	}
	for {
		src, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil {
			for _, line := range strings.Split(string(src), "\n") {
				if m, ok := strings.CutPrefix(strings.TrimSpace(line), "module "); ok {
					return dir, strings.TrimSpace(m)
				}
			}
			t.Fatalf("%s/go.mod names no module", dir)
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the test's directory")
		}
		dir = parent
	}
}

// repoFiles lists the repository's files (slash-separated, relative to root), without
// third_party/: what git tracks or would track when git can tell, else every file under
// root but .git.
func repoFiles(t *testing.T, root string) []string {
	var files []string
	cmd := exec.Command("git", "ls-files", "-z", "--cached", "--others", "--exclude-standard")
	cmd.Dir = root
	if out, err := cmd.Output(); err == nil {
		for _, f := range strings.Split(string(out), "\x00") {
			if f != "" {
				files = append(files, f)
			}
		}
	} else {
		t.Logf("git ls-files: %v; walking the directory instead", err)
		err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.Name() == ".git" {
				if d.IsDir() {
					return filepath.SkipDir
				}
				return nil
			}
			if !d.IsDir() {
				rel, _ := filepath.Rel(root, p)
				files = append(files, filepath.ToSlash(rel))
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	kept := files[:0]
	for _, f := range files {
		if !strings.HasPrefix(f, "third_party/") {
			kept = append(kept, f)
		}
	}
	if len(kept) == 0 {
		t.Fatal("no files found: the check would see nothing")
	}
	return kept
}

func isBinary(src []byte) bool {
	head := src
	if len(head) > 8192 {
		head = head[:8192]
	}
	return bytes.IndexByte(head, 0) >= 0
}

// goFunc is a .go source whose function f spans exactly lines lines.
func goFunc(lines int) []byte {
	var b strings.Builder
	b.WriteString("package p\n\nfunc f() {\n")
	for i := 0; i < lines-2; i++ {
		b.WriteString("\t_ = 0\n")
	}
	b.WriteString("}\n")
	return []byte(b.String())
}

func TestFunctionOf71LinesFails(t *testing.T) {
	if l, err := GoLengths("p/ok.go", goFunc(70)); err != nil || len(l) != 0 {
		t.Fatalf("70 lines: %v, %v; want nothing over the limit", l, err)
	}
	l, err := GoLengths("p/long.go", goFunc(71))
	if err != nil || len(l) != 1 || l[0] != (Long{Path: "p/long.go", Func: "f", Lines: 71}) {
		t.Fatalf("71 lines: %v, %v; want f at 71 lines", l, err)
	}
	p := Ratchet(l, Allowlist{})
	if len(p) != 1 || !strings.Contains(p[0].String(), "func p/long.go:f is 71 lines, over the limit of 70") {
		t.Fatalf("unlisted 71-line function: %v", p)
	}
	if p := Ratchet(l, Allowlist{"func p/long.go:f": 71}); len(p) != 0 {
		t.Fatalf("listed at its length: %v, want no problem", p)
	}
}

func TestMethodsAndInitsAreNamed(t *testing.T) {
	body := strings.Repeat("\t_ = 0\n", 70)
	src := "package p\n\ntype T[P any] struct{}\n\nfunc (t *T[P]) M() {\n" + body + "}\n\nfunc init() {\n" + body + "}\n\nfunc init() {\n" + body + "}\n"
	l, err := GoLengths("p/m.go", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, x := range l {
		names = append(names, x.Func)
	}
	if strings.Join(names, ",") != "T.M,init,init#2" {
		t.Fatalf("names %v, want T.M, init, init#2", names)
	}
}

func TestFileOf601LinesFails(t *testing.T) {
	src := []byte("package p\n" + strings.Repeat("\n", 599))
	if l, _ := GoLengths("p/f.go", src); len(l) != 0 {
		t.Fatalf("600 lines: %v, want nothing", l)
	}
	src = append(src, "// one more\n"...)
	l, _ := GoLengths("p/f.go", src)
	if len(l) != 1 || l[0].Func != "" || l[0].Lines != 601 {
		t.Fatalf("601 lines: %v, want the file at 601", l)
	}
	gen := append([]byte("// Code generated by x. DO NOT EDIT.\n\n"), src...)
	if l, _ := GoLengths("p/g.go", gen); len(l) != 0 {
		t.Fatalf("generated file: %v, want it not counted", l)
	}
}

func TestStaleAllowlistEntryFails(t *testing.T) {
	allow := Allowlist{"func p/a.go:f": 80, "file p/b.go": 700}
	now := []Long{{Path: "p/b.go", Lines: 700}} // f was split: 70 lines or fewer now
	p := Ratchet(now, allow)
	if len(p) != 1 || !strings.Contains(p[0].String(), "func p/a.go:f is allowlisted but no longer over its limit") {
		t.Fatalf("stale entry: %v", p)
	}
}

func TestGrownAllowlistEntryFails(t *testing.T) {
	p := Ratchet([]Long{{Path: "p/a.go", Func: "f", Lines: 81}}, Allowlist{"func p/a.go:f": 80})
	if len(p) != 1 || !strings.Contains(p[0].String(), "grew to 81 lines (allowlisted at 80") {
		t.Fatalf("grown entry: %v", p)
	}
	if p := Ratchet([]Long{{Path: "p/a.go", Func: "f", Lines: 75}}, Allowlist{"func p/a.go:f": 80}); len(p) != 0 {
		t.Fatalf("shrunk but still over: %v, want no problem (regenerating records the new length)", p)
	}
}

func TestAllowlistRoundTrip(t *testing.T) {
	longs := []Long{{Path: "b.go", Lines: 700}, {Path: "a.go", Func: "T.M", Lines: 90}}
	src := FormatAllowlist(longs, "# header\n")
	want := "# header\nfile b.go 700\nfunc a.go:T.M 90\n"
	if string(src) != want {
		t.Fatalf("formatted %q, want %q", src, want)
	}
	a, err := ParseAllowlist(src)
	if err != nil || len(a) != 2 || a["func a.go:T.M"] != 90 || a["file b.go"] != 700 {
		t.Fatalf("parsed %v, %v", a, err)
	}
	for _, bad := range []string{"func a.go:f", "func a.go:f x", "line a.go 80", "file a.go 0", "file a.go 1\nfile a.go 2"} {
		if _, err := ParseAllowlist([]byte(bad)); err == nil {
			t.Errorf("%q: parsed, want an error", bad)
		}
	}
}

func TestTextRules(t *testing.T) {
	// The bad lines are assembled at run time, so this file does not break the rules it tests.
	iss := "iss" + "ue"
	bad := []string{
		"// see ../" + "shared/DESIGN.md",
		"// as SP" + "EC.md says",
		`dir := "/wo` + `rk/main"`,
		"// " + iss + " 21: fix the thing",
		"// " + iss + "s 11 and 12",
		"// " + strings.ToUpper(iss[:1]) + iss[1:] + " #7",
		"func Test" + iss + "12(t *testing.T) {}",
	}
	for _, line := range bad {
		if p := TextProblems("x.go", []byte("ok\n"+line+"\n")); len(p) != 1 || p[0].Line != 2 {
			t.Errorf("%q: %v, want one problem on line 2", line, p)
		}
	}
	good := []string{
		"// the ticket was " + iss + "d 5 seconds ago",
		"// see docs/api.md",
		"https://example.com/wo" + "rk/x",
		"// an " + iss + " of the tracker",
		`color: "#888"`,
	}
	for _, line := range good {
		if p := TextProblems("x.go", []byte(line)); len(p) != 0 {
			t.Errorf("%q: %v, want none", line, p)
		}
	}
}

func TestImportRules(t *testing.T) {
	src := func(imports ...string) []byte {
		return []byte("package p\n\nimport (\n\t\"" + strings.Join(imports, "\"\n\t\"") + "\"\n)\n")
	}
	cases := []struct {
		dir     string
		imports []string
		want    int
	}{
		{"verifier", []string{"fmt", "m/ticket", "m/internal/obs"}, 0},
		{"verifier", []string{"m/edge"}, 1},
		{"settler", []string{"m/settler/ledger"}, 0},
		{"query", []string{"m/settler/ledger"}, 1},
		{"settler/ledger", []string{"m/query", "m/ticket"}, 1},
		{"ticket", []string{"crypto/sha256", "m/internal/obs"}, 1},
		{"tools/shake", []string{"m/edge", "m/verifier", "m/settler", "m/query"}, 0},
	}
	for _, c := range cases {
		p, err := ImportProblems("m", c.dir, c.dir+"/x.go", src(c.imports...))
		if err != nil || len(p) != c.want {
			t.Errorf("%s importing %v: %v, %v; want %d problems", c.dir, c.imports, p, err, c.want)
		}
	}
}
