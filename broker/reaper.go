package broker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/astro-sts/astro-sts/internal/astro"
)

// Reap deletes, in one pass, every token carrying the broker's marker whose
// deadline has passed, and returns how many it deleted. It keeps no state:
// the marker in each token's description says everything, so any number of
// replicas may reap at once (a 404 on delete is success to the client).
func (s *Server) Reap(ctx context.Context) (int, error) {
	toks, err := s.astro.ListTokens(ctx, s.org, astro.ListTokensOptions{})
	if err != nil {
		s.metrics.reapErrors.Inc()
		return 0, upstream(fmt.Errorf("list tokens: %w", err))
	}
	now := s.now()
	var n int
	var errs []error
	for _, t := range toks {
		m, ok := ParseMarker(t.Description)
		if !ok || now.Before(m.Deadline) {
			continue
		}
		if err := s.astro.DeleteToken(ctx, s.org, t.ID); err != nil {
			errs = append(errs, fmt.Errorf("delete %s: %w", t.ID, err))
			continue
		}
		n++
		s.metrics.reaped.Inc()
		s.log.Info("reaped expired token", "audit", "reap", "token_id", t.ID,
			"repository_id", m.RepositoryID, "run_id", m.RunID, "run_attempt", m.RunAttempt,
			"rule", m.Rule, "deadline", m.Deadline)
	}
	if len(errs) > 0 {
		s.metrics.reapErrors.Inc()
	}
	return n, errors.Join(errs...)
}

// RunReaper reaps every interval until ctx ends. A failed pass is logged
// and retried at the next tick: the reaper is the backstop, and must keep
// going whatever Astro does.
func (s *Server) RunReaper(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	defer s.releaseLease()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.underLease(ctx, interval, func() {
				pctx, cancel := context.WithTimeout(ctx, interval)
				if n, err := s.Reap(pctx); err != nil {
					s.log.Error("reaper pass failed", "reaped", n, "error", err)
				}
				cancel()
			})
		}
	}
}
