package control

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"

	"shake/ticket"
)

func put(s *Store, token, body string) (int, string) {
	var ctx fasthttp.RequestCtx
	ctx.Request.Header.SetMethod("PUT")
	ctx.Request.SetRequestURI(SwitchesPath)
	if token != "" {
		ctx.Request.Header.Set("Authorization", "Bearer "+token)
	}
	ctx.Request.SetBodyString(body)
	s.Handler(&ctx)
	return ctx.Response.StatusCode(), string(ctx.Response.Body())
}

// TestStoreNothingChangesWhenTheFileCannotBeWritten: the file is written before the
// change is applied, so a write failure is a 500 and the server keeps the old value.
func TestStoreNothingChangesWhenTheFileCannotBeWritten(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "switches")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	key := ticket.NewKey()
	applied := 0
	s, err := New(Config{Role: "edge", Options: Options{File: filepath.Join(dir, "sw.json"), AdminKey: key},
		Apply: func(context.Context, *ticket.Switches) error { applied++; return nil }})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// The directory goes away under the running server: no write can succeed, even
	// as root (a read-only mode would not stop root, and CI runs as root).
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	code, body := put(s, ticket.AdminToken(key), `{"version":1,"edge":{"paused":true}}`)
	if code != 500 || !strings.Contains(body, "cannot write") {
		t.Errorf("PUT with an unwritable file: %d %s", code, body)
	}
	if applied != 1 || s.Current().Version != 0 || s.Current().Edge.Paused {
		t.Errorf("applied %d times, current %s", applied, s.Current().JSON())
	}
}

// TestStoreLoadsAndRefusesABadFile: a valid file is applied at start; an invalid one
// stops the server from starting, naming the field.
func TestStoreLoadsAndRefusesABadFile(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "sw.json")
	os.WriteFile(f, []byte(`{"version":4,"settler":{"paused":true}}`), 0o600)
	var got *ticket.Switches
	s, err := New(Config{Role: "settler", Options: Options{File: f},
		Apply: func(_ context.Context, d *ticket.Switches) error { got = d; return nil }})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if got == nil || got.Version != 4 || !got.Settler.Paused {
		t.Fatalf("applied %v", got)
	}
	os.WriteFile(f, []byte(`{"version":5,"settler":{"pause":true}}`), 0o600)
	if _, err := New(Config{Role: "settler", Options: Options{File: f},
		Apply: func(context.Context, *ticket.Switches) error { return nil }}); err == nil || !strings.Contains(err.Error(), "settler.pause") {
		t.Fatalf("bad file: %v", err)
	}
}

// TestStoreCheckRefusesBeforeWriting: a document Check refuses (a shard the campaign
// does not have) is 400 naming the field, and neither written nor recorded nor
// applied; at start it stops the server.
func TestStoreCheckRefusesBeforeWriting(t *testing.T) {
	f := filepath.Join(t.TempDir(), "sw.json")
	key := ticket.NewKey()
	applied := 0
	cfg := Config{Role: "verifier", Options: Options{File: f, AdminKey: key},
		Check: func(d *ticket.Switches) error { return d.CheckAgainst(1, 2) },
		Apply: func(context.Context, *ticket.Switches) error { applied++; return nil }}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	code, body := put(s, ticket.AdminToken(key), `{"version":1,"verifier":{"revoked_shards":[2]}}`)
	if code != 400 || !strings.Contains(body, `"field":"verifier.revoked_shards"`) {
		t.Errorf("unknown shard: %d %s", code, body)
	}
	if _, err := os.Stat(f); err == nil || s.Current().Version != 0 || applied != 1 {
		t.Errorf("refused document: file %v, current %s, applied %d times", err, s.Current().JSON(), applied)
	}
	os.WriteFile(f, []byte(`{"version":1,"edge":{"closed_rounds":[1]}}`), 0o600)
	if _, err := New(cfg); err == nil || !strings.Contains(err.Error(), "edge.closed_rounds") {
		t.Errorf("a file closing an unknown round at start: %v", err)
	}
}
