// Package testwait is how tests wait for something that happens on another
// goroutine or in another process: they poll a condition until it holds.
// The limit only guards against a hang, so it is generous; no test asserts
// how long a wait took, and none sleeps for a guessed while instead.
package testwait

import (
	"context"
	"testing"
	"time"
)

// maxInterval bounds the pause between two checks: short enough that a
// wait ends soon after its condition holds, long enough that polling an
// HTTP endpoint or a log does not load a busy machine.
const maxInterval = 50 * time.Millisecond

// For polls cond until it holds, and reports whether it did before limit
// passed. The pause between checks starts at a millisecond and doubles up
// to [maxInterval], so that a condition that holds at once costs nothing.
func For(limit time.Duration, cond func() bool) bool {
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	return ForContext(ctx, cond) == nil
}

// ForContext is [For] bounded by ctx rather than by a duration: it polls
// cond until it holds (nil) or ctx ends (ctx's error). The helpers that
// start a server wait within their caller's context, which bounds the
// whole start and may be cancelled before its deadline.
func ForContext(ctx context.Context, cond func() bool) error {
	pause := time.Millisecond
	t := time.NewTimer(pause)
	defer t.Stop()
	for !cond() {
		t.Reset(pause)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
		pause = min(2*pause, maxInterval)
	}
	return nil
}

// Until polls cond until it holds, and fails the test, naming what it
// waited for, if it still does not after limit. cond runs on the test's
// goroutine, so it may itself fail the test (a process that exited while
// it was awaited).
func Until(t testing.TB, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	if !For(limit, cond) {
		t.Fatalf("timed out after %v waiting for %s", limit, what)
	}
}
