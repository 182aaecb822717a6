// Package fakeclock is a clock for tests that moves only when told to.
//
// Every part of a test environment (emulator, OIDC issuer, verifier, replay
// guard, broker) takes a `Now func() time.Time`; giving them all the same
// [Clock.Now] lets a test skip a token's lifetime, for the reaper say,
// without sleeping, while every part still agrees on the time.
package fakeclock

import (
	"sync"
	"time"
)

// Clock is safe for use by the servers' goroutines.
type Clock struct {
	mu  sync.Mutex
	now time.Time
}

// New returns a clock stopped at t.
func New(t time.Time) *Clock { return &Clock{now: t} }

// Now is the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}
