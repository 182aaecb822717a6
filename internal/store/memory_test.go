package store_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/astro-sts/astro-sts/internal/clock"
	"github.com/astro-sts/astro-sts/internal/skew"
	"github.com/astro-sts/astro-sts/internal/store"
)

// TestMemoryAllowRefills follows the GCRA's budget on a fake clock: a
// burst, then one event per interval, and the whole burst again after a
// quiet spell.
func TestMemoryAllowRefills(t *testing.T) {
	clock := clock.Stopped(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	m := store.NewMemory(0, clock.Now)
	ctx := context.Background()
	l := store.Limit{Rate: 6, Period: time.Minute, Burst: 2} // one per 10s
	allow := func() store.Verdict {
		t.Helper()
		v, err := m.Allow(ctx, "k", l)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	steps := []struct {
		advance time.Duration
		want    store.Verdict
	}{
		{0, store.Verdict{Allowed: true, Remaining: 1}},
		{0, store.Verdict{Allowed: true, Remaining: 0}},
		{0, store.Verdict{RetryAfter: 10 * time.Second}},
		{4 * time.Second, store.Verdict{RetryAfter: 6 * time.Second}},
		{6 * time.Second, store.Verdict{Allowed: true, Remaining: 0}},
		{0, store.Verdict{RetryAfter: 10 * time.Second}},
		{time.Hour, store.Verdict{Allowed: true, Remaining: 1}},
		{0, store.Verdict{Allowed: true, Remaining: 0}},
	}
	for i, st := range steps {
		clock.Advance(st.advance)
		if got := allow(); got != st.want {
			t.Errorf("step %d: %+v, want %+v", i, got, st.want)
		}
	}
}

// TestMemoryForgetsIdleKeys: keys whose budget is whole again are dropped,
// so a long-running replica's map does not grow with every repository it
// ever saw.
func TestMemoryForgetsIdleKeys(t *testing.T) {
	clock := clock.Stopped(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	m := store.NewMemory(0, clock.Now)
	ctx := context.Background()
	l := store.Limit{Rate: 1, Period: time.Second, Burst: 1}
	for i := range 5000 {
		if _, err := m.Allow(ctx, store.Key("repo", string(rune(i))), l); err != nil {
			t.Fatal(err)
		}
		clock.Advance(time.Millisecond)
	}
	// Keys older than a second are whole again: at most the last ~1000
	// plus what accumulated since the last sweep stay.
	if n := m.RateKeys(); n > 2048 {
		t.Errorf("%d keys kept after 5000 one-off keys, want at most 2048", n)
	}
}

func TestMemoryReplayIsTheGuard(t *testing.T) {
	clock := clock.Stopped(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	m := store.NewMemory(2, clock.Now)
	ctx := context.Background()
	exp := clock.Now().Add(5 * time.Minute)
	for _, jti := range []string{"a", "b"} {
		if err := m.Use(ctx, "iss", jti, time.Now(), exp); err != nil {
			t.Fatal(err)
		}
	}
	// Full of live entries, it fails closed, as the guard always has.
	if err := m.Use(ctx, "iss", "c", time.Now(), exp); !errors.Is(err, store.ErrReplayCacheFull) {
		t.Errorf("Use on a full cache = %v, want ErrReplayCacheFull", err)
	}
	if m.ReplayLen() != 2 {
		t.Errorf("ReplayLen = %d, want 2", m.ReplayLen())
	}
	if held, err := m.Lease(ctx, "reaper", time.Second); !held || err != nil {
		t.Errorf("Lease = %v, %v; a single replica always holds it", held, err)
	}
	// Full, it is not ready: every new token would be refused.
	if err := m.Ping(ctx); !errors.Is(err, store.ErrUnavailable) || !errors.Is(err, store.ErrReplayCacheFull) {
		t.Errorf("Ping on a full cache = %v, want ErrUnavailable, ErrReplayCacheFull", err)
	}
	clock.Advance(5*time.Minute + skew.Max)
	if err := m.Ping(ctx); err != nil {
		t.Errorf("Ping once the entries expired: %v", err)
	}
}
