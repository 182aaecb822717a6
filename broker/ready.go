package broker

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/astro-sts/astro-sts/internal/store"
)

// Whether the broker can serve: what /readyz asks of the policy, the store
// and Astro.

// handleReady answers 200 "ready", or 503 with a line for each part that is
// not.
func (s *Server) handleReady(w http.ResponseWriter, r *http.Request) {
	var problems []string
	if s.policies.Current() == nil {
		problems = append(problems, "policy not loaded")
	}
	if err := s.storeReady(r.Context()); err != nil {
		problems = append(problems, s.storeProblem(err))
	}
	if err := s.upstreamReady(r.Context()); err != nil {
		s.log.Warn("readiness: Astro API unreachable", "error", err)
		problems = append(problems, "Astro API unreachable")
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if len(problems) > 0 {
		w.WriteHeader(http.StatusServiceUnavailable)
		for _, p := range problems {
			_, _ = w.Write([]byte(p + "\n"))
		}
		return
	}
	_, _ = w.Write([]byte("ready\n"))
	// Still ready (the last good policy decides, as it should), but say
	// it: the next restart would fail.
	if ph, ok := s.policies.(policyHealth); ok {
		if h := ph.Health(); !h.OK {
			_, _ = w.Write([]byte("warning: the policy file does not load; serving the last good policy (loaded " + h.LastGood.UTC().Format(time.RFC3339) + "); a restart would fail\n"))
		}
	}
}

// upstreamReady asks Astro at most once per readyTTL, so that a tight
// readiness probe does not become load on the Astro API.
func (s *Server) upstreamReady(ctx context.Context) error {
	s.readyMu.Lock()
	defer s.readyMu.Unlock()
	now := s.now()
	if !s.readyAt.IsZero() && now.Sub(s.readyAt) < s.readyTTL {
		return s.readyErr
	}
	// Not the probe's own context: a probe that gives up must not be
	// remembered as "Astro unreachable" for the whole cache period.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	_, err := s.astro.ListOrganizations(ctx)
	s.readyAt, s.readyErr = now, err
	return err
}

// storeReady pings the store: with Redis down, or refusing writes (full
// under noeviction, paused for a failover), the broker cannot check
// replay, so it is not ready (and answers 503 to every exchange); with
// Redis evicting keys, replay could reopen, so it is not ready either.
func (s *Server) storeReady(ctx context.Context) error {
	// The restart rule refuses every token issued within
	// idtoken.FutureLeeway of the start (restart.go): not ready until a
	// fresh one can be served, so that a rolling deploy sends none there.
	if ready, ok := s.servesIssuedFrom(); ok && s.now().Before(ready) {
		return fmt.Errorf("%w: started at %s: ID tokens issued before %s are refused (503 restarted)", errStarting,
			s.started.UTC().Format(time.RFC3339), ready.UTC().Format(time.RFC3339))
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
