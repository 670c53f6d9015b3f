// Package api holds the client contract of shake for app teams: the OpenAPI 3 document
// of /v1/shake, /v1/open, /v1/packets and /v1/campaigns/{id} (openapi.json, checked
// against the real edge, verifier and query handlers by contract_test.go) and
// language-neutral session-token test vectors (testdata/session_vectors.json).
package api

import _ "embed"

// OpenAPI is the OpenAPI 3 document of the client endpoints.
//
//go:embed openapi.json
var OpenAPI []byte
