package deploytest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
)

// k8sTypes maps apiVersion/kind to the Go type of the Kubernetes API (k8s.io/api, a
// test-only dependency of this package) that an object of deploy/kubernetes must decode
// into with no unknown field: the API's own schema, offline.
var k8sTypes = map[string]func() any{
	"v1/Namespace":                       func() any { return &corev1.Namespace{} },
	"v1/ConfigMap":                       func() any { return &corev1.ConfigMap{} },
	"v1/Secret":                          func() any { return &corev1.Secret{} },
	"v1/Service":                         func() any { return &corev1.Service{} },
	"v1/PersistentVolumeClaim":           func() any { return &corev1.PersistentVolumeClaim{} },
	"v1/Pod":                             func() any { return &corev1.Pod{} },
	"v1/ServiceAccount":                  func() any { return &corev1.ServiceAccount{} },
	"apps/v1/StatefulSet":                func() any { return &appsv1.StatefulSet{} },
	"apps/v1/Deployment":                 func() any { return &appsv1.Deployment{} },
	"batch/v1/Job":                       func() any { return &batchv1.Job{} },
	"policy/v1/PodDisruptionBudget":      func() any { return &policyv1.PodDisruptionBudget{} },
	"networking.k8s.io/v1/NetworkPolicy": func() any { return &networkingv1.NetworkPolicy{} },
}

// validateK8s decodes one rendered object strictly into its API type: an unknown kind,
// a misspelled field or a value of the wrong type is an error naming the object.
func validateK8s(doc map[string]any) error {
	kind := fmt.Sprint(doc["apiVersion"]) + "/" + fmt.Sprint(doc["kind"])
	name := fmt.Sprint(get(doc, "metadata", "name"))
	mk, ok := k8sTypes[kind]
	if !ok {
		return fmt.Errorf("%s %s: not a kind this check knows", kind, name)
	}
	b, err := json.Marshal(doc)
	if err != nil {
		return fmt.Errorf("%s %s: %v", kind, name, err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(mk()); err != nil {
		return fmt.Errorf("%s %s: %v", kind, name, err)
	}
	return nil
}

// TestKubernetesSchema renders every kustomization of deploy/kubernetes and validates
// every object against the Kubernetes API types; it also proves the check sees a
// misspelled field, a wrong type and an unknown kind.
func TestKubernetesSchema(t *testing.T) {
	for _, dir := range []string{"base", "first-start"} {
		docs := render(t, filepath.Join(deployDir(t), "kubernetes", dir))
		if len(docs) == 0 {
			t.Fatalf("%s renders nothing", dir)
		}
		valid := 0
		for _, d := range docs {
			if err := validateK8s(d); err != nil {
				t.Errorf("%s: %v", dir, err)
				continue
			}
			valid++
		}
		t.Logf("%s: %d of %d objects valid against the Kubernetes API types", dir, valid, len(docs))
	}
	bad := []struct {
		doc  string
		want string
	}{
		{`{"apiVersion":"apps/v1","kind":"StatefulSet","metadata":{"name":"x"},"spec":{"replica":2}}`, `unknown field "replica"`},
		{`{"apiVersion":"v1","kind":"Service","metadata":{"name":"x"},"spec":{"ports":[{"port":"http"}]}}`, "cannot unmarshal string"},
		{`{"apiVersion":"apps/v1","kind":"Deploymnet","metadata":{"name":"x"}}`, "not a kind"},
	}
	for _, b := range bad {
		var d map[string]any
		json.Unmarshal([]byte(b.doc), &d)
		if err := validateK8s(d); err == nil || !strings.Contains(err.Error(), b.want) {
			t.Errorf("%s: %v, want an error with %q", b.doc, err, b.want)
		}
	}
}
