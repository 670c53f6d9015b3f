package tidy

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
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

// missingFile lists the link targets allowed not to exist yet.
const missingFile = "missing_links.txt"

const missingHeader = `# Files that the repository's Markdown links to and that do not exist yet (documents
# written on other branches). The list can only shrink: TestTidy fails on a link to a
# missing file not listed here, and on a listed file that exists now. Regenerate it with:
#   SHAKE_TIDY_WRITE=1 go test -count=1 -run TestTidy ./internal/tidy/
`

// writeLists is set by SHAKE_TIDY_WRITE=1: TestTidy then rewrites allowlist.txt and
// missing_links.txt to what the tree holds now instead of checking them.
var writeLists = os.Getenv("SHAKE_TIDY_WRITE") == "1"

// TestTidy applies the house rules to every file of the module but third_party/.
func TestTidy(t *testing.T) {
	root, mod := moduleRoot(t)
	var longs []Long
	var problems []Problem
	markdown := map[string][]byte{}
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
		if strings.HasSuffix(rel, ".md") {
			markdown[rel] = src
		}
		if !strings.HasSuffix(rel, ".go") || strings.Contains(rel, "/testdata/") {
			continue
		}
		l, p := goRules(t, mod, rel, src)
		longs, problems = append(longs, l...), append(problems, p...)
	}
	for _, p := range problems {
		t.Error(p)
	}
	checkLengths(t, longs)
	checkLinks(t, root, markdown)
}

// goRules applies the length rules to a .go file, and the import rules to a non-test one.
func goRules(t *testing.T, mod, rel string, src []byte) ([]Long, []Problem) {
	l, err := GoLengths(rel, src)
	if err != nil {
		t.Fatal(err)
	}
	if strings.HasSuffix(rel, "_test.go") {
		return l, nil
	}
	p, err := ImportProblems(mod, path.Dir(rel), rel, src)
	if err != nil {
		t.Fatal(err)
	}
	return l, p
}

// checkLengths holds what is over its limit to the allowlist (or rewrites it).
func checkLengths(t *testing.T, longs []Long) {
	ratchetList(t, allowlistFile, FormatAllowlist(longs, allowlistHeader), func(src []byte) ([]Problem, error) {
		allow, err := ParseAllowlist(src)
		return Ratchet(longs, allow), err
	})
}

// checkLinks checks every relative link of the Markdown files: its file exists (or is
// on the missing list) and its anchor is a heading of that file.
func checkLinks(t *testing.T, root string, markdown map[string][]byte) {
	missing := map[string][]string{}
	for _, file := range sortedNames(markdown) {
		for _, l := range MarkdownLinks(file, markdown[file]) {
			target := l.Target
			if target == "" {
				target = file
			}
			where := fmt.Sprintf("%s:%d", file, l.Line)
			if _, err := os.Stat(filepath.Join(root, filepath.FromSlash(target))); err != nil {
				missing[target] = append(missing[target], where)
				continue
			}
			if src, ok := markdown[target]; ok && l.Anchor != "" && !Anchors(src)[l.Anchor] {
				t.Errorf("%s: links to %s#%s, which is no heading of it", where, target, l.Anchor)
			}
		}
	}
	ratchetList(t, missingFile, FormatMissing(missing, missingHeader), func(src []byte) ([]Problem, error) {
		listed, err := ParseMissing(src)
		return RatchetMissing(missing, listed), err
	})
}

