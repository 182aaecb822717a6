package broker_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/astro-sts/astro-sts/internal/idtoken"
	"github.com/astro-sts/astro-sts/internal/store"
	"github.com/astro-sts/astro-sts/internal/testkit/redistest"
)

// ownRedisStore starts a redis-server for one test, which may flush,
// kill or reconfigure it, and returns a maker of stores on it (on the
// test's clock) and the server; it skips as the package's server would.
func ownRedisStore(t *testing.T) (func(now func() time.Time) store.Store, *redistest.Server) {
	t.Helper()
	bin, ok := redistest.Binary()
	if !ok {
		testRedis.Need(t)
	}
	srv, err := redistest.Start(context.Background(), bin, redistest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	return storesOn(t, srv), srv
}

// TestReplayAfterStoreLoss: a token spent before Redis lost its data is
// refused after it, with the answer the action retries (503 restarted),
// and the loss shows in the metrics; a fresh token is served.
func TestReplayAfterStoreLoss(t *testing.T) {
	for _, loss := range []struct {
		name string
		do   func(*redistest.Server) error
	}{
		{"FLUSHALL", func(s *redistest.Server) error { return s.Flush(context.Background()) }},
		{"kill -9 and restart without persistence", func(s *redistest.Server) error {
			s.Stop()
			return s.Restart(context.Background())
		}},
	} {
		t.Run(loss.name, func(t *testing.T) {
			rs, srv := ownRedisStore(t)
			e := newEnv(t, envOptions{store: rs})
			if st, body := e.get("/readyz"); st != http.StatusOK {
				t.Fatalf("readyz: %d %q", st, body)
			}
			tok := e.mint(mainClaims())
			if st, body, _ := e.post("/v1/exchange", tok, ""); st != http.StatusOK {
				t.Fatalf("first exchange: %d %s", st, body)
			}
			if st, _, _ := e.post("/v1/exchange", tok, ""); st != http.StatusUnauthorized {
				t.Fatalf("replay before the loss: %d, want 401", st)
			}
			lost := metricLine(e.metrics(), "astro_sts_store_data_lost_total")

			e.clock.Advance(1500 * time.Millisecond)
			if err := loss.do(srv); err != nil {
				t.Fatal(err)
			}
			before := len(e.emu.Tokens())
			// The dry run answers as the exchange will.
			st, body, _ := e.post("/v1/exchange?dry_run=true", tok, "")
			if code, _ := errorCode(t, body); st != http.StatusServiceUnavailable || code != "restarted" {
				t.Errorf("dry run of the replay after %s: %d %s; want 503 restarted", loss.name, st, body)
			}
			st, body, h := e.post("/v1/exchange", tok, "")
			if code, _ := errorCode(t, body); st != http.StatusServiceUnavailable || code != "restarted" || h.Get("Retry-After") != "1" {
				t.Errorf("replay after %s: %d %s Retry-After %q; want 503 restarted, Retry-After 1", loss.name, st, body, h.Get("Retry-After"))
			}
			if n := len(e.emu.Tokens()); n != before {
				t.Errorf("the replay minted %d tokens", n-before)
			}
			if got := metricLine(e.metrics(), "astro_sts_store_data_lost_total"); got == lost {
				t.Errorf("astro_sts_store_data_lost_total did not move: %q", got)
			}
			// The store's own log line is internal/store's TestReplayAfter*.

			// The new epoch is the next whole second: a token issued
			// idtoken.FutureLeeway after it (it cannot have been used
			// before it) is served.
			e.clock.Advance(time.Second + idtoken.FutureLeeway)
			e.exchange(mainClaims(), "")
		})
	}
}

// metricLine returns the line of metrics that starts with name.
func metricLine(metrics, name string) string {
	for _, l := range strings.Split(metrics, "\n") {
		if strings.HasPrefix(l, name+" ") {
			return l
		}
	}
	return ""
}

// TestReadyzProvesStore: /readyz is not ready while Redis answers PING but
// refuses writes (CLIENT PAUSE WRITE, as during a failover; full under
// noeviction), or may evict keys (which reopens replay); it says which.
func TestReadyzProvesStore(t *testing.T) {
	rs, srv := ownRedisStore(t)
	e := newEnv(t, envOptions{store: rs})
	ctx := context.Background()
	c := srv.Client()
	defer c.Close()
	if st, body := e.get("/readyz"); st != http.StatusOK {
		t.Fatalf("readyz: %d %q", st, body)
	}
	notReady := func(why, want string) {
		t.Helper()
		st, body := e.get("/readyz")
		if st != http.StatusServiceUnavailable || !strings.Contains(body, want) {
			t.Errorf("readyz %s: %d %q; want 503 %q", why, st, body, want)
		}
	}

	if err := c.Do(ctx, "CLIENT", "PAUSE", "5000", "WRITE").Err(); err != nil {
		t.Fatal(err)
	}
	notReady("during CLIENT PAUSE WRITE", "shared store unreachable")
	if err := c.Do(ctx, "CLIENT", "UNPAUSE").Err(); err != nil {
		t.Fatal(err)
	}

	if err := c.ConfigSet(ctx, "maxmemory", "1").Err(); err != nil {
		t.Fatal(err)
	}
	notReady("with Redis full under noeviction", "shared store unreachable")
	if err := c.ConfigSet(ctx, "maxmemory", "0").Err(); err != nil {
		t.Fatal(err)
	}

	if err := c.ConfigSet(ctx, "maxmemory-policy", "allkeys-lru").Err(); err != nil {
		t.Fatal(err)
	}
	notReady("with maxmemory-policy allkeys-lru", "shared store unsafe")
	if !strings.Contains(e.logs.String(), "set maxmemory-policy noeviction") {
		t.Error("the log does not say how to fix the eviction policy")
	}
	if err := c.ConfigSet(ctx, "maxmemory-policy", "noeviction").Err(); err != nil {
		t.Fatal(err)
	}
	if st, body := e.get("/readyz"); st != http.StatusOK {
		t.Errorf("readyz once fixed: %d %q", st, body)
	}
}

// TestRateLimitRefund: an exchange whose create Astro refused (provably
// not done) gives its budget back, with either store; the budget a
// successful exchange took stays taken.
func TestRateLimitRefund(t *testing.T) {
	for _, tc := range []struct {
		name  string
		store func(t *testing.T) func(now func() time.Time) store.Store
	}{
		{"memory", func(*testing.T) func(now func() time.Time) store.Store { return nil }},
		{"redis", func(t *testing.T) func(now func() time.Time) store.Store { rs, _ := redisStore(t); return rs }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// deploy-main: two a minute, a burst of two.
			e := newEnv(t, envOptions{policy: limitedPolicy, store: tc.store(t)})
			for i := range 4 {
				// Astro turns the create away (429, both attempts).
				e.emu.Throttle(2, 0)
				st, body, _ := e.post("/v1/exchange", e.mint(mainClaims()), "")
				if code, _ := errorCode(t, body); st == http.StatusOK || code == "rate_limited" {
					t.Fatalf("throttled exchange #%d: %d %s; want a failure that is not the rate limit", i, st, body)
				}
			}
			e.emu.Throttle(0, 0)
			for i := range 2 {
				if st, body, _ := e.post("/v1/exchange", e.mint(mainClaims()), ""); st != http.StatusOK {
					t.Fatalf("exchange #%d after 4 refused creates: %d %s; want the whole burst of 2", i, st, body)
				}
			}
			st, body, _ := e.post("/v1/exchange", e.mint(mainClaims()), "")
			if code, _ := errorCode(t, body); st != http.StatusTooManyRequests || code != "rate_limited" {
				t.Errorf("third exchange: %d %s; want 429 rate_limited", st, body)
			}
		})
	}
}
