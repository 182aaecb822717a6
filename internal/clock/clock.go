// Package clock is a clock that moves only when told to, on top of a base
// clock.
//
// Every part of a local stack (emulator, OIDC issuer, verifier, replay
// guard, broker, action) takes a `Now func() time.Time`; giving them all
// the same [Clock.Now] lets the demo or a test skip a token's lifetime, for
// the reaper say, without sleeping, while every part still agrees on the
// time. The demo runs on a clock that follows the wall clock ([New] with
// nil); tests mostly stop it at one instant ([Stopped]).
package clock

import (
	"sync"
	"time"
)

// Clock is the base clock's time plus an offset; it is safe for use by the
// servers' goroutines.
type Clock struct {
	base func() time.Time

	mu     sync.Mutex
	offset time.Duration
}

// New returns a clock that follows base (time.Now when nil) until it is
// moved.
func New(base func() time.Time) *Clock {
	if base == nil {
		base = time.Now
	}
	return &Clock{base: base}
}

// Stopped returns a clock that stands at t until it is moved.
func Stopped(t time.Time) *Clock {
	return New(func() time.Time { return t })
}

// Now is the base clock's time plus the offset.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.base().Add(c.offset)
}

// Advance moves the clock by d; a test may move it back with a negative d
// (the demo only ever moves it forward).
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.offset += d
}
