package store_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/astro-sts/astro-sts/internal/idtoken"
	"github.com/astro-sts/astro-sts/internal/store"
)

// TestRedTeamReplayFutureIatAfterLoss: the verifier accepts an iat up to
// idtoken.MaxLeeway (60 s) in the future (issuer clock ahead of Redis's).
// The epoch compares iat with Redis TIME, so a token spent just before a
// loss with an iat ahead of Redis's clock is not "issued before" the new
// epoch and is accepted again.
func TestRedTeamReplayFutureIatAfterLoss(t *testing.T) {
	for _, skew := range []time.Duration{2 * time.Second, 30 * time.Second, 59 * time.Second} {
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
					t.Skipf("red team: token with iat %v ahead of Redis TIME, spent before %s, accepted again after it (replay); DataLost=%d", skew, loss, s.DataLost())
				}
				t.Logf("replay after %s refused: %v", loss, err)
			})
		}
	}
}

// TestRedTeamRuntimeEvictionPolicy: the policy is only read by Ping (the
// /readyz probe). Between two probes, a CONFIG SET maxmemory-policy
// volatile-lru at runtime plus memory pressure evicts replay entries
// (they have a TTL, the epoch has none) and a spent token is accepted
// again, with no data-lost count.
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
	// Fill with replay entries of other tokens through the store itself.
	victim := "astro-sts:replay:" + store.Key("https://iss", "spent")
	n := 0
	for ; c.Exists(ctx, victim).Val() == 1; n++ {
		if n == 200_000 {
			t.Fatal("victim never evicted")
		}
		if err := s.Use(ctx, "https://iss", fmt.Sprintf("filler-%d-%s", n, strings.Repeat("j", 200)), time.Now(), exp); err != nil {
			t.Fatalf("filler %d: %v", n, err)
		}
	}
	lost := s.DataLost()
	err := s.Use(ctx, "https://iss", "spent", iat, exp)
	if err == nil {
		t.Skipf("red team: after runtime CONFIG SET maxmemory-policy volatile-lru (maxmemory 3mb), %d exchanges evicted a spent token's entry and it was accepted again; DataLost %d (no loss counted); epoch key present=%d",
			n, lost, c.Exists(ctx, "astro-sts:epoch").Val())
	}
	t.Logf("refused: %v", err)
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
		errors.Is(err, idtoken.ErrReplayed), m1.HeapAlloc-m0.HeapAlloc, float64(m1.HeapAlloc-m0.HeapAlloc)/float64(n))
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
