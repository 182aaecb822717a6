package store_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/astro-sts/astro-sts/internal/skew"
	"github.com/astro-sts/astro-sts/internal/store"
)

// TestRedTeamReplayFutureIatAfterLoss: the verifier accepts an iat up to
// skew.Future in the future (issuer clock ahead of Redis's). A
// token spent just before a loss with an iat ahead of Redis's clock must
// still count as "issued before" the new epoch: the epoch is compared
// with iat minus that leeway.
func TestRedTeamReplayFutureIatAfterLoss(t *testing.T) {
	// The verifier accepts an iat at most skew.Future ahead of
	// its clock: a token further ahead never reaches the store.
	for _, skew := range []time.Duration{time.Second, 2 * time.Second, skew.Future} {
		for _, loss := range []string{"FLUSHALL", "restart"} {
			t.Run(fmt.Sprintf("%s/%v", loss, skew), func(t *testing.T) {
				srv := ownRedis(t)
				s, _, _, _ := spentRedis(t, srv)
				ctx := context.Background()
				iat := time.Now().Add(skew).Truncate(time.Second)
				exp := iat.Add(5 * time.Minute)
				if err := s.Use(ctx, "https://iss", "skewed", iat, exp); err != nil {
					t.Fatal(err)
				}
				if loss == "FLUSHALL" {
					if err := srv.Flush(ctx); err != nil {
						t.Fatal(err)
					}
				} else {
					srv.Stop()
					if err := srv.Restart(ctx); err != nil {
						t.Fatal(err)
					}
				}
				err := s.Use(ctx, "https://iss", "skewed", iat, exp)
				if err == nil {
					t.Fatalf("token with iat %v ahead of Redis TIME, spent before %s, accepted again after it (replay); DataLost=%d", skew, loss, s.DataLost())
				}
				t.Logf("replay after %s refused: %v", loss, err)
			})
		}
	}
}

// TestRedTeamRuntimeEvictionPolicy: between two readiness probes, a
// CONFIG SET maxmemory-policy volatile-lru at runtime plus memory pressure
// evicts replay entries (they have a TTL, the epoch has none). The replay
// script reads the policy and evicted_keys itself: the fillers are refused
// while the policy allows eviction, and an eviction that happened anyway
// (the policy put back before the next check) is a loss.
func TestRedTeamRuntimeEvictionPolicy(t *testing.T) {
	srv := ownRedis(t)
	s, _, iat, exp := spentRedis(t, srv)
	ctx := context.Background()
	c := srv.Client()
	defer c.Close()
	for _, kv := range [][2]string{{"maxmemory", "3mb"}, {"maxmemory-policy", "volatile-lru"}} {
		if err := c.ConfigSet(ctx, kv[0], kv[1]).Err(); err != nil {
			t.Fatal(err)
		}
	}
	// While the policy allows eviction, the replay check itself refuses
	// (fail closed), without waiting for a readiness probe.
	if err := s.Use(ctx, "https://iss", "fresh", time.Now(), exp); !errors.Is(err, store.ErrUnsafe) || !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("replay check under volatile-lru: %v, want ErrUnavailable and ErrUnsafe", err)
	}
	// Another client fills Redis until the spent token's entry is evicted;
	// then the policy is put back, so that nothing but the eviction itself
	// is left to tell.
	victim := "astro-sts:replay:" + store.Key("https://iss", "spent")
	n := 0
	for ; c.Exists(ctx, victim).Val() == 1; n++ {
		if n == 200_000 {
			t.Fatal("victim never evicted")
		}
		if err := c.Set(ctx, fmt.Sprintf("other:filler-%d-%s", n, strings.Repeat("j", 200)), "x", 10*time.Minute).Err(); err != nil {
			t.Fatalf("filler %d: %v", n, err)
		}
	}
	if err := c.ConfigSet(ctx, "maxmemory", "0").Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.ConfigSet(ctx, "maxmemory-policy", "noeviction").Err(); err != nil {
		t.Fatal(err)
	}
	lost := s.DataLost()
	err := s.Use(ctx, "https://iss", "spent", iat, exp)
	if !errors.Is(err, store.ErrIssuedBeforeEpoch) || s.DataLost() != lost+1 {
		t.Fatalf("after %d writes evicted a spent token's entry under volatile-lru (maxmemory 3mb), policy back to noeviction: %v, DataLost %d -> %d; want ErrIssuedBeforeEpoch, one loss more; epoch key present=%d",
			n, err, lost, s.DataLost(), c.Exists(ctx, "astro-sts:epoch").Val())
	}
	t.Logf("after %d evicting writes, refused: %v", n, err)
	if err := s.Use(ctx, "https://iss", "after", time.Now().Add(skew.Future+time.Second), exp); err != nil {
		t.Errorf("a token issued after the new epoch: %v", err)
	}
}

// TestRedTeamMemoryCapFull: the memory store's replay cache is full of
// live entries: who is refused?
func TestRedTeamMemoryCapFull(t *testing.T) {
	runtime.GC()
	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	s := store.NewMemory(0, nil)
	ctx := context.Background()
	exp := time.Now().Add(10 * time.Minute)
	n := 0
	var err error
	for ; n < 200_000; n++ {
		if err = s.Use(ctx, "https://token.actions.githubusercontent.com", fmt.Sprintf("%036d", n), time.Now(), exp); err != nil {
			break
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&m1)
	t.Logf("accepted %d, then %v (is ErrReplayed %v); heap +%d bytes (%.0f B/entry)", n, err,
		errors.Is(err, store.ErrReplayed), m1.HeapAlloc-m0.HeapAlloc, float64(m1.HeapAlloc-m0.HeapAlloc)/float64(n))
	runtime.KeepAlive(s)
}

// TestRedTeamRedisReplayEntrySize: what a replay entry costs in Redis, where
// nothing bounds their number (spent before the rate limit is consulted).
func TestRedTeamRedisReplayEntrySize(t *testing.T) {
	srv := ownRedis(t)
	s, _, _, exp := spentRedis(t, srv)
	ctx := context.Background()
	c := srv.Client()
	defer c.Close()
	used := func() int64 {
		var n int64
		for _, l := range strings.Split(c.Info(ctx, "memory").Val(), "\n") {
			if v, ok := strings.CutPrefix(strings.TrimSpace(l), "used_memory:"); ok {
				fmt.Sscan(v, &n)
			}
		}
		return n
	}
	const n = 10_000
	before := used()
	for i := range n {
		if err := s.Use(ctx, "https://token.actions.githubusercontent.com", fmt.Sprintf("%036d", i), time.Now(), exp); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("Redis used_memory +%d bytes for %d replay entries (%d B/entry)", used()-before, n, (used()-before)/n)
}
