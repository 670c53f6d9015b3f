package deploytest

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// k8sObjects renders a kustomization of deploy/kubernetes and indexes it by kind/name.
func k8sObjects(t *testing.T, dir string) map[string]map[string]any {
	t.Helper()
	objs := map[string]map[string]any{}
	for _, d := range render(t, filepath.Join(deployDir(t), "kubernetes", dir)) {
		objs[fmt.Sprint(d["kind"])+"/"+fmt.Sprint(get(d, "metadata", "name"))] = d
	}
	return objs
}

// podContainers returns the containers of a workload's pod template (or a Pod's).
func podContainers(d map[string]any) []any {
	if c := list(get(d, "spec", "template", "spec", "containers")); c != nil {
		return c
	}
	return list(get(d, "spec", "containers"))
}

// TestKubernetesOperable checks what an operator of deploy/kubernetes relies on beyond
// the schema: pinned images, readiness probes that tolerate a slow answer at peak,
// edges and verifiers spread over nodes, each role given only its own admin key and a
// switches file on its volume, the query server on read-only credentials, the proxy's
// configuration exactly render.sh's, and a Job for the topics.
func TestKubernetesOperable(t *testing.T) {
	objs := k8sObjects(t, "base")
	for key, d := range objs {
		for _, c := range podContainers(d) {
			name := key + "/" + fmt.Sprint(get(c, "name"))
			img := fmt.Sprint(get(c, "image"))
			if tag := img[strings.LastIndex(img, "/")+1:]; !strings.Contains(tag, ":") || strings.HasSuffix(tag, ":latest") {
				t.Errorf("%s: image %q has no pinned tag", name, img)
			}
			if r := get(c, "readinessProbe"); r != nil {
				if ft, _ := get(r, "failureThreshold").(int); ft < 3 || get(r, "timeoutSeconds") == nil {
					t.Errorf("%s: readiness probe leaves the Service at one slow answer (failureThreshold %v, timeoutSeconds %v)", name, ft, get(r, "timeoutSeconds"))
				}
			}
			checkRoleKeys(t, name, d, c)
		}
	}
	for _, w := range []string{"StatefulSet/shake-edge", "StatefulSet/shake-verifier"} {
		pod := get(objs[w], "spec", "template", "spec")
		if get(pod, "affinity", "podAntiAffinity") == nil || get(pod, "topologySpreadConstraints") == nil {
			t.Errorf("%s: no pod anti-affinity or topology spread", w)
		}
	}
	if objs["Deployment/shake-query"] == nil || objs["Service/shake-query"] == nil {
		t.Fatal("no query Deployment and Service")
	}
	q := podContainers(objs["Deployment/shake-query"])[0]
	ledger := envOf(q)["SHAKE_LEDGER"]
	if !strings.Contains(fmt.Sprint(get(q, "args")), "--ledger-password-file") || strings.Contains(strings.SplitN(strings.TrimPrefix(ledger, "postgres://"), "@", 2)[0], ":") ||
		!strings.Contains(fmt.Sprint(get(objs["Deployment/shake-query"], "spec", "template", "spec", "volumes")), "shake-ledger-readonly") {
		t.Errorf("query: ledger %q is not the read-only credentials of shake-ledger-readonly", ledger)
	}
	if args := fmt.Sprint(get(podContainers(objs["Job/shake-topics-create"])[0], "args")); !strings.HasPrefix(args, "[topics create") {
		t.Errorf("topics Job runs %s", args)
	}
	want, err := exec.Command("sh", filepath.Join(deployDir(t), "haproxy", "render.sh"), "-V", "2",
		"-v", "shake-verifier-%d.shake-verifier.shake.svc.cluster.local:8081", "-e", "shake-edge.shake.svc.cluster.local:8080").Output()
	if err != nil || fmt.Sprint(get(objs["ConfigMap/shake-proxy"], "data", "haproxy.cfg")) != string(want) {
		t.Errorf("proxy.yaml's haproxy.cfg is not render.sh's output for the Kubernetes names (%v): render it again", err)
	}
}

// envOf returns a container's plain environment.
func envOf(c any) map[string]string {
	env := map[string]string{}
	for _, e := range list(get(c, "env")) {
		env[fmt.Sprint(get(e, "name"))] = fmt.Sprint(get(e, "value"))
	}
	return env
}

