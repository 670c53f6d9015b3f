package deploytest

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestImageBuild builds deploy/Dockerfile with buildah or podman (Debian packages) and
// runs `shake --version` in it. It skips when neither is installed or when the
// container runtime cannot work here (no user namespaces in a nested container, no
// registry to pull the Go image from): it says which.
func TestImageBuild(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds a container image")
	}
	var builder string
	for _, b := range []string{"podman", "buildah"} {
		if p, err := exec.LookPath(b); err == nil {
			builder = p
			break
		}
	}
	if builder == "" {
		t.Skip("neither podman nor buildah installed (Debian packages podman, buildah): the image is not built")
	}
	if out, err := exec.Command(builder, "info").CombinedOutput(); err != nil {
		t.Skipf("%s cannot run here: %v: %s", builder, err, strings.TrimSpace(string(out)))
	}
	root := filepath.Dir(deployDir(t))
	tag := "localhost/shake:deploytest"
	args := []string{"build", "-f", filepath.Join(root, "deploy", "Dockerfile"), "-t", tag, root}
	if strings.HasSuffix(builder, "buildah") {
		args = []string{"bud", "-f", filepath.Join(root, "deploy", "Dockerfile"), "-t", tag, root}
	}
	if out, err := exec.Command(builder, args...).CombinedOutput(); err != nil {
		s := string(out)
		if strings.Contains(s, "pinging container registry") || strings.Contains(s, "dial tcp") || strings.Contains(s, "user namespaces") {
			t.Skipf("%s cannot build here (no registry or no user namespaces): %s", builder, tail(out, 400))
		}
		t.Fatalf("%s %v: %v\n%s", builder, args, err, tail(out, 4000))
	}
	if !strings.HasSuffix(builder, "podman") {
		return
	}
	out, err := exec.Command(builder, "run", "--rm", "--network=none", tag, "--version").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "shake ") {
		t.Fatalf("shake --version in the image: %v %s", err, out)
	}
	size, _ := exec.Command(builder, "image", "inspect", "--format", "{{.Size}}", tag).Output()
	t.Logf("image %s: %s bytes", tag, strings.TrimSpace(string(size)))
	// No shell at run time.
	if out, err := exec.Command(builder, "run", "--rm", "--network=none", "--entrypoint", "/bin/sh", tag, "-c", "true").CombinedOutput(); err == nil {
		t.Fatalf("the image has a shell: %s", out)
	}
}
