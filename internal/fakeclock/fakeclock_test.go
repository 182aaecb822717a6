package fakeclock_test

import (
	"sync"
	"testing"
	"time"

	"github.com/astro-sts/astro-sts/internal/fakeclock"
)

func TestClock(t *testing.T) {
	t0 := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	c := fakeclock.New(t0)
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
}
