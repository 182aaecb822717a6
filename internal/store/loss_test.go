package store_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/astro-sts/astro-sts/internal/store"
	"github.com/astro-sts/astro-sts/internal/testkit/redistest"
	"github.com/astro-sts/astro-sts/internal/testkit/testwait"
)

// ownRedis starts a redis-server for one test, which may change its
// configuration or kill it, or skips as the package's server would.
func ownRedis(t *testing.T) *redistest.Server {
	t.Helper()
	bin, ok := redistest.Binary()
	if !ok {
		needRedis(t)
	}
	srv, err := redistest.Start(context.Background(), bin, redistest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	return srv
}

// spentRedis returns a store on srv, with its log, and the issue time of a
// token it has just spent (issuer "https://iss", jti "spent").
func spentRedis(t *testing.T, srv *redistest.Server) (*store.Redis, *bytes.Buffer, time.Time, time.Time) {
	t.Helper()
	var log bytes.Buffer
	s, err := store.NewRedis(store.RedisConfig{URL: srv.URL(), Logger: slog.New(slog.NewTextHandler(&log, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	ctx := context.Background()
	if err := s.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	iat, exp := time.Now(), time.Now().Add(5*time.Minute)
	if err := s.Use(ctx, "https://iss", "spent", iat, exp); err != nil {
		t.Fatal(err)
	}
	if err := s.Use(ctx, "https://iss", "spent", iat, exp); !errors.Is(err, store.ErrReplayed) {
		t.Fatalf("replay before the loss: %v, want ErrReplayed", err)
	}
	return s, &log, iat, exp
}

// replayRefused checks that the spent token is refused after a loss as
// issued before the new epoch, that the loss was counted (once more than
// lost0: a new Redis's first epoch counts too, as nothing tells it from
// an empty one) and logged, and that a token issued after it is accepted.
func replayRefused(t *testing.T, s *store.Redis, log *bytes.Buffer, iat, exp time.Time, lost0 uint64) {
	t.Helper()
	ctx := context.Background()
	log.Reset()
	// A dry run answers as the exchange will, and writes nothing.
	if _, err := s.Used(ctx, "https://iss", "spent", iat); !errors.Is(err, store.ErrIssuedBeforeEpoch) {
		t.Errorf("Used after the loss: %v, want ErrIssuedBeforeEpoch", err)
	}
	err := s.Use(ctx, "https://iss", "spent", iat, exp)
	if !errors.Is(err, store.ErrIssuedBeforeEpoch) {
		t.Fatalf("replay after the loss: %v, want ErrIssuedBeforeEpoch", err)
	}
	if n := s.DataLost(); n != lost0+1 {
		t.Errorf("DataLost = %d, want %d", n, lost0+1)
	}
	if !strings.Contains(log.String(), "lost the broker's data") {
		t.Errorf("the loss is not in the log:\n%s", log)
	}
	// The epoch begins within a second; Ping waits it out.
	if err := s.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Use(ctx, "https://iss", "fresh", time.Now(), exp); err != nil {
		t.Errorf("a token issued after the new epoch: %v", err)
	}
	if n := s.DataLost(); n != lost0+1 {
		t.Errorf("DataLost = %d after the epoch began, want still %d", n, lost0+1)
	}
}

// TestReplayAfterFlush: FLUSHALL empties the store; the spent token is
// not accepted again.
func TestReplayAfterFlush(t *testing.T) {
	srv := ownRedis(t)
	s, log, iat, exp := spentRedis(t, srv)
	if err := srv.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	replayRefused(t, s, log, iat, exp, s.DataLost())
}

// TestReplayAfterRestart: kill -9 and a restart without persistence.
func TestReplayAfterRestart(t *testing.T) {
	srv := ownRedis(t)
	s, log, iat, exp := spentRedis(t, srv)
	srv.Stop()
	if err := srv.Restart(context.Background()); err != nil {
		t.Fatal(err)
	}
	replayRefused(t, s, log, iat, exp, s.DataLost())
}

// TestReplayAfterFailover: a replica that stopped following its primary
// before the token was spent is promoted (as Sentinel does with a
// replica behind): it has the epoch, not the entry. The epoch names the
// primary's run_id, so the replica's answer is a new epoch.
func TestReplayAfterFailover(t *testing.T) {
	primary, replica := ownRedis(t), ownRedis(t)
	ctx := context.Background()
	s, err := store.NewRedis(store.RedisConfig{URL: primary.URL()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Ping(ctx); err != nil { // writes the epoch
		t.Fatal(err)
	}
	pc := primary.Client()
	defer pc.Close()
	if err := pc.ConfigSet(ctx, "repl-diskless-sync-delay", "0").Err(); err != nil {
		t.Fatal(err)
	}
	rc := replica.Client()
	defer rc.Close()
	host, port, _ := strings.Cut(primary.Addr, ":")
	if err := rc.Do(ctx, "REPLICAOF", host, port).Err(); err != nil {
		t.Fatal(err)
	}
	testwait.Until(t, 10*time.Second, "the replica to receive the epoch", func() bool { return rc.Exists(ctx, "astro-sts:epoch").Val() == 1 })
	if err := rc.Do(ctx, "REPLICAOF", "NO", "ONE").Err(); err != nil {
		t.Fatal(err)
	}

	// The token is spent on the primary after the replica stopped
	// following it.
	_, log, iat, exp := spentRedis(t, primary)
	_ = log
	var after bytes.Buffer
	promoted, err := store.NewRedis(store.RedisConfig{URL: replica.URL(), Logger: slog.New(slog.NewTextHandler(&after, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer promoted.Close()
	replayRefused(t, promoted, &after, iat, exp, 0)
}

// TestReplayAfterEviction: a Redis that may evict keys is not ready; and
// where an eviction took the epoch, the spent token is refused.
func TestReplayAfterEviction(t *testing.T) {
	srv := ownRedis(t)
	s, _, iat, exp := spentRedis(t, srv)
	ctx := context.Background()
	c := srv.Client()
	defer c.Close()
	for _, policy := range []string{"allkeys-lru", "allkeys-random", "volatile-lru", "volatile-ttl"} {
		if err := c.ConfigSet(ctx, "maxmemory-policy", policy).Err(); err != nil {
			t.Fatal(err)
		}
		err := s.Ping(ctx)
		if !errors.Is(err, store.ErrUnsafe) || !strings.Contains(err.Error(), policy) || !strings.Contains(err.Error(), "noeviction") {
			t.Errorf("Ping with maxmemory-policy %s: %v; want ErrUnsafe naming the policy and the fix", policy, err)
		}
	}
	// Until a Ping finds the policy fixed, the replay check fails closed
	// too: a replica that still gets traffic refuses it.
	if err := s.Use(ctx, "https://iss", "spent", iat, exp); !errors.Is(err, store.ErrUnavailable) || !errors.Is(err, store.ErrUnsafe) {
		t.Errorf("Use under an eviction policy: %v, want ErrUnavailable and ErrUnsafe", err)
	}
	// Memory pressure under allkeys-lru: fill a small maxmemory until
	// Redis evicts the epoch, as it may any key.
	if err := c.ConfigSet(ctx, "maxmemory", "4mb").Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.ConfigSet(ctx, "maxmemory-policy", "allkeys-lru").Err(); err != nil {
		t.Fatal(err)
	}
	filler := strings.Repeat("x", 1024)
	for i := 0; c.Exists(ctx, "astro-sts:epoch").Val() == 1; i++ {
		if i == 100_000 {
			t.Fatal("100,000 keys of 1 kB and the epoch was never evicted")
		}
		p := c.Pipeline()
		for j := range 100 {
			p.Set(ctx, "filler:"+string(rune('a'+j%26))+time.Now().String(), filler, 0)
		}
		if _, err := p.Exec(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.ConfigSet(ctx, "maxmemory", "0").Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.ConfigSet(ctx, "maxmemory-policy", "noeviction").Err(); err != nil {
		t.Fatal(err)
	}
	lost0 := s.DataLost()
	if err := s.Ping(ctx); err != nil { // finds the policy fixed, and the epoch gone
		t.Fatal(err)
	}
	if err := s.Use(ctx, "https://iss", "spent", iat, exp); !errors.Is(err, store.ErrIssuedBeforeEpoch) {
		t.Errorf("replay after the epoch was evicted: %v, want ErrIssuedBeforeEpoch", err)
	}
	if n := s.DataLost(); n != lost0+1 {
		t.Errorf("DataLost = %d, want %d", n, lost0+1)
	}
}

// TestPingProvesWrite: a Redis that answers PING but refuses writes is not
// ready: paused for writes (as during a failover), or full under
// noeviction.
func TestPingProvesWrite(t *testing.T) {
	srv := ownRedis(t)
	ctx := context.Background()
	s := newRedis(t, srv.URL())
	c := srv.Client()
	defer c.Close()

	if err := c.Do(ctx, "CLIENT", "PAUSE", "3000", "WRITE").Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatalf("PING while paused: %v", err)
	}
	if err := s.Ping(ctx); !errors.Is(err, store.ErrUnavailable) {
		t.Errorf("Ping during CLIENT PAUSE WRITE: %v, want ErrUnavailable", err)
	}
	if err := c.Do(ctx, "CLIENT", "UNPAUSE").Err(); err != nil {
		t.Fatal(err)
	}
	if err := s.Ping(ctx); err != nil {
		t.Errorf("Ping after CLIENT UNPAUSE: %v", err)
	}

	if err := c.ConfigSet(ctx, "maxmemory", "1").Err(); err != nil {
		t.Fatal(err)
	}
	err := s.Ping(ctx)
	if !errors.Is(err, store.ErrUnavailable) || !strings.Contains(err.Error(), "OOM") {
		t.Errorf("Ping with Redis full under noeviction: %v, want ErrUnavailable (OOM)", err)
	}
	if err := c.ConfigSet(ctx, "maxmemory", "0").Err(); err != nil {
		t.Fatal(err)
	}
	if err := s.Ping(ctx); err != nil {
		t.Errorf("Ping with room again: %v", err)
	}
}

// TestPingWarnsWithoutPersistence: AOF off is a warning, once, not a
// refusal: the epoch keeps replay closed across a restart.
func TestPingWarnsWithoutPersistence(t *testing.T) {
	srv := ownRedis(t)
	var log bytes.Buffer
	s, err := store.NewRedis(store.RedisConfig{URL: srv.URL(), Logger: slog.New(slog.NewTextHandler(&log, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for range 2 {
		if err := s.Ping(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if n := strings.Count(log.String(), "appendonly no"); n != 1 {
		t.Errorf("%d warnings about persistence, want 1:\n%s", n, log.String())
	}
}
