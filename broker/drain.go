package broker

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// Shutdown: the operations in flight and the clean-ups they started are
// counted, so that [Server.Drain] can wait for them within the grace a
// SIGTERM leaves, and give up on what is left only then.

// tracker counts the operations in flight and the clean-ups they started,
// so that a shutdown can wait for them. Unlike a sync.WaitGroup, it may be
// entered while someone waits (a clean-up started by an operation that is
// finishing).
type tracker struct {
	mu       sync.Mutex
	n        int
	idle     chan struct{} // closed while n == 0
	drainCh  chan struct{} // closed once draining starts
	drainOne sync.Once
}

func newTracker() *tracker {
	t := &tracker{idle: make(chan struct{}), drainCh: make(chan struct{})}
	close(t.idle)
	return t
}

func (t *tracker) enter() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.n == 0 {
		t.idle = make(chan struct{})
	}
	t.n++
}

func (t *tracker) leave() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.n--
	if t.n == 0 {
		close(t.idle)
	}
}

func (t *tracker) draining() <-chan struct{} { return t.drainCh }

func (t *tracker) isDraining() bool {
	select {
	case <-t.drainCh:
		return true
	default:
		return false
	}
}

// wait starts draining and waits until nothing is in flight, or ctx ends.
func (t *tracker) wait(ctx context.Context) (left int, err error) {
	t.drainOne.Do(func() { close(t.drainCh) })
	for {
		t.mu.Lock()
		idle, n := t.idle, t.n
		t.mu.Unlock()
		if n == 0 {
			return 0, nil
		}
		select {
		case <-idle:
		case <-ctx.Done():
			t.mu.Lock()
			defer t.mu.Unlock()
			return t.n, ctx.Err()
		}
	}
}

// Drain waits until the exchanges and revokes in flight, and the clean-ups
// they started (deleting what was minted and not delivered, finding the
// token of a create with an unknown outcome), have finished, or ctx ends.
// Call it after the HTTP server's Shutdown (and Close, if Shutdown's grace
// ran out): then no new operation can start, and an exchange cut off by
// Close deletes what it minted before Drain returns. A token whose
// clean-up is still running when ctx ends is left to the reaper.
func (s *Server) Drain(ctx context.Context) error {
	left, err := s.track.wait(ctx)
	if err != nil {
		s.log.Error("shutdown: clean-ups still running; the reaper deletes what they leave after its deadline", "left", left, "error", err)
		return fmt.Errorf("broker: %d operations or clean-ups still running: %w", left, err)
	}
	return nil
}

var errCallerGone = errors.New("the caller had gone, or the request's deadline had passed, before the answer was written")
