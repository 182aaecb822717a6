package store_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/astro-sts/astro-sts/internal/store"
	"github.com/astro-sts/astro-sts/internal/testkit/redistest"
)

// TestReplayFigures measures docs/reliability.md's figures: of 20 tokens
// spent before each loss of data, how many a replay gets accepted after
// it. Under an eviction policy, the readiness probe (Ping) runs once
// after the memory pressure, as it would within its period.
func TestReplayFigures(t *testing.T) {
	if testing.Short() {
		t.Skip("a redis-server per fault")
	}
	const n = 20
	ctx := context.Background()
	faults := []struct {
		name string
		do   func(t *testing.T, srv *redistest.Server, s *store.Redis) *store.Redis
	}{
		{"FLUSHALL", func(t *testing.T, srv *redistest.Server, s *store.Redis) *store.Redis {
			if err := srv.Flush(ctx); err != nil {
				t.Fatal(err)
			}
			return s
		}},
		{"kill -9, restart without persistence", func(t *testing.T, srv *redistest.Server, s *store.Redis) *store.Redis {
			srv.Stop()
			if err := srv.Restart(ctx); err != nil {
				t.Fatal(err)
			}
			return s
		}},
		{"failover to a replica behind", nil}, // TestReplayAfterFailover, one token
	}
	for _, policy := range []string{"allkeys-lru", "allkeys-random", "volatile-lru", "volatile-random", "volatile-ttl"} {
		faults = append(faults, struct {
			name string
			do   func(t *testing.T, srv *redistest.Server, s *store.Redis) *store.Redis
		}{"memory pressure, " + policy, func(t *testing.T, srv *redistest.Server, s *store.Redis) *store.Redis {
			c := srv.Client()
			defer c.Close()
			used, err := c.Info(ctx, "memory").Result()
			if err != nil {
				t.Fatal(err)
			}
			var bytes int64
			for _, l := range strings.Split(used, "\n") {
				if v, ok := strings.CutPrefix(strings.TrimSpace(l), "used_memory:"); ok {
					fmt.Sscan(v, &bytes)
				}
			}
			c.ConfigSet(ctx, "maxmemory", fmt.Sprint(bytes+256<<10))
			c.ConfigSet(ctx, "maxmemory-policy", policy)
			filler := strings.Repeat("x", 1024)
			for i := range 2048 {
				// Half with an expiry, so that volatile-* has more than
				// the replay entries to choose from.
				ttl := time.Duration(0)
				if i%2 == 0 {
					ttl = time.Hour
				}
				c.Set(ctx, fmt.Sprintf("filler:%d", i), filler, ttl)
			}
			_ = s.Ping(ctx) // the readiness probe's next run
			return s
		}})
	}
	for _, f := range faults {
		if f.do == nil {
			continue
		}
		t.Run(f.name, func(t *testing.T) {
			srv := ownRedis(t)
			s := newRedis(t, srv.URL())
			iat, exp := time.Now(), time.Now().Add(5*time.Minute)
			for i := range n {
				if err := s.Use(ctx, "https://iss", fmt.Sprint(i), iat, exp); err != nil {
					t.Fatal(err)
				}
			}
			s = f.do(t, srv, s)
			accepted := 0
			for i := range n {
				if err := s.Use(ctx, "https://iss", fmt.Sprint(i), iat, exp); err == nil {
					accepted++
				}
			}
			t.Logf("FIGURE %s: %d of %d replays accepted", f.name, accepted, n)
			if accepted > 0 {
				t.Errorf("%d of %d replays accepted after %s", accepted, n, f.name)
			}
		})
	}
}
