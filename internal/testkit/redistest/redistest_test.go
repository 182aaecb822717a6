package redistest_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/astro-sts/astro-sts/internal/testkit/redistest"
)

// redisBinary skips the test when there is no redis-server, except in CI,
// where that is a failure.
func redisBinary(t *testing.T) string {
	t.Helper()
	bin, ok := redistest.Binary()
	if !ok {
		if redistest.Required() {
			t.Fatalf("CI=true but %s (looked for %s)", redistest.InstallHint, bin)
		}
		t.Skipf("%s (looked for %s)", redistest.InstallHint, bin)
	}
	return bin
}

func start(t *testing.T, opts redistest.Options) *redistest.Server {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := redistest.Start(ctx, redisBinary(t), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func TestStartSetGetClose(t *testing.T) {
	s := start(t, redistest.Options{})
	ctx := context.Background()
	if !strings.HasPrefix(s.Addr, "127.0.0.1:") {
		t.Errorf("Addr = %q, want a loopback address", s.Addr)
	}
	c := s.Client()
	defer c.Close()
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if got, err := c.Get(ctx, "k").Result(); err != nil || got != "v" {
		t.Errorf("Get = %q, %v; want v", got, err)
	}
	// Persistence is off: nothing would survive a restart, and nothing is
	// written to disk.
	cfg, err := c.ConfigGet(ctx, "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	if cfg["save"] != "" || cfg["appendonly"] != "no" || cfg["bind"] != "127.0.0.1" {
		t.Errorf("save=%q appendonly=%q bind=%q; want \"\", no, 127.0.0.1", cfg["save"], cfg["appendonly"], cfg["bind"])
	}

	pid := s.PID()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("process %d after Close: kill(0) = %v, want ESRCH", pid, err)
	}
	if err := c.Ping(ctx).Err(); err == nil {
		t.Error("server still answers after Close")
	}
}

func TestStopRestartKeepsAddress(t *testing.T) {
	s := start(t, redistest.Options{})
	ctx := context.Background()
	c := s.Client()
	defer c.Close()
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	s.Stop()
	if err := c.Ping(ctx).Err(); err == nil {
		t.Fatal("server answers after Stop")
	}
	if err := s.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Restart(ctx); err == nil {
		t.Error("Restart of a running server succeeded")
	}
	// The same client reconnects to the same address and finds it empty.
	if err := c.Get(ctx, "k").Err(); !errors.Is(err, redis.Nil) {
		t.Errorf("Get after restart: %v, want redis.Nil (an empty server)", err)
	}
}

func TestPassword(t *testing.T) {
	pw := redistest.RandomPassword()
	s := start(t, redistest.Options{Password: pw})
	ctx := context.Background()
	anon := redis.NewClient(&redis.Options{Addr: s.Addr, MaxRetries: -1})
	defer anon.Close()
	if err := anon.Ping(ctx).Err(); err == nil {
		t.Error("PING without the password succeeded")
	}
	c := s.Client()
	defer c.Close()
	if err := c.Ping(ctx).Err(); err != nil {
		t.Errorf("PING with the password: %v", err)
	}
	if !strings.Contains(s.URL(), ":"+pw+"@") {
		t.Error("URL does not carry the password")
	}
}

func TestACLUser(t *testing.T) {
	pw := redistest.RandomPassword()
	s := start(t, redistest.Options{User: "astro-sts", Password: pw})
	ctx := context.Background()
	// The default user is off: the password alone is not enough.
	def := redis.NewClient(&redis.Options{Addr: s.Addr, Password: pw, MaxRetries: -1})
	defer def.Close()
	if err := def.Ping(ctx).Err(); err == nil {
		t.Error("PING as the default user succeeded")
	}
	c := s.Client()
	defer c.Close()
	if who, err := c.Do(ctx, "ACL", "WHOAMI").Text(); err != nil || who != "astro-sts" {
		t.Errorf("ACL WHOAMI = %q, %v; want astro-sts", who, err)
	}
	if s.URL() != "redis://astro-sts:"+pw+"@"+s.Addr {
		t.Error("URL does not name the user and password")
	}
	if strings.Contains(s.Output(), pw) {
		t.Error("Output shows the password")
	}
}

func TestStartMissingBinary(t *testing.T) {
	_, err := redistest.Start(context.Background(), filepath.Join(t.TempDir(), "no-such-redis"), redistest.Options{})
	if err == nil {
		t.Fatal("Start with a missing binary succeeded")
	}
}

func TestBinaryFromEnv(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "redis-server")
	t.Setenv(redistest.EnvBinary, bin)
	if _, ok := redistest.Binary(); ok {
		t.Errorf("Binary() ok for a missing %s", bin)
	}
	if err := os.WriteFile(bin, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if got, ok := redistest.Binary(); !ok || got != bin {
		t.Errorf("Binary() = %q, %v; want %q, true", got, ok, bin)
	}
}

func TestRequired(t *testing.T) {
	t.Setenv("CI", "true")
	if !redistest.Required() {
		t.Error("Required() false with CI=true")
	}
	t.Setenv("CI", "")
	if redistest.Required() {
		t.Error("Required() true without CI")
	}
}

func TestTLS(t *testing.T) {
	s := start(t, redistest.Options{TLS: true, Password: redistest.RandomPassword()})
	ctx := context.Background()
	if !strings.HasPrefix(s.URL(), "rediss://") || s.CAPool() == nil || len(s.CAPEM()) == 0 {
		t.Fatal("want a rediss:// URL and a CA")
	}
	c := s.Client()
	defer c.Close()
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatalf("PING over TLS: %v", err)
	}
	// No plain-text port: a client without TLS gets nowhere.
	plain := redis.NewClient(&redis.Options{Addr: s.Addr, Password: "x", MaxRetries: -1, DialTimeout: time.Second, ReadTimeout: time.Second})
	defer plain.Close()
	if err := plain.Ping(ctx).Err(); err == nil {
		t.Error("PING without TLS succeeded")
	}
}
