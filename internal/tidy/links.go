package tidy

import (
	"bufio"
	"bytes"
	"fmt"
	"path"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// Link is a relative link of a Markdown file: the file it names (slash-separated,
// relative to the module root; "" for the linking file itself) and the anchor after #.
type Link struct {
	Line   int
	Target string
	Anchor string
}

var mdLink = regexp.MustCompile(`\]\(([^)\s]+)\)`)

// MarkdownLinks returns the relative links of the Markdown file at path (slash-separated,
// relative to the module root), outside code blocks. Links with a scheme (https:,
// mailto:) are not the repository's and are left out.
func MarkdownLinks(file string, src []byte) []Link {
	var out []Link
	fenced := false
	sc := bufio.NewScanner(bytes.NewReader(src))
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	for line := 1; sc.Scan(); line++ {
		text := sc.Text()
		if strings.HasPrefix(strings.TrimSpace(text), "```") {
			fenced = !fenced
			continue
		}
		if fenced {
			continue
		}
		for _, m := range mdLink.FindAllStringSubmatch(text, -1) {
			target, anchor, _ := strings.Cut(m[1], "#")
			if strings.Contains(target, ":") {
				continue
			}
			if target != "" {
				target = path.Clean(path.Join(path.Dir(file), target))
			}
			out = append(out, Link{Line: line, Target: target, Anchor: anchor})
		}
	}
	return out
}

var notSlug = regexp.MustCompile(`[^\p{L}\p{N} _-]`)

// Anchors returns the anchors of a Markdown file's headings as GitHub makes them: lower
// case, punctuation dropped, spaces as hyphens, a repeated one numbered -1, -2...
func Anchors(src []byte) map[string]bool {
	out := map[string]bool{}
	fenced := false
	sc := bufio.NewScanner(bytes.NewReader(src))
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	for sc.Scan() {
		text := sc.Text()
		if strings.HasPrefix(strings.TrimSpace(text), "```") {
			fenced = !fenced
		}
		if fenced || !strings.HasPrefix(text, "#") {
			continue
		}
		heading := strings.TrimSpace(strings.TrimLeft(text, "#"))
		slug := strings.ReplaceAll(notSlug.ReplaceAllString(strings.ToLower(heading), ""), " ", "-")
		s := slug
		for i := 1; out[s]; i++ {
			s = slug + "-" + strconv.Itoa(i)
		}
		out[s] = true
	}
	return out
}

// RatchetMissing compares the files links name that do not exist with the list of those
// allowed to be missing (documents being written on other branches). It reports an
// unlisted missing one and a listed one that exists now or is no longer linked: the
// list can only shrink.
func RatchetMissing(missing map[string][]string, listed []string) []Problem {
	var out []Problem
	isListed := map[string]bool{}
	for _, l := range listed {
		isListed[l] = true
		if _, ok := missing[l]; !ok {
			out = append(out, Problem{What: "missing link target " + l + " is listed but exists now (or nothing links to it): remove it from the list"})
		}
	}
	for target, from := range missing {
		if !isListed[target] {
			out = append(out, Problem{Path: from[0], What: "links to " + target + ", which does not exist"})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].String() < out[j].String() })
	return out
}

// ParseMissing reads the list of link targets allowed to be missing: one path a line,
// blank lines and # comments ignored.
func ParseMissing(src []byte) ([]string, error) {
	var out []string
	seen := map[string]bool{}
	for i, line := range strings.Split(string(src), "\n") {
		s := strings.TrimSpace(line)
		if s == "" || strings.HasPrefix(s, "#") {
			continue
		}
		if strings.ContainsAny(s, " \t") || seen[s] {
			return nil, fmt.Errorf("tidy: missing-links line %d: want one path, once, got %q", i+1, s)
		}
		seen[s] = true
		out = append(out, s)
	}
	return out, nil
}

// FormatMissing writes the list of missing link targets, sorted, after header.
func FormatMissing(missing map[string][]string, header string) []byte {
	targets := make([]string, 0, len(missing))
	for t := range missing {
		targets = append(targets, t)
	}
	sort.Strings(targets)
	return []byte(header + strings.Join(targets, "\n") + "\n")
}
