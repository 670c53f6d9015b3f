package api

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// document is the part of openapi.json these tests read beyond what loadContract does:
// operation ids, response examples and the enum of error codes.
type document struct {
	Components struct {
		Schemas map[string]struct {
			Enum []string `json:"enum"`
		} `json:"schemas"`
	} `json:"components"`
	Paths map[string]map[string]struct {
		OperationID string `json:"operationId"`
		Responses   map[string]struct {
			Content map[string]struct {
				Examples map[string]struct {
					Value map[string]any `json:"value"`
				} `json:"examples"`
			} `json:"content"`
		} `json:"responses"`
	} `json:"paths"`
}

func loadDocument(t *testing.T) document {
	t.Helper()
	var d document
	if err := json.Unmarshal(OpenAPI, &d); err != nil {
		t.Fatalf("openapi.json: %v", err)
	}
	return d
}

// TestOperationIDs: every operation has an operationId, and no two share one (client
// generators name their methods after them).
func TestOperationIDs(t *testing.T) {
	seen := map[string]string{}
	for path, methods := range loadDocument(t).Paths {
		for method, op := range methods {
			ep := strings.ToUpper(method) + " " + path
			switch other, dup := seen[op.OperationID]; {
			case op.OperationID == "":
				t.Errorf("%s has no operationId", ep)
			case dup:
				t.Errorf("%s and %s share the operationId %q", ep, other, op.OperationID)
			}
			seen[op.OperationID] = ep
		}
	}
}

// TestExamplesAreDocumentedAnswers: each response's examples are exactly its documented
// answers, one example per answer (status, top-level keys, result or error code, array
// item keys), so an example cannot drift from the contract TestContract holds the
// servers to.
func TestExamplesAreDocumentedAnswers(t *testing.T) {
	c := loadContract(t)
	for path, methods := range loadDocument(t).Paths {
		for method, op := range methods {
			ep := strings.ToUpper(method) + " " + path
			for code, resp := range op.Responses {
				status, _ := strconv.Atoi(code)
				exampled := map[shape]bool{}
				for name, ex := range resp.Content["application/json"].Examples {
					sh := shapeOf(ep, status, ex.Value)
					if _, ok := c.shapes[sh]; !ok {
						t.Errorf("%s %d: example %q is not a documented answer: %v", ep, status, name, sh)
					}
					checkItems(t, c, sh, name, ex.Value)
					exampled[sh] = true
				}
				for sh := range c.shapes {
					if sh.endpoint == ep && sh.status == status && !exampled[sh] {
						t.Errorf("documented answer without an example: %v", sh)
					}
				}
			}
		}
	}
}

// shapeOf is the shape of a decoded answer, as the observer of TestContract takes it.
func shapeOf(ep string, status int, m map[string]any) shape {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	sh := shape{endpoint: ep, status: status, keys: strings.Join(keys, ",")}
	for _, f := range []string{"result", "error"} {
		if v, ok := m[f].(string); ok {
			sh.disc = v
		}
	}
	return sh
}

func checkItems(t *testing.T, c *contract, sh shape, name string, m map[string]any) {
	t.Helper()
	for k, v := range m {
		arr, ok := v.([]any)
		if !ok {
			continue
		}
		want := c.items[fmt.Sprintf("%s %d %s", sh.endpoint, sh.status, k)]
		for _, it := range arr {
			im, _ := it.(map[string]any)
			if got := sortedKeys(im); got != want {
				t.Errorf("%v: example %q: an item of %s has keys {%s}, documented {%s}", sh, name, k, got, want)
			}
		}
	}
}

// TestErrorCodesAreProduced: components.schemas.ErrorCode lists exactly the error codes
// of the documented answers that are not pending, which TestContract makes the real
// handlers produce; so every code a client is told about is one the servers answer,
// and every code they answer is listed.
func TestErrorCodesAreProduced(t *testing.T) {
	c := loadContract(t)
	listed := loadDocument(t).Components.Schemas["ErrorCode"].Enum
	if len(listed) == 0 {
		t.Fatal("openapi.json: components.schemas.ErrorCode has no enum")
	}
	produced := map[string]bool{}
	for sh, pending := range c.shapes {
		if sh.disc != "" && pending == "" && strings.Contains(","+sh.keys+",", ",error,") {
			produced[sh.disc] = true
		}
	}
	for _, code := range listed {
		if !produced[code] {
			t.Errorf("ErrorCode %q is on no documented answer the servers are held to", code)
		}
		delete(produced, code)
	}
	for code := range produced {
		t.Errorf("error code %q is answered but missing from ErrorCode", code)
	}
}

// TestAPIDocNamesEveryErrorCode: docs/api.md, the contract in words, shows every error
// code of ErrorCode as the body a client receives ({"error":"<code>"}).
func TestAPIDocNamesEveryErrorCode(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "docs", "api.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, code := range loadDocument(t).Components.Schemas["ErrorCode"].Enum {
		if !strings.Contains(string(doc), `{"error":"`+code+`"`) {
			t.Errorf("docs/api.md does not show the error code %q", code)
		}
	}
}
