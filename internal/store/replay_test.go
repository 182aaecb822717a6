package store_test

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/astro-sts/astro-sts/internal/clock"
	"github.com/astro-sts/astro-sts/internal/skew"
	"github.com/astro-sts/astro-sts/internal/store"
)

// t0 is the guard's clock at the start of each case.
var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func TestReplayGuard(t *testing.T) {
	type use struct {
		advance     time.Duration
		issuer, jti string
		exp         time.Duration // from t0
		want        error
	}
	tests := []struct {
		name string
		max  int
		uses []use
	}{
		{"second use is a replay", 10, []use{
			{0, "a", "j1", 5 * time.Minute, nil},
			{0, "a", "j1", 5 * time.Minute, store.ErrReplayed},
			{4 * time.Minute, "a", "j1", 5 * time.Minute, store.ErrReplayed},
		}},
		{"same jti from another issuer is another token", 10, []use{
			{0, "a", "j1", 5 * time.Minute, nil},
			{0, "b", "j1", 5 * time.Minute, nil},
		}},
		{"remembered through the leeway, then refused as expired", 10, []use{
			{0, "a", "j1", time.Minute, nil},
			{time.Minute + 59*time.Second, "a", "j1", time.Minute, store.ErrReplayed},
			{time.Second, "a", "j1", time.Minute, store.ErrTokenExpired},
		}},
		{"empty jti", 10, []use{{0, "a", "", time.Minute, store.ErrNoJTI}}},
		{"expired token", 10, []use{{0, "a", "j", -2 * time.Minute, store.ErrTokenExpired}}},
		{"full of live entries fails closed", 2, []use{
			{0, "a", "j1", 5 * time.Minute, nil},
			{0, "a", "j2", 10 * time.Minute, nil},
			{0, "a", "j3", 5 * time.Minute, store.ErrReplayCacheFull},
			{0, "a", "j1", 5 * time.Minute, store.ErrReplayed},
		}},
		{"full, but expired entries are evicted first", 2, []use{
			{0, "a", "j1", time.Minute, nil},
			{0, "a", "j2", 10 * time.Minute, nil},
			{2 * time.Minute, "a", "j3", 10 * time.Minute, nil},
			{0, "a", "j2", 10 * time.Minute, store.ErrReplayed},
			{0, "a", "j4", 10 * time.Minute, store.ErrReplayCacheFull},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clk := clock.Stopped(t0)
			g := store.NewReplayGuard(tt.max, clk.Now)
			var got, want []string
			for _, u := range tt.uses {
				clk.Advance(u.advance)
				err := g.Use(u.issuer, u.jti, t0.Add(u.exp))
				got = append(got, errName(err))
				want = append(want, errName(u.want))
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("results (-want +got):\n%s", diff)
			}
		})
	}
}

// Used says what Use would say, records nothing, and forgets a token when
// Use does: once it can no longer verify.
func TestReplayGuardUsed(t *testing.T) {
	clk := clock.Stopped(t0)
	g := store.NewReplayGuard(1, clk.Now)
	if g.Used("a", "j1") || g.Len() != 0 {
		t.Fatalf("Used of a new token: true, or it took a place (%d)", g.Len())
	}
	if err := g.Use("a", "j1", t0.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if !g.Used("a", "j1") || g.Used("b", "j1") || g.Used("a", "j2") {
		t.Error("Used: want true for the spent token only")
	}
	clk.Advance(time.Minute + skew.Max)
	if g.Used("a", "j1") {
		t.Error("Used: a token past exp plus the leeway is still remembered")
	}
}

func errName(err error) string {
	for _, e := range []error{store.ErrReplayed, store.ErrReplayCacheFull, store.ErrNoJTI, store.ErrTokenExpired} {
		if errors.Is(err, e) {
			return e.Error()
		}
	}
	if err != nil {
		return fmt.Sprintf("unexpected: %v", err)
	}
	return "ok"
}

func TestReplayGuardConcurrent(t *testing.T) {
	g := store.NewReplayGuard(0, func() time.Time { return t0 })
	var ok atomic.Int32
	var wg sync.WaitGroup
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if g.Use("a", "same", t0.Add(time.Minute)) == nil {
				ok.Add(1)
			}
		}()
	}
	wg.Wait()
	if ok.Load() != 1 {
		t.Fatalf("%d concurrent uses of one jti succeeded, want exactly 1", ok.Load())
	}
}
