package demo

import (
	"sync"
	"time"
)

// clock is the demo's clock: a base clock plus an offset that only moves
// forward. Every part of the demo (emulator, issuer, verifier, replay guard,
// broker, action) reads it, so the reaper step can skip a token's lifetime
// instead of sleeping through it, and all parts still agree on the time.
type clock struct {
	base func() time.Time

	mu     sync.Mutex
	offset time.Duration
}

func newClock(base func() time.Time) *clock {
	if base == nil {
		base = time.Now
	}
	return &clock{base: base}
}

// Now is the base clock's time plus the offset.
func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.base().Add(c.offset)
}

// Advance moves the clock forward by d; a negative d is ignored, because a
// clock that runs backwards would confuse expiry checks everywhere.
func (c *clock) Advance(d time.Duration) {
	if d <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.offset += d
}
