package deploytest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// render runs kustomize (the kustomize binary, else kubectl's built-in kustomize) on dir.
func render(t *testing.T, dir string) []map[string]any {
	t.Helper()
	var cmd *exec.Cmd
	if p, err := exec.LookPath("kustomize"); err == nil {
		cmd = exec.Command(p, "build", dir)
	} else if p, err := exec.LookPath("kubectl"); err == nil {
		cmd = exec.Command(p, "kustomize", dir)
	} else {
		if t.Name() == "TestMiniKustomizeAgreesWithKustomize" {
			t.Skip("neither kustomize nor kubectl installed: nothing to compare the minimal loader with")
		}
		t.Log("neither kustomize nor kubectl installed: rendering with the minimal kustomize loader of this package")
		docs, err := miniKustomize(dir)
		if err != nil {
			t.Fatal(err)
		}
		return docs
	}
	t.Logf("rendering with %s", strings.Join(cmd.Args, " "))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v: %v\n%s", cmd.Args, err, out)
	}
	dec := yaml.NewDecoder(bytes.NewReader(out))
	var docs []map[string]any
	for {
		var d map[string]any
		err := dec.Decode(&d)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("rendered output: %v", err)
		}
		if d != nil {
			docs = append(docs, d)
		}
	}
	return docs
}

func get(v any, path ...string) any {
	for _, p := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[p]
	}
	return v
}

func list(v any) []any { l, _ := v.([]any); return l }

// servedPaths are what every shake server answers on its admin listener.
var servedPaths = map[string]bool{"/healthz": true, "/readyz": true, "/metrics": true}

