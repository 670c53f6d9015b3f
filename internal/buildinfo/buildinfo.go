// Package buildinfo says which build of shake is running: the version stamped at link
// time, else what the Go toolchain recorded (module version, VCS revision).
//
// Release builds stamp the version with
//
//	go build -ldflags "-X shake/internal/buildinfo.version=v1.2.3 -X shake/internal/buildinfo.revision=$(git rev-parse HEAD)" ./tools/shake
//
// (deploy/Dockerfile does). Without the flags, debug.ReadBuildInfo supplies the module
// version ("(devel)" for a checkout) and the VCS revision when `go build` recorded it.
package buildinfo

import (
	"runtime"
	"runtime/debug"
	"sync"
)

// Set by the linker (-ldflags -X); empty in an unstamped build.
var (
	version  string
	revision string
)

// Info describes one build.
type Info struct {
	Version   string // "v1.2.3", or "(devel)" for an unstamped build of a checkout
	Revision  string // VCS commit, "" when unknown; "+dirty" appended for a modified tree
	Time      string // VCS commit time (RFC 3339), "" when unknown
	GoVersion string // runtime.Version()
	Platform  string // GOOS/GOARCH
}

var (
	once sync.Once
	info Info
)

// Get returns this binary's build information (computed once).
func Get() Info {
	once.Do(func() { info = compute(version, revision) })
	return info
}

func compute(stampedVersion, stampedRevision string) Info {
	in := Info{Version: stampedVersion, Revision: stampedRevision, GoVersion: runtime.Version(),
		Platform: runtime.GOOS + "/" + runtime.GOARCH}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		if in.Version == "" {
			in.Version = "(unknown)"
		}
		return in
	}
	if in.Version == "" {
		in.Version = bi.Main.Version
		if in.Version == "" {
			in.Version = "(devel)"
		}
	}
	rev, dirty := "", false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.time":
			in.Time = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if in.Revision == "" && rev != "" {
		in.Revision = rev
		if dirty {
			in.Revision += "+dirty"
		}
	}
	return in
}

// String is the one-line description `shake --version` prints:
// "shake <version> <go> <os>/<arch> [rev <revision> [(<time>)]]".
func (in Info) String() string {
	out := "shake " + in.Version + " " + in.GoVersion + " " + in.Platform
	if in.Revision != "" {
		out += " rev " + in.Revision
		if in.Time != "" {
			out += " (" + in.Time + ")"
		}
	}
	return out
}
