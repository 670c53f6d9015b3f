package deploytest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// imageBuilder returns podman (preferred: it can also run the image) or buildah, or
// skips when neither is installed or neither can work here, saying which.
func imageBuilder(t *testing.T) string {
	t.Helper()
	var builder string
	for _, b := range []string{"podman", "buildah"} {
		if p, err := exec.LookPath(b); err == nil {
			builder = p
			break
		}
	}
	if builder == "" {
		t.Skip("neither podman nor buildah installed (Debian packages podman, buildah; .ci/run installs podman): the image is not built")
	}
	if out, err := exec.Command(builder, "info").CombinedOutput(); err != nil {
		t.Skipf("%s cannot run here: %v: %s", builder, err, tail(out, 400))
	}
	return builder
}

// buildImage builds the Containerfile file with context dir as tag; it returns the
// builder's output and error.
func buildImage(builder, file, tag, dir string) ([]byte, error) {
	verb := "build"
	if strings.HasSuffix(builder, "buildah") {
		verb = "bud"
	}
	return exec.Command(builder, verb, "-f", file, "-t", tag, dir).CombinedOutput()
}

// registryUnreachable says whether a failed build failed only because the base image
// could not be pulled (no registry from here) or the runtime lacks user namespaces.
func registryUnreachable(out []byte) bool {
	s := string(out)
	for _, w := range []string{"pinging container registry", "dial tcp", "user namespaces", "no such host",
		"network is unreachable", "i/o timeout", "connection refused", "initializing source docker://"} {
		if strings.Contains(s, w) {
			return true
		}
	}
	return false
}

// TestImageBuild builds deploy/Dockerfile as it is (both stages) with podman or buildah
// and proves the image. Where the Go base image cannot be pulled (no registry reachable
// from here) it skips, saying so; TestImageRuntimeStage still proves the run-time stage.
func TestImageBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a container image")
	}
	t.Parallel()
	builder := imageBuilder(t)
	root := filepath.Dir(deployDir(t))
	tag := "localhost/shake:deploytest"
	if out, err := buildImage(builder, filepath.Join(root, "deploy", "Dockerfile"), tag, root); err != nil {
		if registryUnreachable(out) {
			t.Skipf("the Dockerfile's build stage needs its base image from a registry, unreachable here (TestImageRuntimeStage proves the run-time stage): %s", tail(out, 400))
		}
		t.Fatalf("%s build -f deploy/Dockerfile: %v\n%s", builder, err, tail(out, 4000))
	}
	t.Cleanup(func() { exec.Command(builder, "rmi", "-f", tag).Run() })
	if strings.HasSuffix(builder, "podman") {
		proveImage(t, builder, tag, "")
	}
}

// TestImageRuntimeStage proves the image's run-time stage where the whole Dockerfile
// cannot be built (no registry for the golang base image). It builds the static binary
// here the way the build stage does (CGO_ENABLED=0, -trimpath and the Dockerfile's own
// -ldflags), lays out the /out tree and the CA bundle in a local context, and builds an
// image whose final stage is deploy/Dockerfile's last FROM scratch stage taken verbatim,
// with the build stage replaced by FROM scratch AS build and one COPY of that context.
// Then it runs the image: --version, help, a write into the state volume as the image's
// user, non-root, no shell, and logs the size.
func TestImageRuntimeStage(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a container image")
	}
	t.Parallel()
	builder := imageBuilder(t)
	if !strings.HasSuffix(builder, "podman") {
		t.Skip("buildah builds but cannot run the image: install podman")
	}
	tag := "localhost/shake:deploytest-runtime"
	buildRuntimeImage(t, builder, tag)
	proveImage(t, builder, tag, "shake deploytest")
}

