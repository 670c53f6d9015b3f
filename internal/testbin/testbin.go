// Package testbin gives the whole-process tests of every package (edge, chaos,
// tools/shake, deploy) the shake binary they start real servers from: kill -9 has to hit
// a real process.
//
// The binary is built once per content of the source tree, not once per test process:
// `go test ./...` runs the packages' test binaries side by side, and each used to build
// (and on a cold build cache, compile from scratch) the same program at the same time.
// Now the first process to ask builds it under a file lock into a cache directory in
// os.TempDir(), keyed by a hash of every non-test file of the module and the Go
// toolchain's settings; the others wait on the lock and reuse it. Each test process gets
// its own hard link to the cached file, so pruning an old cache entry never pulls a
// binary from under a running test.
package testbin

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

var (
	once sync.Once
	dir  string // this process's private directory (the hard link lives there)
	path string
	err  error
)

// pruneAfter is how long a cache entry may go unused before a later build deletes it.
// Every Shake call of a test process touches its entry, so an entry in use stays.
const pruneAfter = 6 * time.Hour

// Shake returns the path of a shake binary built from shake/tools/shake, the way the
// image builds it (CGO_ENABLED=0, -trimpath). It is built without -race whatever the
// test binary was built with: the children are the subject, and a race-instrumented
// child is several times slower. A failed build fails the test (it never skips: a
// whole-process test that does not run is not a passing test).
func Shake(t testing.TB) string {
	t.Helper()
	once.Do(func() { path, err = get() })
	if err != nil {
		t.Fatalf("cannot build the shake binary: %v", err)
	}
	touch()
	return path
}

// Remove deletes this process's link to the binary, if any; a TestMain calls it after
// m.Run. The cached binary stays for the next test process.
func Remove() {
	if dir != "" {
		os.RemoveAll(dir)
	}
}

var entryDir string // the cache entry Shake returned a link to

// touch marks the cache entry as in use (see pruneAfter).
func touch() {
	if entryDir != "" {
		now := time.Now()
		_ = os.Chtimes(entryDir, now, now)
	}
}

func get() (string, error) {
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	goEnv, err := exec.Command("go", "env", "GOVERSION", "GOOS", "GOARCH", "GOFLAGS", "CGO_ENABLED",
		"GOEXPERIMENT", "GOAMD64", "GOARM64", "GOTOOLCHAIN", "CC").Output()
	if err != nil {
		return "", fmt.Errorf("go env: %v", err)
	}
	key, err := sourceKey(root, goEnv)
	if err != nil {
		return "", err
	}
	cache := filepath.Join(os.TempDir(), "shake-testbin-cache-"+strconv.Itoa(os.Getuid()))
	if err := os.MkdirAll(cache, 0o700); err != nil {
		return "", err
	}
	unlock, err := lock(filepath.Join(cache, key+".lock"), true)
	if err != nil {
		return "", err
	}
	defer unlock()
	entry := filepath.Join(cache, key)
	bin := filepath.Join(entry, "shake")
	if _, serr := os.Stat(bin); serr != nil {
		if err := build(root, entry, bin); err != nil {
			return "", err
		}
	}
	entryDir = entry
	touch()
	if dir, err = os.MkdirTemp("", "shake-testbin-"); err != nil {
		return "", err
	}
	p := filepath.Join(dir, "shake")
	if os.Link(bin, p) != nil {
		if err := copyFile(bin, p); err != nil {
			return "", err
		}
	}
	prune(cache, key)
	return p, nil
}

// build compiles shake/tools/shake into bin (via a temporary name in the same directory,
// so that bin only ever exists complete). -buildvcs=false: the entry is keyed by the
// content, and a VCS stamp (commit, dirty) would go stale on a reused binary.
func build(root, entry, bin string) error {
	if err := os.MkdirAll(entry, 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(entry, "shake.building-")
	if err != nil {
		return err
	}
	tmp.Close()
	defer os.Remove(tmp.Name())
	// Built as deploy/Dockerfile builds the shipped binary (static, -trimpath): the
	// tests run what production runs, and the image test's own build of it then
	// finds every package compiled in the build cache, where on a cold cache it used
	// to compile the whole module and its dependencies a second time beside this one.
	cmd := exec.Command("go", "build", "-trimpath", "-buildvcs=false", "-o", tmp.Name(), "shake/tools/shake")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, berr := cmd.CombinedOutput(); berr != nil {
		return fmt.Errorf("go build shake/tools/shake: %v\n%s", berr, out)
	}
	return os.Rename(tmp.Name(), bin)
}

// moduleRoot finds the directory of the shake module's go.mod above the working
// directory (a test runs in its package's directory).
func moduleRoot() (string, error) {
	d, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if b, err := os.ReadFile(filepath.Join(d, "go.mod")); err == nil && strings.HasPrefix(string(b), "module shake\n") {
			return d, nil
		}
		up := filepath.Dir(d)
		if up == d {
			return "", errors.New("no go.mod of module shake above the working directory")
		}
		d = up
	}
}

// sourceKey hashes what the build reads from the checkout: every file of the module tree
// but tests, testdata and hidden directories (third_party/kfake, the replaced broker,
// included), with the go command's settings. A change anywhere makes a new key; an
// unrelated one (a README) costs one rebuild, never a stale binary.
func sourceKey(root string, goEnv []byte) (string, error) {
	var files []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if d.IsDir() {
			if p != root && (name == "testdata" || strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_")) {
				return filepath.SkipDir
			}
			return nil
		}
		if d.Type().IsRegular() && !strings.HasSuffix(name, "_test.go") {
			files = append(files, p)
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	sort.Strings(files)
	h := sha256.New()
	h.Write(goEnv)
	for _, p := range files {
		rel, _ := filepath.Rel(root, p)
		f, err := os.Open(p)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(h, "\x00%s\x00", filepath.ToSlash(rel))
		_, err = io.Copy(h, f)
		f.Close()
		if err != nil {
			return "", err
		}
	}
	return hex.EncodeToString(h.Sum(nil))[:24], nil
}

// prune deletes the cache entries (other than keep) nobody used for pruneAfter and
// nobody holds the lock of.
func prune(cache, keep string) {
	ents, err := os.ReadDir(cache)
	if err != nil {
		return
	}
	for _, e := range ents {
		if !e.IsDir() || e.Name() == keep {
			continue
		}
		fi, err := e.Info()
		if err != nil || time.Since(fi.ModTime()) < pruneAfter {
			continue
		}
		lockPath := filepath.Join(cache, e.Name()+".lock")
		unlock, err := lock(lockPath, false)
		if err != nil {
			continue // in use, or no locking here
		}
		os.RemoveAll(filepath.Join(cache, e.Name()))
		os.Remove(lockPath)
		unlock()
	}
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// Parallel lets up to n of the tests that call t.Parallel run at once, unless the
// command line chose (-parallel). A TestMain calls it before m.Run. The default,
// GOMAXPROCS (2 on the development machine), suits tests that compute; whole-process
// tests mostly wait on their children (a session timeout, a restart, a drain), so more of
// them at once finish sooner without asking for more CPU.
func Parallel(n int) {
	if !flag.Parsed() {
		flag.Parse()
	}
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == "test.parallel" })
	if set || n <= runtime.GOMAXPROCS(0) {
		return
	}
	if err := flag.Set("test.parallel", strconv.Itoa(n)); err != nil {
		panic("BUG: testbin.Parallel: " + err.Error())
	}
}
