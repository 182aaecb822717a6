package store_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/astro-sts/astro-sts/internal/skew"
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
	agedEpoch(t, store.RedisConfig{URL: srv.URL()})
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
// an empty one) and logged, and where the epoch ends the refusals: a
// token that may have been used before it (issued less than skew.Future
// after it) is refused, one issued after that is accepted. srv is the
// Redis s is on.
func replayRefused(t *testing.T, srv *redistest.Server, s *store.Redis, log *bytes.Buffer, iat, exp time.Time, lost0 uint64) {
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
	// The boundary, on either side, with the real leeway: no need to
	// wait until a token issued now is past it (TestPingWaitsOutANewEpoch
	// does).
	epoch := epochOf(t, srv)
	if err := s.Use(ctx, "https://iss", "inside", epoch.Add(skew.Future-time.Second), exp); !errors.Is(err, store.ErrIssuedBeforeEpoch) {
		t.Errorf("a token issued a second short of the epoch plus skew.Future: %v, want ErrIssuedBeforeEpoch", err)
	}
	if err := s.Use(ctx, "https://iss", "fresh", epoch.Add(skew.Future), exp); err != nil {
		t.Errorf("a token issued at the epoch plus skew.Future: %v", err)
	}
	if n := s.DataLost(); n != lost0+1 {
		t.Errorf("DataLost = %d after the epoch began, want still %d", n, lost0+1)
	}
}

// epochOf reads the second the epoch on srv began at, from its key
// ("<unix second>:<run_id>:<evicted_keys>").
func epochOf(t *testing.T, srv *redistest.Server) time.Time {
	t.Helper()
	c := srv.Client()
	defer c.Close()
	v, err := c.Get(context.Background(), "astro-sts:epoch").Result()
	if err != nil {
		t.Fatalf("reading the epoch: %v", err)
	}
	sec, _, _ := strings.Cut(v, ":")
	n, err := strconv.ParseInt(sec, 10, 64)
	if err != nil {
		t.Fatalf("epoch key %q: %v", v, err)
	}
	return time.Unix(n, 0)
}

// TestPingWaitsOutANewEpoch: a broker says ready only once a token issued
// now is no longer refused as issued before a new epoch. Ping that may
// not wait that long says not ready at once; Ping that may waits it out.
// The one test here that spends skew.Future in real time.
func TestPingWaitsOutANewEpoch(t *testing.T) {
	srv := needRedis(t) // emptied: its epoch is a new one
	s, err := store.NewRedis(store.RedisConfig{URL: srv.URL()})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	// Time enough for Redis to answer, and less than the 4 s at least that
	// a new epoch (a whole second of TIME rounded up, plus skew.Future)
	// leaves to wait.
	short, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if err := s.Ping(short); !errors.Is(err, store.ErrUnavailable) || !strings.Contains(err.Error(), "new epoch") {
		t.Errorf("Ping with 2s to spend, on a new epoch: %v, want ErrUnavailable naming the new epoch", err)
	}
	if err := s.Ping(ctx); err != nil {
		t.Fatalf("Ping with time to wait: %v", err)
	}
	if err := s.Use(ctx, "https://iss", "j", time.Now(), time.Now().Add(5*time.Minute)); err != nil {
		t.Errorf("a token issued once Ping said ready: %v", err)
	}
	if n := s.DataLost(); n != 1 {
		t.Errorf("DataLost = %d, want 1: one new epoch, waited out, not a second", n)
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
	replayRefused(t, srv, s, log, iat, exp, s.DataLost())
}

// TestReplayAfterRestart: kill -9 and a restart without persistence.
func TestReplayAfterRestart(t *testing.T) {
	srv := ownRedis(t)
	s, log, iat, exp := spentRedis(t, srv)
	srv.Stop()
	if err := srv.Restart(context.Background()); err != nil {
		t.Fatal(err)
	}
	replayRefused(t, srv, s, log, iat, exp, s.DataLost())
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
	agedEpoch(t, store.RedisConfig{URL: primary.URL()})
	if err := s.Ping(ctx); err != nil { // finds the epoch
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
	replayRefused(t, replica, promoted, &after, iat, exp, 0)
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
	// Ping finds the policy fixed, and the epoch gone: it begins a new
	// one and, given no time to wait it out, says not ready (not unsafe).
	short, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if err := s.Ping(short); !errors.Is(err, store.ErrUnavailable) || errors.Is(err, store.ErrUnsafe) || !strings.Contains(err.Error(), "new epoch") {
		t.Fatalf("Ping with the policy fixed and the epoch evicted: %v, want ErrUnavailable (a new epoch), not ErrUnsafe", err)
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
	agedEpoch(t, store.RedisConfig{URL: srv.URL()})
	for range 2 {
		if err := s.Ping(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if n := strings.Count(log.String(), "appendonly no"); n != 1 {
		t.Errorf("%d warnings about persistence, want 1:\n%s", n, log.String())
	}
}
