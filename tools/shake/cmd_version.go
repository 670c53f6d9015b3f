package main

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
)

func init() {
	register(command{name: "version", summary: "print the program version and build information", run: runVersion})
}

const versionUsage = `
Usage: shake version

Prints the module version, the Go version and platform, and the VCS revision the
binary was built from when the build recorded it.
`

func runVersion(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("version", versionUsage, stderr)
	if ok, code := parseFlags(fs, args); !ok {
		return code
	}
	fmt.Fprintln(stdout, versionString())
	return 0
}

// versionString describes this binary: "shake <version> <go> <os>/<arch>" plus the
// VCS revision, commit time and a "+dirty" mark when the build info has them.
func versionString() string {
	version, rev, when, dirty := "(unknown)", "", "", false
	if bi, ok := debug.ReadBuildInfo(); ok {
		version = bi.Main.Version
		if version == "" {
			version = "(devel)"
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.time":
				when = s.Value
			case "vcs.modified":
				dirty = s.Value == "true"
			}
		}
	}
	out := fmt.Sprintf("shake %s %s %s/%s", version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	if rev != "" {
		out += " rev " + rev
		if dirty {
			out += "+dirty"
		}
		if when != "" {
			out += " (" + when + ")"
		}
	}
	return out
}
