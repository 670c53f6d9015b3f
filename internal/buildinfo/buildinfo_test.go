package buildinfo

import (
	"runtime"
	"strings"
	"testing"
)

func TestStampedWins(t *testing.T) {
	in := compute("v1.2.3", "deadbeef")
	if in.Version != "v1.2.3" || in.Revision != "deadbeef" || in.GoVersion != runtime.Version() {
		t.Fatalf("%+v", in)
	}
	if s := in.String(); !strings.HasPrefix(s, "shake v1.2.3 "+runtime.Version()+" "+runtime.GOOS+"/"+runtime.GOARCH+" rev deadbeef") {
		t.Fatalf("%q", s)
	}
}

func TestUnstampedFallsBack(t *testing.T) {
	in := compute("", "")
	if in.Version == "" {
		t.Fatal("an unstamped build has no version at all")
	}
	if Get() != Get() {
		t.Fatal("Get is not stable")
	}
}