// buildRuntimeImage builds tag from deploy/Dockerfile's run-time stage, verbatim, over a
// static binary built here the way the build stage builds it (see TestImageRuntimeStage),
// and removes the image when the test ends.
func buildRuntimeImage(t *testing.T, builder, tag string) {
	t.Helper()
	root := filepath.Dir(deployDir(t))
	df, err := os.ReadFile(filepath.Join(root, "deploy", "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	buildStage, final, err := splitDockerfile(string(df))
	if err != nil {
		t.Fatalf("deploy/Dockerfile: %v", err)
	}
	ldflags, err := dockerfileLdflags(buildStage, "deploytest", "")
	if err != nil {
		t.Fatalf("deploy/Dockerfile: %v", err)
	}

	ctx := t.TempDir()
	rootfs := filepath.Join(ctx, "rootfs")
	for _, d := range []string{"out/state", "out/spool", "out/data", "etc/ssl/certs"} {
		if err := os.MkdirAll(filepath.Join(rootfs, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// The tests' shared binary is built with the same CGO_ENABLED=0 and -trimpath, so
	// after it this build only links (with the Dockerfile's -ldflags).
	shakeBinary(t)
	bin := filepath.Join(rootfs, "out", "shake")
	build := exec.Command("go", "build", "-trimpath", "-ldflags", ldflags, "-o", bin, "./tools/shake")
	build.Dir = root
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("CGO_ENABLED=0 go build -ldflags %q: %v\n%s", ldflags, err, out)
	}
	if out, err := exec.Command(bin, "--version").CombinedOutput(); err != nil || !strings.HasPrefix(string(out), "shake deploytest") {
		t.Fatalf("%s --version: %v %q", bin, err, out)
	}
	ca, err := os.ReadFile("/etc/ssl/certs/ca-certificates.crt")
	if err != nil {
		t.Skipf("no CA bundle on this host to put in the image (Debian package ca-certificates): %v", err)
	}
	if err := os.WriteFile(filepath.Join(rootfs, "etc/ssl/certs/ca-certificates.crt"), ca, 0o644); err != nil {
		t.Fatal(err)
	}
	containerfile := filepath.Join(ctx, "Containerfile")
	body := "# The build stage of deploy/Dockerfile, replaced by what this test built locally.\n" +
		"FROM scratch AS build\nCOPY rootfs/ /\n\n" +
		"# deploy/Dockerfile's run-time stage, verbatim.\n" + final
	if err := os.WriteFile(containerfile, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := buildImage(builder, containerfile, tag, ctx); err != nil {
		t.Fatalf("%s build of the run-time stage: %v\n%s\n%s", builder, err, body, tail(out, 4000))
	}
	t.Cleanup(func() { exec.Command(builder, "rmi", "-f", tag).Run() })
}

// podmanRun returns how to run a container here: the default OCI runtime where it
// works, else runc (crun refuses a hybrid cgroup v1/v2 host, which nested CI
// containers often are; .ci/run installs runc). Every run lowers nofile and nproc to
// 1024: setting a limit above the host's needs CAP_SYS_RESOURCE, which a CI container
// lacks, and the runtimes otherwise set podman's defaults (nofile 1048576).
func podmanRun(t *testing.T, podman, tag string) func(args ...string) ([]byte, error) {
	t.Helper()
	limits := []string{"--ulimit=nofile=1024:1024", "--ulimit=nproc=1024:1024"}
	mk := func(global []string) func(args ...string) ([]byte, error) {
		return func(args ...string) ([]byte, error) {
			a := append(append(append([]string{}, global...), "run", "--rm", "--network=none"), limits...)
			return exec.Command(podman, append(a, args...)...).CombinedOutput()
		}
	}
	run := mk(nil)
	out, err := run(tag, "--version")
	if err == nil {
		return run
	}
	if _, lerr := exec.LookPath("runc"); lerr == nil {
		runc := mk([]string{"--runtime", "runc"})
		out2, err2 := runc(tag, "--version")
		if err2 == nil {
			t.Logf("the default OCI runtime cannot run containers here (%s): using runc", tail(out, 200))
			return runc
		}
		t.Fatalf("podman run: %v %s; with --runtime runc: %v %s", err, tail(out, 400), err2, tail(out2, 400))
	}
	t.Fatalf("podman run: %v %s (a hybrid cgroup host needs runc: Debian package runc)", err, tail(out, 400))
	return nil
}

// proveImage runs the checks every shake image must pass: --version (starting with
// wantVersion when set), the default command (help), a non-root user that can write
// the state volume, no shell; it logs the image size.
func proveImage(t *testing.T, podman, tag, wantVersion string) {
	t.Helper()
	run := podmanRun(t, podman, tag)
	out, err := run(tag, "--version")
	if err != nil || !strings.HasPrefix(string(out), "shake ") || !strings.HasPrefix(string(out), wantVersion) {
		t.Fatalf("shake --version in the image: %v %q (want %q)", err, out, wantVersion)
	}
	if out, err := run(tag); err != nil || !strings.Contains(string(out), "Commands:") {
		t.Fatalf("the image's default command (help): %v %s", err, tail(out, 400))
	}
	user, err := exec.Command(podman, "image", "inspect", "--format", "{{.Config.User}}", tag).Output()
	if err != nil {
		t.Fatalf("podman image inspect: %v", err)
	}
	u := strings.TrimSpace(string(user))
	if uid, _, _ := strings.Cut(u, ":"); uid == "" || uid == "0" || uid == "root" {
		t.Fatalf("the image runs as %q: want a non-root USER", u)
	}
	// The unprivileged user owns the state directory: keys init writes three 0600 files
	// there (and would fail on a root-owned directory).
	if out, err := run(tag, "keys", "init", "--out", "/var/lib/shake/state/keys"); err != nil {
		t.Fatalf("shake keys init into /var/lib/shake/state as %s: %v %s", u, err, tail(out, 400))
	}
	// Nor can root-owned files be written: the user really is not root.
	if out, err := run(tag, "keys", "init", "--out", "/etc/keys"); err == nil {
		t.Fatalf("shake keys init into /etc succeeded: the image's user can write where only root can: %s", out)
	}
	if out, err := run("--entrypoint", "/bin/sh", tag, "-c", "true"); err == nil {
		t.Fatalf("the image has a shell: %s", out)
	}
	size, err := exec.Command(podman, "image", "inspect", "--format", "{{.Size}}", tag).Output()
	if err != nil {
		t.Fatalf("podman image inspect: %v", err)
	}
	n, _ := strconv.ParseInt(strings.TrimSpace(string(size)), 10, 64)
	t.Logf("image %s: %d bytes (%.1f MiB), user %s", tag, n, float64(n)/(1<<20), u)
}

var fromLine = regexp.MustCompile(`(?im)^FROM\s+(\S+)(?:\s+AS\s+(\S+))?\s*$`)

// splitDockerfile returns the text of the stage named build and the Dockerfile's last
// stage, which must be FROM scratch (the run-time stage), from its FROM line to the end.
func splitDockerfile(df string) (build, final string, err error) {
	locs := fromLine.FindAllStringSubmatchIndex(df, -1)
	if len(locs) < 2 {
		return "", "", fmt.Errorf("want a build stage and a run-time stage, found %d FROM lines", len(locs))
	}
	last := locs[len(locs)-1]
	if img := df[last[2]:last[3]]; !strings.EqualFold(img, "scratch") {
		return "", "", fmt.Errorf("the last stage is FROM %s, not FROM scratch", img)
	}
	for i, l := range locs[:len(locs)-1] {
		if l[4] >= 0 && df[l[4]:l[5]] == "build" {
			build = df[l[0]:locs[i+1][0]]
		}
	}
	if build == "" {
		return "", "", fmt.Errorf("no stage named build")
	}
	final = df[last[0]:]
	if !strings.Contains(final, "--from=build") {
		return "", "", fmt.Errorf("the run-time stage copies nothing from the build stage")
	}
	return build, final, nil
}

// dockerfileLdflags returns the build stage's -ldflags "..." with ${VERSION} and
// ${REVISION} replaced, so that the locally built binary is linked the same way.
func dockerfileLdflags(build, version, revision string) (string, error) {
	m := regexp.MustCompile(`-ldflags\s+"([^"]*)"`).FindStringSubmatch(build)
	if m == nil {
		return "", fmt.Errorf("no -ldflags \"...\" in the build stage")
	}
	if !strings.Contains(build, "CGO_ENABLED=0") {
		return "", fmt.Errorf("the build stage does not build with CGO_ENABLED=0: the binary would not run on scratch")
	}
	return strings.NewReplacer("${VERSION}", version, "${REVISION}", revision).Replace(m[1]), nil
}
