package testbin

import (
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

func write(t *testing.T, root, rel, content string) {
	t.Helper()
	p := filepath.Join(root, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestSourceKey: the cache key follows what the build reads and nothing else.
func TestSourceKey(t *testing.T) {
	root := t.TempDir()
	write(t, root, "go.mod", "module shake\n")
	write(t, root, "a/a.go", "package a\n")
	write(t, root, "a/migrations/1.sql", "create table x;\n")
	key := func() string {
		t.Helper()
		k, err := sourceKey(root, []byte("go1.x linux amd64"))
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	k0 := key()
	if k0 != key() {
		t.Fatal("the key of an unchanged tree changed")
	}
	write(t, root, "a/a_test.go", "package a\n")
	write(t, root, "a/testdata/x", "fixture")
	write(t, root, ".git/HEAD", "ref")
	if key() != k0 {
		t.Fatal("a test file, testdata or .git changed the key")
	}
	for _, rel := range []string{"a/a.go", "a/migrations/1.sql", "go.mod"} {
		b, _ := os.ReadFile(filepath.Join(root, rel))
		write(t, root, rel, string(b)+"\n")
		k := key()
		if k == k0 {
			t.Fatalf("editing %s left the key unchanged", rel)
		}
		k0 = k
	}
	if k, _ := sourceKey(root, []byte("go1.y linux amd64")); k == k0 {
		t.Fatal("another toolchain left the key unchanged")
	}
}

// TestLockExcludes: while one holder has an entry's lock, a non-waiting lock fails, and
// it succeeds once the holder lets go.
func TestLockExcludes(t *testing.T) {
	if runtime.GOOS == "windows" || runtime.GOOS == "plan9" {
		t.Skip("no flock here: builds are not deduplicated")
	}
	p := filepath.Join(t.TempDir(), "k.lock")
	unlock, err := lock(p, true)
	if err != nil {
		t.Fatal(err)
	}
	if u, err := lock(p, false); err == nil {
		u()
		t.Fatal("a second lock was granted while the first was held")
	}
	unlock()
	u, err := lock(p, false)
	if err != nil {
		t.Fatalf("lock after unlock: %v", err)
	}
	u()
}