// ratchetList writes now to file under SHAKE_TIDY_WRITE=1; otherwise it checks the
// tree against the file's list with check and reports each problem.
func ratchetList(t *testing.T, file string, now []byte, check func(src []byte) ([]Problem, error)) {
	if writeLists {
		if err := os.WriteFile(file, now, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote %s", file)
		return
	}
	src, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	problems, err := check(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("%s (regenerate: SHAKE_TIDY_WRITE=1 go test -count=1 -run TestTidy ./internal/tidy/)", p)
	}
}

func sortedNames(m map[string][]byte) []string {
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
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
		files = gitFiles(out)
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

// gitFiles splits the output of git ls-files -z. A file in conflict is listed once per
// stage of the merge, so each name is kept once.
func gitFiles(out []byte) []string {
	var files []string
	seen := map[string]bool{}
	for _, f := range strings.Split(string(out), "\x00") {
		if f != "" && !seen[f] {
			seen[f] = true
			files = append(files, f)
		}
	}
	return files
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

// TestGitFilesOncePerName: during a merge a conflicted file is listed once per stage,
// which counted its long functions three times.
func TestGitFilesOncePerName(t *testing.T) {
	got := strings.Join(gitFiles([]byte("a.go\x00b.go\x00b.go\x00b.go\x00c.md\x00")), ",")
	if got != "a.go,b.go,c.md" {
		t.Fatalf("files %s, want a.go,b.go,c.md", got)
	}
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

func TestMarkdownLinksAndAnchors(t *testing.T) {
	doc := []byte("# Top\n\nSee [a](../api/x.md#b-c), [self](#top), [web](https://example.com/x),\n" +
		"```\n[not a link](nowhere.md)\n```\n[dir](./)\n")
	got := MarkdownLinks("docs/page.md", doc)
	want := []Link{{3, "api/x.md", "b-c"}, {3, "", "top"}, {7, "docs", ""}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("links %v, want %v", got, want)
	}
	a := Anchors([]byte("# Preflight: one go/no-go check\n## Manifest: `manifest.json`\n## Same\n## Same\n```\n# not a heading\n```\n"))
	for _, s := range []string{"preflight-one-gono-go-check", "manifest-manifestjson", "same", "same-1"} {
		if !a[s] {
			t.Errorf("anchor %q missing from %v", s, a)
		}
	}
	if a["not-a-heading"] {
		t.Error("a line in a code block was taken as a heading")
	}
}

func TestMissingLinksOnlyShrink(t *testing.T) {
	missing := map[string][]string{"docs/new.md": {"README.md:3"}}
	if p := RatchetMissing(missing, []string{"docs/new.md"}); len(p) != 0 {
		t.Fatalf("listed missing target: %v, want no problem", p)
	}
	p := RatchetMissing(missing, nil)
	if len(p) != 1 || p[0].String() != "README.md:3: links to docs/new.md, which does not exist" {
		t.Fatalf("unlisted missing target: %v", p)
	}
	p = RatchetMissing(map[string][]string{}, []string{"docs/new.md"})
	if len(p) != 1 || !strings.Contains(p[0].String(), "docs/new.md is listed but exists now") {
		t.Fatalf("stale entry: %v", p)
	}
	if _, err := ParseMissing([]byte("a.md\na.md\n")); err == nil {
		t.Error("a target listed twice parsed")
	}
	l, err := ParseMissing(FormatMissing(missing, "# header\n"))
	if err != nil || len(l) != 1 || l[0] != "docs/new.md" {
		t.Errorf("round trip: %v, %v", l, err)
	}
}

// TestReadmeIsTheFrontDoor: README.md stays a front door (at most 250 lines; the rest
// lives in docs/), and its two set-up commands are the ones that work: the demo, and the
// test command exactly as CI (.ci/run) runs it.
func TestReadmeIsTheFrontDoor(t *testing.T) {
	root, _ := moduleRoot(t)
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	ci, err := os.ReadFile(filepath.Join(root, ".ci", "run"))
	if err != nil {
		t.Fatal(err)
	}
	if n := countLines(readme); n > 250 {
		t.Errorf("README.md is %d lines, over 250: move the details to docs/", n)
	}
	const demo, test = "go run ./tools/shake demo", "go test -race -count=1 ./..."
	for _, cmd := range []string{demo, test} {
		if !bytes.Contains(readme, []byte("\n"+cmd+" ")) {
			t.Errorf("README.md's set-up does not start a line with %q", cmd)
		}
	}
	if !bytes.Contains(ci, []byte("\n"+test+"\n")) {
		t.Errorf(".ci/run does not run %q, the test command README.md gives", test)
	}
}
