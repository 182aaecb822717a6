package store_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/astro-sts/astro-sts/internal/store"
	"github.com/astro-sts/astro-sts/internal/testkit/redistest"
)

// testRedis is the package's one redis-server, started by TestMain when the
// binary exists.
var testRedis = redistest.PackageServer()

func TestMain(m *testing.M) {
	testRedis.Main(m)
}

// needRedis returns the shared server, emptied, or skips the test when
// there is no redis-server (TestMain has already failed the run in CI).
func needRedis(t testing.TB) *redistest.Server {
	t.Helper()
	return testRedis.Need(t)
}

// newRedis returns a ready store on url, whose Redis has an epoch begun
// long enough ago ([agedEpoch]) that a token issued now is accepted.
func newRedis(t testing.TB, url string) *store.Redis {
	t.Helper()
	agedEpoch(t, store.RedisConfig{URL: url})
	r, err := store.NewRedis(store.RedisConfig{URL: url})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = r.Close() })
	// The epoch is older than skew.Future: Ping has nothing to wait out.
	if err := r.Ping(context.Background()); err != nil {
		t.Fatal(err)
	}
	return r
}

// agedEpoch begins the epoch of the Redis cfg reaches a minute ago, as if
// a broker had used it since (one it already has stays; a fresh one
// fails the test). A store whose clock is a minute behind dates it
// (RedisConfig.Now dates a new epoch). Then a token issued now is
// accepted at once, where a fresh epoch would refuse it for skew.Future
// and Ping would wait that out (a wait TestPingWaitsOutANewEpoch shows;
// the loss tests show the refusals at the epoch's exact boundary), so
// tests that need only a store that accepts do not spend those seconds.
func agedEpoch(t testing.TB, cfg store.RedisConfig) {
	t.Helper()
	then := time.Now().Add(-time.Minute)
	cfg.Now = func() time.Time { return then }
	s, err := store.NewRedis(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// A dry run writes the epoch where there is none, and nothing else;
	// it also checks what this promises: a token issued now is accepted.
	if _, err := s.Used(context.Background(), "https://iss", "aged-epoch", time.Now()); err != nil {
		t.Fatalf("aging the epoch: %v", err)
	}
}

// implementations are the stores every contract test runs against.
func implementations(t *testing.T) map[string]func(t *testing.T) store.Store {
	return map[string]func(t *testing.T) store.Store{
		"memory": func(*testing.T) store.Store { return store.NewMemory(0, nil) },
		"redis":  func(t *testing.T) store.Store { return newRedis(t, needRedis(t).URL()) },
	}
}

func TestUse(t *testing.T) {
	for name, open := range implementations(t) {
		t.Run(name, func(t *testing.T) {
			s := open(t)
			ctx := context.Background()
			exp := time.Now().Add(5 * time.Minute)
			steps := []struct {
				issuer, jti string
				exp         time.Time
				want        error
			}{
				{"https://a", "j1", exp, nil},
				{"https://a", "j1", exp, store.ErrReplayed},
				{"https://b", "j1", exp, nil}, // another issuer's j1 is another token
				{"https://a", "j2", exp, nil},
				// The same reasons from both stores: classify turns them
				// into the token_invalid answer's reason.
				{"https://a", "", exp, store.ErrNoJTI},
				{"https://a", "j3", time.Now().Add(-2 * time.Minute), store.ErrTokenExpired},
				// Within the leeway a token still verifies, so it is still
				// remembered.
				{"https://a", "j4", time.Now().Add(-30 * time.Second), nil},
				{"https://a", "j4", time.Now().Add(-30 * time.Second), store.ErrReplayed},
			}
			for i, st := range steps {
				err := s.Use(ctx, st.issuer, st.jti, time.Now(), st.exp)
				if !errors.Is(err, st.want) || (st.want == nil) != (err == nil) {
					t.Errorf("step %d Use(%s, %q) = %v, want %v", i, st.issuer, st.jti, err, st.want)
				}
			}
		})
	}
}

// TestUsed: Used says what Use would, and writes nothing: a token asked
// about is still unused, and its first Use succeeds.
func TestUsed(t *testing.T) {
	for name, open := range implementations(t) {
		t.Run(name, func(t *testing.T) {
			s := open(t)
			ctx := context.Background()
			exp := time.Now().Add(5 * time.Minute)
			used := func(issuer, jti string) bool {
				t.Helper()
				u, err := s.Used(ctx, issuer, jti, time.Now())
				if err != nil {
					t.Fatalf("Used(%s, %s): %v", issuer, jti, err)
				}
				return u
			}
			for range 2 {
				if used("https://a", "j1") {
					t.Fatal("Used: a token never used is used")
				}
			}
			if err := s.Use(ctx, "https://a", "j1", time.Now(), exp); err != nil {
				t.Fatalf("Use after Used: %v; Used must not spend the token", err)
			}
			if !used("https://a", "j1") {
				t.Error("Used: a spent token is not used")
			}
			if used("https://b", "j1") || used("https://a", "j2") {
				t.Error("Used: another issuer's j1, or another jti, is used")
			}
		})
	}
}

// TestUseConcurrent: of many simultaneous uses of one token, exactly one
// succeeds (SET NX is atomic in Redis; the guard holds a mutex).
func TestUseConcurrent(t *testing.T) {
	for name, open := range implementations(t) {
		t.Run(name, func(t *testing.T) {
			s := open(t)
			exp := time.Now().Add(5 * time.Minute)
			var ok, replayed atomic.Int32
			var wg sync.WaitGroup
			for range 32 {
				wg.Go(func() {
					switch err := s.Use(context.Background(), "https://a", "same", time.Now(), exp); {
					case err == nil:
						ok.Add(1)
					case errors.Is(err, store.ErrReplayed):
						replayed.Add(1)
					default:
						t.Error(err)
					}
				})
			}
			wg.Wait()
			if ok.Load() != 1 || replayed.Load() != 31 {
				t.Errorf("%d uses succeeded and %d were replays; want 1 and 31", ok.Load(), replayed.Load())
			}
		})
	}
}

func TestAllow(t *testing.T) {
	for name, open := range implementations(t) {
		t.Run(name, func(t *testing.T) {
			s := open(t)
			ctx := context.Background()
			l := store.Limit{Rate: 3, Period: time.Hour, Burst: 3}
			var remaining []int
			for range 3 {
				v, err := s.Allow(ctx, "k", l)
				if err != nil || !v.Allowed {
					t.Fatalf("Allow = %+v, %v; want allowed", v, err)
				}
				remaining = append(remaining, v.Remaining)
			}
			if fmt.Sprint(remaining) != "[2 1 0]" {
				t.Errorf("remaining %v, want [2 1 0]", remaining)
			}
			v, err := s.Allow(ctx, "k", l)
			if err != nil || v.Allowed {
				t.Fatalf("fourth Allow = %+v, %v; want refused", v, err)
			}
			// One event comes back every 20 minutes; a moment has passed.
			if v.RetryAfter <= 19*time.Minute || v.RetryAfter > 20*time.Minute {
				t.Errorf("RetryAfter = %s, want just under 20m", v.RetryAfter)
			}
			// Another key has its own budget.
			if v, err := s.Allow(ctx, "other", l); err != nil || !v.Allowed {
				t.Errorf("Allow(other) = %+v, %v; want allowed", v, err)
			}
			if _, err := s.Allow(ctx, "k", store.Limit{}); err == nil {
				t.Error("Allow with a zero limit succeeded")
			}
		})
	}
}

// TestAllowConcurrent: a burst of simultaneous requests gets exactly the
// burst, however the calls interleave.
// TestRefund: a refund gives back one event, never more than the burst,
// and an untouched key stays whole.
func TestRefund(t *testing.T) {
	for name, open := range implementations(t) {
		t.Run(name, func(t *testing.T) {
			s := open(t)
			ctx := context.Background()
			l := store.Limit{Rate: 2, Period: time.Hour, Burst: 2}
			take := func() store.Verdict {
				t.Helper()
				v, err := s.Allow(ctx, "k", l)
				if err != nil {
					t.Fatal(err)
				}
				return v
			}
			refund := func() {
				t.Helper()
				if err := s.Refund(ctx, "k", l); err != nil {
					t.Fatal(err)
				}
			}
			refund() // nothing taken: nothing to give back
			if v := take(); !v.Allowed || v.Remaining != 1 {
				t.Fatalf("first Allow after a refund of nothing = %+v, want allowed, 1 left", v)
			}
			take()
			if v := take(); v.Allowed {
				t.Fatalf("third Allow = %+v, want refused", v)
			}
			refund()
			if v := take(); !v.Allowed {
				t.Errorf("Allow after a refund = %+v, want allowed", v)
			}
			refund()
			refund()
			refund() // one more than was taken
			var allowed int
			for range 4 {
				if take().Allowed {
					allowed++
				}
			}
			if allowed != 2 {
				t.Errorf("%d allowed after refunds past the burst, want the burst, 2", allowed)
			}
			if err := s.Refund(ctx, "k", store.Limit{}); err == nil {
				t.Error("Refund with a zero limit succeeded")
			}
		})
	}
}

func TestAllowConcurrent(t *testing.T) {
	for name, open := range implementations(t) {
		t.Run(name, func(t *testing.T) {
			s := open(t)
			l := store.Limit{Rate: 10, Period: time.Hour, Burst: 10}
			var allowed atomic.Int32
			var wg sync.WaitGroup
			for range 40 {
				wg.Go(func() {
					v, err := s.Allow(context.Background(), "k", l)
					if err != nil {
						t.Error(err)
					}
					if v.Allowed {
						allowed.Add(1)
					}
				})
			}
			wg.Wait()
			if allowed.Load() != 10 {
				t.Errorf("%d of 40 allowed, want exactly the burst, 10", allowed.Load())
			}
		})
	}
}

func TestKey(t *testing.T) {
	if store.Key("ab", "c") == store.Key("a", "bc") {
		t.Error("Key(ab, c) == Key(a, bc): parts run into each other")
	}
	if store.Key("a", "b") != store.Key("a", "b") {
		t.Error("Key is not deterministic")
	}
	if len(store.Key("x")) != 64 {
		t.Errorf("Key is %d characters, want 64 (hex SHA-256)", len(store.Key("x")))
	}
}

func TestLimitValidate(t *testing.T) {
	for _, l := range []store.Limit{{}, {Rate: 1, Period: time.Second}, {Rate: 0, Period: time.Second, Burst: 1}, {Rate: 1, Burst: 1}} {
		if err := l.Validate(); err == nil {
			t.Errorf("%+v: Validate() = nil", l)
		}
	}
	if err := (store.Limit{Rate: 1, Period: time.Second, Burst: 1}).Validate(); err != nil {
		t.Error(err)
	}
}
