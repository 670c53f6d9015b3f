package main

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
)

// cliDoc is the command-line reference, relative to this package.
var cliDoc = filepath.Join("..", "..", "docs", "cli.md")

// TestCLIDocumentsEveryFlag: docs/cli.md has a section for every command (a heading
// "### `shake NAME"), and every flag a command defines is written --flag in that
// section or in the shared text outside every command's section (conventions, the
// servers' common flags, the Kafka security flags). A flag added without its line in
// the reference fails here.
func TestCLIDocumentsEveryFlag(t *testing.T) {
	src, err := os.ReadFile(cliDoc)
	if err != nil {
		t.Fatal(err)
	}
	sections, shared := cliSections(string(src))
	flagLine := regexp.MustCompile(`(?m)^  -([a-z0-9][a-z0-9-]*)`)
	names := make([]string, 0, len(commands))
	for name := range commands {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		sec, ok := sections[name]
		if !ok {
			t.Errorf("docs/cli.md has no section ### `shake %s ...`", name)
			continue
		}
		var help bytes.Buffer
		run([]string{"help", name}, &help, &help)
		for _, m := range flagLine.FindAllStringSubmatch(help.String(), -1) {
			re := regexp.MustCompile(`--` + regexp.QuoteMeta(m[1]) + `\b`)
			if !re.MatchString(sec) && !re.MatchString(shared) {
				t.Errorf("shake %s --%s is not in docs/cli.md", name, m[1])
			}
		}
	}
}

// cliSections splits docs/cli.md into the text of each command's section, keyed by the
// command named in its "### `shake NAME" heading, and the text outside every such
// section.
func cliSections(doc string) (map[string]string, string) {
	heading := regexp.MustCompile("^### `shake ([a-z]+)")
	sections := map[string]string{}
	var shared strings.Builder
	current := ""
	for _, line := range strings.Split(doc, "\n") {
		switch {
		case heading.MatchString(line):
			current = heading.FindStringSubmatch(line)[1]
		case strings.HasPrefix(line, "## "):
			current = ""
		}
		if current == "" {
			shared.WriteString(line + "\n")
		} else {
			sections[current] += line + "\n"
		}
	}
	return sections, shared.String()
}
