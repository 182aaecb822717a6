package broker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/astro-sts/astro-sts/internal/idtoken"
	"github.com/astro-sts/astro-sts/internal/store"
)

// Whether the broker's store lets it serve: what /readyz asks of it.

// storeReady pings the store: with Redis down, or refusing writes (full
// under noeviction, paused for a failover), the broker cannot check
// replay, so it is not ready (and answers 503 to every exchange); with
// Redis evicting keys, replay could reopen, so it is not ready either.
func (s *Server) storeReady(ctx context.Context) error {
	// The restart rule refuses every token issued within
	// idtoken.FutureLeeway of the start (restart.go): not ready until a
	// fresh one can be served, so that a rolling deploy sends none there.
	if !s.started.IsZero() && !s.store.Shared() {
		if ready := s.started.Add(idtoken.FutureLeeway); s.now().Before(ready) {
			return fmt.Errorf("%w: started at %s: ID tokens issued before %s are refused (503 restarted)", errStarting,
				s.started.UTC().Format(time.RFC3339), ready.UTC().Format(time.RFC3339))
		}
	}
	ctx, cancel := context.WithTimeout(ctx, storeTimeout)
	defer cancel()
	return s.storeErr("ping", s.store.Ping(ctx))
}

// errStarting: the broker started less than idtoken.FutureLeeway ago,
// and refuses every token as possibly used before its restart.
var errStarting = errors.New("starting")

// storeProblem logs why the store is not ready, with the fix, and returns
// the line /readyz shows.
func (s *Server) storeProblem(err error) string {
	if errors.Is(err, errStarting) {
		s.log.Info("readiness: just started; ready once fresh ID tokens are served", "error", err)
		return "starting"
	}
	if errors.Is(err, store.ErrUnsafe) {
		s.log.Error("readiness: the shared store may lose spent tokens; not ready until it is fixed", "error", err)
		return "shared store unsafe: Redis may evict keys (maxmemory-policy must be noeviction)"
	}
	if errors.Is(err, store.ErrReplayCacheFull) {
		s.log.Error("readiness: the replay cache is full of live ID tokens, so every exchange is refused (503 busy) until some expire; "+
			"raise ASTRO_STS_REPLAY_CACHE_SIZE, give busy rules a rate_limit, or share a Redis (ASTRO_STS_REDIS_URL)", "error", err)
		return "replay cache full"
	}
	s.log.Warn("readiness: store unreachable or refusing writes (the error says why, and the fix where Redis gave a reason)", "error", err)
	return "shared store unreachable"
}
