package ticket

import (
	"os"
	"path/filepath"
	"reflect"
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

// TestFormatsDocNamesEveryManifestField: the manifest section of docs/formats.md names
// every field a manifest, a shard entry and a prize carry (as `field`), so a field
// added to the manifest without its line in the reference fails.
func TestFormatsDocNamesEveryManifestField(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "docs", "formats.md"))
	if err != nil {
		t.Fatal(err)
	}
	start := strings.Index(string(doc), "## Manifest")
	if start < 0 {
		t.Fatal("docs/formats.md has no ## Manifest section")
	}
	section := string(doc[start:])
	if end := strings.Index(section[3:], "\n## "); end >= 0 {
		section = section[:end+3]
	}
	for _, v := range []any{Manifest{}, ManifestShard{}, Prize{}} {
		typ := reflect.TypeOf(v)
		for i := 0; i < typ.NumField(); i++ {
			name, _, _ := strings.Cut(typ.Field(i).Tag.Get("json"), ",")
			if name != "" && name != "-" && !strings.Contains(section, "`"+name+"`") {
				t.Errorf("docs/formats.md, manifest section: %s field %q is not named", typ.Name(), name)
			}
		}
	}
}