// TestKustomizeBase renders the base and checks what an operator relies on: every edge
// has a persistent state volume, every verifier a spool volume and a uid shard from its
// ordinal, every probe points at a served path on a declared port, readiness is
// /readyz, no secret is in plain environment, every workload has resources, a PDB
// and a non-root, read-only container.
func TestKustomizeBase(t *testing.T) {
	docs := render(t, filepath.Join(deployDir(t), "kubernetes", "base"))
	kinds := map[string]int{}
	pdbs := map[string]bool{}
	var workloads []map[string]any
	for _, d := range docs {
		k, _ := d["kind"].(string)
		kinds[k]++
		switch k {
		case "StatefulSet", "Deployment":
			workloads = append(workloads, d)
		case "PodDisruptionBudget":
			pdbs[fmt.Sprint(get(d, "spec", "selector", "matchLabels", "app.kubernetes.io/name"))] = true
		case "Secret":
			t.Errorf("the base ships a Secret (%v): keys are created by the operator, never kept in git", get(d, "metadata", "name"))
		}
	}
	if kinds["StatefulSet"] != 3 || kinds["Deployment"] != 3 {
		t.Fatalf("workloads: %v", kinds)
	}
	for _, w := range workloads {
		name := fmt.Sprint(get(w, "metadata", "name"))
		if get(w, "metadata", "namespace") != "shake" {
			t.Errorf("%s is not in the shake namespace", name)
		}
		pod := get(w, "spec", "template", "spec")
		if get(pod, "securityContext", "runAsNonRoot") != true {
			t.Errorf("%s: not runAsNonRoot", name)
		}
		claims := map[string]bool{}
		for _, c := range list(get(w, "spec", "volumeClaimTemplates")) {
			claims[fmt.Sprint(get(c, "metadata", "name"))] = true
		}
		for _, c := range list(get(pod, "containers")) {
			cname := name + "/" + fmt.Sprint(get(c, "name"))
			ports := map[string]bool{}
			for _, p := range list(get(c, "ports")) {
				ports[fmt.Sprint(get(p, "name"))] = true
				ports[fmt.Sprint(get(p, "containerPort"))] = true
			}
			for _, probe := range []string{"readinessProbe", "livenessProbe", "startupProbe"} {
				p := get(c, probe)
				if p == nil {
					if probe != "startupProbe" {
						t.Errorf("%s has no %s", cname, probe)
					}
					continue
				}
				path := fmt.Sprint(get(p, "httpGet", "path"))
				port := fmt.Sprint(get(p, "httpGet", "port"))
				if !servedPaths[path] || !ports[port] {
					t.Errorf("%s %s: %s on port %s, not a served path on a declared port", cname, probe, path, port)
				}
				if probe == "readinessProbe" && path != "/readyz" {
					t.Errorf("%s: readiness on %s, want /readyz", cname, path)
				}
			}
			if get(c, "resources", "requests", "cpu") == nil || get(c, "resources", "limits", "memory") == nil {
				t.Errorf("%s: no cpu request or memory limit", cname)
			}
			if get(c, "securityContext", "readOnlyRootFilesystem") != true || get(c, "securityContext", "allowPrivilegeEscalation") != false {
				t.Errorf("%s: root filesystem writable or privilege escalation allowed", cname)
			}
			env := map[string]any{}
			for _, e := range list(get(c, "env")) {
				n := fmt.Sprint(get(e, "name"))
				env[n] = get(e, "value")
				if get(e, "valueFrom", "secretKeyRef") != nil {
					t.Errorf("%s: $%s comes from a Secret in the environment: mount it as a file", cname, n)
				}
				if v, ok := env[n].(string); ok && (strings.Contains(strings.ToLower(n), "password") || strings.Contains(v, ":") && strings.Contains(v, "@") && strings.HasPrefix(v, "postgres")) {
					if strings.Contains(strings.SplitN(strings.TrimPrefix(v, "postgres://"), "@", 2)[0], ":") {
						t.Errorf("%s: a password in plain env $%s", cname, n)
					}
				}
			}
			for _, e := range list(get(c, "envFrom")) {
				if get(e, "secretRef") != nil {
					t.Errorf("%s: a Secret loaded into the environment", cname)
				}
			}
			args := fmt.Sprint(get(c, "args"))
			if strings.Contains(args, "password=") || strings.Contains(args, "://") && strings.Contains(args, "@") {
				t.Errorf("%s: credentials on the command line: %s", cname, args)
			}
			mounts := map[string]bool{}
			for _, m := range list(get(c, "volumeMounts")) {
				mounts[fmt.Sprint(get(m, "mountPath"))+"<-"+fmt.Sprint(get(m, "name"))] = true
			}
			switch get(c, "name") {
			case "edge":
				state, _ := env["SHAKE_STATE"].(string)
				if !claims["state"] || state == "" || !mounts[filepath.Dir(state)+"<-state"] {
					t.Errorf("%s: the state file %q is not on the persistent volume claim template 'state'", cname, state)
				}
				if get(w, "spec", "persistentVolumeClaimRetentionPolicy", "whenDeleted") != "Retain" {
					t.Errorf("%s: state volumes are not retained when the StatefulSet is deleted", cname)
				}
				if get(c, "lifecycle", "preStop") == nil {
					t.Errorf("%s: no preStop: the Service would still send traffic during --drain", cname)
				}
			case "verifier":
				spool, _ := env["SHAKE_SPOOL"].(string)
				if !claims["data"] || !mounts[filepath.Dir(spool)+"<-data"] {
					t.Errorf("%s: the spool %q is not on the persistent volume claim template 'data'", cname, spool)
				}
				if s, _ := env["SHAKE_UID_SHARD"].(string); !strings.HasPrefix(s, "$(") {
					t.Errorf("%s: --uid-shard %q does not come from the ordinal", cname, s)
				}
			}
		}
		app := fmt.Sprint(get(w, "spec", "selector", "matchLabels", "app.kubernetes.io/name"))
		if app != "shake-reconcile" && !pdbs[app] {
			t.Errorf("%s has no PodDisruptionBudget", name)
		}
	}
}
