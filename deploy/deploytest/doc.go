// Package deploytest proves the operations kit in deploy/ with the tools operators run
// it with: promtool (rules and their unit tests, /metrics lint), a real Prometheus
// scraping a running chain, systemd-analyze, kustomize, and buildah or podman. Each test
// skips, saying what is missing, when its tool is absent; .ci/run installs them from
// Debian so that CI runs them all.
package deploytest
