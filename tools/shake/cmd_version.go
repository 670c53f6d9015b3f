package main

import (
	"fmt"
	"io"

	"shake/internal/buildinfo"
)

func init() {
	register(command{name: "version", summary: "print the program version and build information", run: runVersion})
}

const versionUsage = `
Usage: shake version   (or shake --version, shake -v)

Prints the version, the Go version and platform, and the VCS revision the binary was
built from. Release builds stamp the version at link time:
  go build -ldflags "-X shake/internal/buildinfo.version=v1.2.3
                     -X shake/internal/buildinfo.revision=$(git rev-parse HEAD)" ./tools/shake
otherwise it is what the Go toolchain recorded ("(devel)" and the VCS revision for a
build from a checkout). Every server exports the same as shake_build_info.
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
// VCS revision and commit time when the build recorded them (see internal/buildinfo).
func versionString() string { return buildinfo.Get().String() }
