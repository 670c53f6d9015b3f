package ticket

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestSwitchesDocNamesEverySwitch: docs/switches.md has a row for every switch the
// document accepts ("| `section.name` |"), so a switch added here without its line in
// the operators' reference fails.
func TestSwitchesDocNamesEverySwitch(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "docs", "switches.md"))
	if err != nil {
		t.Fatal(err)
	}
	keys := SwitchKeys()
	if len(keys) == 0 {
		t.Fatal("SwitchKeys is empty: the check would see nothing")
	}
	for _, k := range keys {
		if !strings.Contains(string(doc), "| `"+k+"` |") {
			t.Errorf("docs/switches.md has no row for the switch %s", k)
		}
	}
}