// checkRoleKeys: a shake server of role R is given admin-R.key and no other admin key
// (nor admin.key), and the edges, verifiers and settlers keep a switches file on a
// volume claim of their own.
func checkRoleKeys(t *testing.T, name string, w map[string]any, c any) {
	t.Helper()
	args := list(get(c, "args"))
	if len(args) == 0 || fmt.Sprint(get(c, "image")) == "" || !strings.Contains(fmt.Sprint(get(c, "image")), "shake") {
		return
	}
	role := fmt.Sprint(args[0])
	for _, v := range list(get(w, "spec", "template", "spec", "volumes")) {
		for _, it := range list(get(v, "secret", "items")) {
			if k := fmt.Sprint(get(it, "key")); strings.HasPrefix(k, "admin") && k != "admin-"+role+".key" {
				t.Errorf("%s (%s) is given %s", name, role, k)
			}
		}
		if get(v, "secret", "secretName") == "shake-keys" && get(v, "secret", "items") == nil {
			t.Errorf("%s: mounts every key of shake-keys, not only its own", name)
		}
	}
	if !slices.Contains([]string{"edge", "verifier", "settler", "query"}, role) {
		return
	}
	env := envOf(c)
	if env["SHAKE_ADMIN_KEY"] != "/keys/shared/admin-"+role+".key" {
		t.Errorf("%s: admin key %q, want its role's", name, env["SHAKE_ADMIN_KEY"])
	}
	if role == "query" {
		return
	}
	sw, onClaim := env["SHAKE_SWITCHES"], false
	for _, m := range list(get(c, "volumeMounts")) {
		for _, ct := range list(get(w, "spec", "volumeClaimTemplates")) {
			if get(ct, "metadata", "name") == get(m, "name") && strings.HasPrefix(sw, fmt.Sprint(get(m, "mountPath"))+"/") {
				onClaim = true
			}
		}
	}
	if !onClaim {
		t.Errorf("%s: switches file %q is not on a volume claim of its own", name, sw)
	}
}

// TestKubernetesFirstStart: every edge shard has a state volume named as the StatefulSet
// names its claims and one Job that creates the state file once (--init-state
// --init-only); the edges themselves never pass --init-state.
func TestKubernetesFirstStart(t *testing.T) {
	first, base := k8sObjects(t, "first-start"), k8sObjects(t, "base")
	replicas, _ := get(base["StatefulSet/shake-edge"], "spec", "replicas").(int)
	for i := 0; i < replicas; i++ {
		job := first[fmt.Sprintf("Job/shake-edge-init-%d", i)]
		args := fmt.Sprint(get(podContainers(job)[0], "args"))
		if first[fmt.Sprintf("PersistentVolumeClaim/state-shake-edge-%d", i)] == nil || !strings.Contains(args, "--init-state --init-only") {
			t.Errorf("shard %d: no state volume state-shake-edge-%d or no Job running edge --init-state --init-only (%s)", i, i, args)
		}
	}
	if first["PersistentVolumeClaim/shake-campaign"] == nil || first["Pod/shake-campaign-loader"] == nil {
		t.Error("no campaign volume or no loader pod")
	}
	edge := fmt.Sprint(base["StatefulSet/shake-edge"])
	if strings.Contains(edge, "init-state") || strings.Contains(edge, "INIT_STATE") {
		t.Error("the edge StatefulSet passes --init-state: a restart on a lost state file would reissue tickets")
	}
}

// TestKubernetesNetworkPolicy: the verifiers' public port admits only the proxy, and
// every admin port of every role only Prometheus.
func TestKubernetesNetworkPolicy(t *testing.T) {
	admin := map[string]bool{"9080": true, "9081": true, "8082": true, "8084": true, "9083": true, "8404": true}
	seen := map[string]bool{}
	for key, d := range k8sObjects(t, "base") {
		if !strings.HasPrefix(key, "NetworkPolicy/") {
			continue
		}
		for _, rule := range list(get(d, "spec", "ingress")) {
			from := fmt.Sprint(get(rule, "from"))
			for _, p := range list(get(rule, "ports")) {
				port := fmt.Sprint(get(p, "port"))
				seen[port] = true
				if admin[port] && (!strings.Contains(from, "prometheus") || !strings.Contains(from, "namespaceSelector")) {
					t.Errorf("%s: admin port %s open to %s", key, port, from)
				}
				if port == "8081" && !strings.Contains(from, "shake-proxy") {
					t.Errorf("%s: the verifiers' port 8081 open to %s", key, from)
				}
			}
		}
	}
	for p := range admin {
		if !seen[p] {
			t.Errorf("no NetworkPolicy covers admin port %s", p)
		}
	}
}
