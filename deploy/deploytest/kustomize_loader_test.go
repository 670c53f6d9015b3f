package deploytest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// miniKustomize renders a kustomization using only what deploy/kubernetes uses:
// resources (files), namespace (on namespaced objects), labels without selectors, and
// images (name -> newName:newTag). It stands in for kustomize where no kustomize or
// kubectl binary is installed, and refuses any other field rather than render it wrong.
func miniKustomize(dir string) ([]map[string]any, error) {
	b, err := os.ReadFile(filepath.Join(dir, "kustomization.yaml"))
	if err != nil {
		return nil, err
	}
	var k struct {
		APIVersion string `yaml:"apiVersion"`
		Kind       string `yaml:"kind"`
		Namespace  string `yaml:"namespace"`
		Labels     []struct {
			Pairs            map[string]string `yaml:"pairs"`
			IncludeSelectors bool              `yaml:"includeSelectors"`
		} `yaml:"labels"`
		Resources []string `yaml:"resources"`
		Images    []struct {
			Name    string `yaml:"name"`
			NewName string `yaml:"newName"`
			NewTag  string `yaml:"newTag"`
		} `yaml:"images"`
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&k); err != nil {
		return nil, fmt.Errorf("kustomization.yaml: %v (the minimal loader knows only resources, namespace, labels, images)", err)
	}
	var out []map[string]any
	for _, r := range k.Resources {
		f, err := os.ReadFile(filepath.Join(dir, r))
		if err != nil {
			return nil, err
		}
		d := yaml.NewDecoder(bytes.NewReader(f))
		for {
			var doc map[string]any
			if err := d.Decode(&doc); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				return nil, fmt.Errorf("%s: %v", r, err)
			}
			if doc == nil {
				continue
			}
			md, _ := doc["metadata"].(map[string]any)
			if k.Namespace != "" && doc["kind"] != "Namespace" {
				md["namespace"] = k.Namespace
			}
			for _, l := range k.Labels {
				if l.IncludeSelectors {
					return nil, errors.New("labels with includeSelectors: not supported by the minimal loader")
				}
				labels, _ := md["labels"].(map[string]any)
				if labels == nil {
					labels = map[string]any{}
					md["labels"] = labels
				}
				for kk, v := range l.Pairs {
					labels[kk] = v
				}
			}
			for _, c := range list(get(doc, "spec", "template", "spec", "containers")) {
				cm := c.(map[string]any)
				for _, im := range k.Images {
					if cm["image"] == im.Name {
						cm["image"] = im.NewName + ":" + im.NewTag
					}
				}
			}
			out = append(out, doc)
		}
	}
	return out, nil
}

func docKey(d map[string]any) string {
	return fmt.Sprint(d["kind"], "/", get(d, "metadata", "namespace"), "/", get(d, "metadata", "name"))
}

// TestMiniKustomizeAgreesWithKustomize checks the fallback renderer against the real one
// on the same objects, where a real one is installed: the fields the kit test reads
// (containers, volumes, probes, env, claims) must be the same.
func TestMiniKustomizeAgreesWithKustomize(t *testing.T) {
	dir := filepath.Join(deployDir(t), "kubernetes", "base")
	mini, err := miniKustomize(dir)
	if err != nil {
		t.Fatal(err)
	}
	real := render(t, dir)
	if len(real) != len(mini) {
		t.Fatalf("kustomize renders %d objects, the minimal loader %d", len(real), len(mini))
	}
	byKey := map[string]map[string]any{}
	for _, d := range real {
		byKey[docKey(d)] = d
	}
	var keys []string
	for _, d := range mini {
		keys = append(keys, docKey(d))
		r := byKey[docKey(d)]
		if r == nil {
			t.Errorf("%s: only the minimal loader has it", docKey(d))
			continue
		}
		for _, path := range [][]string{{"spec", "template", "spec"}, {"spec", "volumeClaimTemplates"}, {"data"}, {"spec", "selector"}} {
			if !reflect.DeepEqual(normalize(get(r, path...)), normalize(get(d, path...))) {
				t.Errorf("%s %s differs:\nkustomize: %v\nminimal:   %v", docKey(d), strings.Join(path, "."), get(r, path...), get(d, path...))
			}
		}
	}
	sort.Strings(keys)
	t.Logf("the minimal loader agrees with kustomize on %d objects", len(keys))
}

// normalize turns YAML numbers into one type, so 0400 from two decoders compares equal.
func normalize(v any) any {
	switch v := v.(type) {
	case map[string]any:
		m := map[string]any{}
		for k, x := range v {
			m[k] = normalize(x)
		}
		return m
	case []any:
		l := make([]any, len(v))
		for i, x := range v {
			l[i] = normalize(x)
		}
		return l
	case int:
		return float64(v)
	}
	return v
}
