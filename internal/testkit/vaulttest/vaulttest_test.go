package vaulttest_test

import (
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/astro-sts/astro-sts/internal/testkit/vaulttest"
)

// vaultBinary skips the test when no Vault binary is built, except in CI,
// where that is a failure.
func vaultBinary(t *testing.T) string {
	t.Helper()
	bin, ok := vaulttest.Binary()
	if !ok {
		if vaulttest.Required() {
			t.Fatalf("CI=true but %s (looked for %s)", vaulttest.BuildHint, bin)
		}
		t.Skipf("%s (looked for %s)", vaulttest.BuildHint, bin)
	}
	return bin
}

func TestStartWriteReadClose(t *testing.T) {
	bin := vaultBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	home := t.TempDir()
	t.Setenv("HOME", home)

	s, err := vaulttest.Start(ctx, bin)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	kv := s.Client().KVv2("secret")
	if _, err := kv.Put(ctx, "vaulttest/probe", map[string]any{"k": "v"}); err != nil {
		t.Fatalf("KV v2 at secret/: %v", err)
	}
	got, err := kv.Get(ctx, "vaulttest/probe")
	if err != nil {
		t.Fatal(err)
	}
	if got.Data["k"] != "v" {
		t.Errorf("read back %v, want k=v", got.Data)
	}

	// A client without the root token is refused: the server really
	// enforces tokens.
	anon, err := s.NewClient("")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := anon.KVv2("secret").Get(ctx, "vaulttest/probe"); err == nil {
		t.Error("read without a token succeeded")
	}

	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// The dev server never stores its token in the caller's home.
	if _, err := os.Stat(filepath.Join(home, ".vault-token")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("~/.vault-token: %v, want it absent", err)
	}
	// After Close the server no longer answers and the process is gone.
	hc := &http.Client{Timeout: time.Second}
	if resp, err := hc.Get(s.Addr + "/v1/sys/health"); err == nil {
		resp.Body.Close()
		t.Errorf("server still answers after Close: %s", resp.Status)
	}
}

func TestCloseReapsProcess(t *testing.T) {
	bin := vaultBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := vaulttest.Start(ctx, bin)
	if err != nil {
		t.Fatal(err)
	}
	pid := s.PID()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	// Signal 0 probes for the process: after a reaped exit it is gone.
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("process %d after Close: kill(0) = %v, want ESRCH", pid, err)
	}
}

func TestStartMissingBinary(t *testing.T) {
	_, err := vaulttest.Start(context.Background(), filepath.Join(t.TempDir(), "no-such-vault"))
	if err == nil {
		t.Fatal("Start with a missing binary succeeded")
	}
}

func TestBinaryFromEnv(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "vault")
	t.Setenv(vaulttest.EnvBinary, bin)
	if _, ok := vaulttest.Binary(); ok {
		t.Errorf("Binary() ok for a missing %s", bin)
	}
	if err := os.WriteFile(bin, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if got, ok := vaulttest.Binary(); !ok || got != bin {
		t.Errorf("Binary() = %q, %v; want %q, true", got, ok, bin)
	}

	t.Setenv(vaulttest.EnvBinary, "")
	t.Setenv("ASTRO_STS_CACHE", dir)
	if got, _ := vaulttest.Binary(); got != filepath.Join(dir, "vault-"+vaulttest.Version) {
		t.Errorf("Binary() with ASTRO_STS_CACHE = %q", got)
	}
	t.Setenv("ASTRO_STS_CACHE", "")
	t.Setenv("XDG_CACHE_HOME", dir)
	if got, _ := vaulttest.Binary(); got != filepath.Join(dir, "astro-sts", "vault-"+vaulttest.Version) {
		t.Errorf("Binary() with XDG_CACHE_HOME = %q", got)
	}
}

func ExampleStart() {
	bin, ok := vaulttest.Binary()
	if !ok {
		return // tools/vault/build.sh has not been run
	}
	s, err := vaulttest.Start(context.Background(), bin)
	if err != nil {
		return
	}
	defer s.Close()
	_, _ = s.Client().KVv2("secret").Put(context.Background(), "app/config", map[string]any{"key": "value"})
}
