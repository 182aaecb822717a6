package clock_test

import (
	"sync"
	"testing"
	"time"

	"github.com/astro-sts/astro-sts/internal/clock"
)

func TestStopped(t *testing.T) {
	t0 := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	c := clock.Stopped(t0)
	if !c.Now().Equal(t0) {
		t.Fatalf("Now = %v, want %v", c.Now(), t0)
	}
	var wg sync.WaitGroup
	for range 10 {
		wg.Add(1)
		go func() { defer wg.Done(); c.Advance(time.Minute); _ = c.Now() }()
	}
	wg.Wait()
	if got, want := c.Now(), t0.Add(10*time.Minute); !got.Equal(want) {
		t.Fatalf("after 10 Advance(1m): %v, want %v", got, want)
	}
	c.Advance(-10 * time.Minute)
	if !c.Now().Equal(t0) {
		t.Fatalf("after moving back: %v, want %v", c.Now(), t0)
	}
}

func TestNewFollowsItsBase(t *testing.T) {
	base := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	c := clock.New(func() time.Time { return base })
	c.Advance(time.Hour)
	base = base.Add(time.Minute)
	if got, want := c.Now(), base.Add(time.Hour); !got.Equal(want) {
		t.Fatalf("Now = %v, want %v: the base's time plus the offset", got, want)
	}
	if d := time.Since(clock.New(nil).Now()); d < 0 || d > time.Minute {
		t.Fatalf("a clock on a nil base is %v from the wall clock", d)
	}
}
