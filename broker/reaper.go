package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/astro-sts/astro-sts/internal/astro"
)

// DefaultReapConcurrency is how many deletes a reaper pass has in flight at
// most: half of [DefaultAstroConcurrency], so that a sweep leaves room for
// exchanges.
const DefaultReapConcurrency = 8

const (
	// reapPageSize is the largest page Astro serves: the fewer list calls,
	// the sooner the deletes start.
	reapPageSize = astro.MaxPageSize
	// reapErrorsKept is how many errors of a pass are reported verbatim;
	// the rest are counted.
	reapErrorsKept = 3
)

// The outcomes of a reaper delete, in its audit records and (but for
// the intent) the metrics' outcome label.
const (
	// reapDeleting is the record of intent, written before the delete is
	// sent (the twin of [undeliveredDeleting]).
	reapDeleting = "deleting"
	reapDeleted  = "deleted"
	// reapGone: Astro answered 404; another replica, a revoke or Astro's
	// own expiry got there first. Not counted as reaped.
	reapGone   = "already_gone"
	reapFailed = "delete_failed"
)

// reapSummary is what one pass did.
type reapSummary struct {
	listed, expired, deleted, gone, failed int
	mostOverdue                            time.Duration
	errs                                   []error // the first reapErrorsKept
	duration                               time.Duration
	// leaseLost: the pass stopped because this replica no longer held the
	// reaper's lease; what it cut off is not counted as failed.
	leaseLost bool
}

// note records a failure: counted always, kept verbatim for the first few.
func (r *reapSummary) note(err error) {
	r.failed++
	if len(r.errs) < reapErrorsKept {
		r.errs = append(r.errs, err)
	}
}

// err is the pass's errors as one short error: a count and the first few,
// never one line per token.
func (r *reapSummary) err() error {
	if r.failed == 0 {
		return nil
	}
	msgs := make([]string, len(r.errs))
	for i, e := range r.errs {
		msgs[i] = e.Error()
	}
	more := ""
	if r.failed > len(r.errs) {
		more = fmt.Sprintf(" (and %d more)", r.failed-len(r.errs))
	}
	return upstream(fmt.Errorf("reaper: %d calls failed; first: %s%s", r.failed, strings.Join(msgs, "; "), more))
}

// Reap deletes, in one pass, every token carrying the broker's marker whose
// deadline has passed, and returns how many it deleted (a token someone
// else deleted first, answered 404, is not counted). It keeps no state:
// the marker in each token's description says everything, so any number of
// replicas may reap at once.
//
// The pass deletes as it lists, with at most the configured number of
// deletes in flight, all inside the broker's bound on Astro calls. It has
// no deadline of its own: each call has its timeout, so a large
// organization takes longer but is never cut off half way, pass after
// pass. Its error, if any, summarizes the pass (a count and the first few
// errors).
func (s *Server) Reap(ctx context.Context) (int, error) {
	r := s.reapOnce(ctx, nil)
	return r.deleted, r.err()
}

// reapOnce runs one pass, records its metrics and logs one summary line.
// It is the one call [Server.RunReaper] makes per tick, under the lease
// (nil: none, every delete goes ahead), which it asks before each delete.
//
// Each delete has two audit records, as an undelivered token's has
// ([Server.deleteUndelivered]): the intent ("deleting"), written before
// the delete is sent, and the outcome (deleted, already_gone,
// delete_failed) after it. A broker killed between the two leaves a gone
// token whose intent names it, never a gone token without a record.
//
// Offset paging is not a snapshot, and the pass deletes while it lists, so
// the order of the walk matters. The listing is sorted by creation; the
// first page (which gives the total count, and holds the most overdue
// tokens) is reaped at once, then the walk goes from the last page down.
// A delete only moves the tokens after it down: those the walk has already
// passed, or, for a delete on the first page, tokens of the second page
// into the first page's range, which one more look at the first page at
// the end finds. A token created meanwhile lands at the end, behind the
// walk. So neither the pass's own deletes nor new exchanges make it skip a
// token; a revoke elsewhere can make a page repeat one, which the
// de-duplication by id deletes once. A token the pass still misses (Astro
// ordering equal timestamps differently from one call to the next) is
// taken by the next pass.
func (s *Server) reapOnce(ctx context.Context, lease *reapLease) reapSummary {
	start := time.Now()
	now := s.now()
	var r reapSummary
	var mu sync.Mutex // guards r against the deleters

	work := make(chan reapItem, 2*s.reapConc)
	var wg sync.WaitGroup
	for range s.reapConc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for it := range work {
				// Once the lease is lost, the rest of the queue is
				// dropped: the holder's pass takes it.
				if !lease.holds(ctx) {
					continue
				}
				s.recordReap(ctx, it, reapDeleting, slog.LevelInfo)
				found, err := s.astro.DeleteTokenFound(ctx, s.org, it.id)
				if err != nil && lease != nil && !leaseLost(ctx) {
					// A delete that failed because the process was paused
					// past its lease (it outlasted the Astro timeout) is
					// the lease's loss, not Astro's failure: ask the store.
					lease.holds(ctx)
				}
				outcome, level := reapDeleted, slog.LevelInfo
				mu.Lock()
				switch {
				case err == nil && found:
					r.deleted++
				case err == nil:
					r.gone++
					outcome = reapGone
				case leaseLost(ctx):
					// Cut off by the lease's loss: the delete may or may
					// not have happened, which the intent says.
					outcome, level = reapFailed, slog.LevelWarn
				default:
					r.note(fmt.Errorf("delete %s: %w", it.id, err))
					outcome, level = reapFailed, slog.LevelWarn
				}
				mu.Unlock()
				if outcome != reapFailed {
					s.metrics.reaped.WithLabelValues(outcome).Inc()
				}
				s.recordReap(ctx, it, outcome, level)
			}
		}()
	}

	seen := map[string]bool{}
	dispatch := func(toks []astro.Token) {
		for _, t := range toks {
			m, ok := ParseMarker(t.Description)
			if !ok || now.Before(m.Deadline) || seen[t.ID] {
				continue
			}
			seen[t.ID] = true
			mu.Lock()
			r.expired++
			r.mostOverdue = max(r.mostOverdue, now.Sub(m.Deadline))
			mu.Unlock()
			select {
			case work <- reapItem{id: t.ID, m: m}:
			case <-ctx.Done():
				return
			}
		}
	}
	list := func(offset int) *astro.TokensPage {
		page, err := s.astro.ListTokensPage(ctx, s.org, astro.ListTokensOptions{Sorts: []string{"createdAt:asc"}}, offset, reapPageSize)
		if err != nil && leaseLost(ctx) {
			return nil
		}
		if err != nil {
			mu.Lock()
			r.note(fmt.Errorf("list tokens at offset %d: %w", offset, err))
			mu.Unlock()
			return nil
		}
		mu.Lock()
		r.listed += len(page.Tokens)
		mu.Unlock()
		return page
	}

	if first := list(0); first != nil {
		dispatch(first.Tokens)
		if first.TotalCount > reapPageSize {
			last := (first.TotalCount - 1) / reapPageSize * reapPageSize
			for off := last; off >= reapPageSize && ctx.Err() == nil; off -= reapPageSize {
				if page := list(off); page != nil {
					dispatch(page.Tokens)
				}
			}
			// The first page's deletes moved tokens of the second page into
			// the first page's range after the walk had listed them there:
			// one more look at the first page finds them.
			if page := list(0); page != nil && ctx.Err() == nil {
				dispatch(page.Tokens)
			}
		}
	}
	close(work)
	wg.Wait()
	r.leaseLost = leaseLost(ctx)

	r.duration = time.Since(start)
	s.metrics.reapDuration.Observe(r.duration.Seconds())
	s.metrics.reapExpired.Set(float64(r.expired))
	s.metrics.reapOverdue.Set(r.mostOverdue.Seconds())
	if r.failed > 0 {
		s.metrics.reapErrors.Inc()
		s.metrics.reapFailedCalls.Add(float64(r.failed))
	}
	level := s.log.Debug
	switch {
	case r.failed > 0:
		level = s.log.Error
	case r.leaseLost:
		level = s.log.Warn
	case r.expired > 0:
		level = s.log.Info
	}
	msg := "reaper pass"
	switch {
	case r.failed > 0:
		msg = "reaper pass incomplete; the next pass retries"
	case r.leaseLost:
		msg = "reaper pass stopped: the lease was lost; the replica holding it reaps the rest"
	}
	args := []any{"listed", r.listed, "expired", r.expired, "reaped", r.deleted, "already_gone", r.gone, "failed", r.failed,
		"most_overdue", r.mostOverdue.Round(time.Second), "duration", r.duration.Round(time.Millisecond)}
	if err := r.err(); err != nil {
		args = append(args, "error", err)
	}
	level(msg, args...)
	return r
}

type reapItem struct {
	id string
	m  Marker
}

// leaseLost reports whether ctx, a pass's, was cancelled because the
// replica lost the reaper's lease.
func leaseLost(ctx context.Context) bool {
	return errors.Is(context.Cause(ctx), errLeaseLost)
}

// recordReap writes a reaper delete's audit record: the intent before the
// delete is sent, the outcome after.
func (s *Server) recordReap(ctx context.Context, it reapItem, outcome string, level slog.Level) {
	s.log.LogAttrs(ctx, level, "reap", append(markerAttrs(it.m),
		slog.String("audit", "reap"),
		slog.String("outcome", outcome),
		slog.String("token_id", it.id),
	)...)
}

// RunReaper reaps every interval until ctx ends. Each tick runs one pass
// ([Server.Reap]); a pass runs as long as it needs, and the ticks that
// fall while it runs are skipped (counted in the metrics), so passes never
// overlap and a slow Astro never stops the reaper: it only makes it late.
// With a shared store, the reaper's lease follows this replica's health
// (see [Server.reapTick]).
func (s *Server) RunReaper(ctx context.Context, interval time.Duration) {
	ticks := s.reapTicks
	if ticks == nil {
		t := time.NewTicker(interval)
		defer t.Stop()
		ticks = t.C
	}
	defer s.releaseLease()
	sitOut := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticks:
		}
		start := time.Now()
		sitOut = s.reapTick(ctx, interval, sitOut)
		// A tick that fell during the pass is waiting in the channel:
		// drop it, so that the next pass starts on a fresh tick.
		select {
		case <-ticks:
		default:
		}
		if skipped := int(time.Since(start) / interval); skipped > 0 {
			s.metrics.reapSkipped.Add(float64(skipped))
			s.log.Warn("reaper pass took longer than the interval; ticks skipped", "skipped", skipped, "interval", interval)
		}
	}
}

// reapTick is one tick of [Server.RunReaper]: one pass, under the reaper's
// lease when the store is shared (with Redis, one replica sweeps per
// interval). It returns whether to sit the next tick out.
//
// With a shared store the lease follows health, or a replica that cannot
// reap (its organization token revoked, its way to Astro broken) would
// hold the lease, renewed at every tick, and no replica would reap at
// all. A replica whose Astro check fails (the readiness check's, cached
// the same) gives the lease up and does not take it; one whose pass
// failed gives it up at the end of the pass and sits the next tick out,
// so that a healthy replica takes the lease at its next tick: within two
// intervals of the failure. Without a shared store every replica reaps
// for itself, and a failed pass is retried at the next tick.
func (s *Server) reapTick(ctx context.Context, interval time.Duration, sitOut bool) bool {
	if s.store.Shared() {
		if err := s.upstreamReady(ctx); err != nil {
			s.releaseLease()
			s.log.Warn("reaper: not this tick", "why", "the Astro check failed; the lease is left to a replica that can reach Astro", "error", err)
			return false
		}
		if sitOut {
			s.log.Info("reaper: not this tick", "why", "the last pass failed; the lease is left to another replica for one tick")
			return false
		}
	}
	failed := false
	s.underLease(ctx, interval, func(ctx context.Context, l *reapLease) {
		failed = s.reapOnce(ctx, l).failed > 0
	})
	if failed && s.store.Shared() && ctx.Err() == nil {
		s.releaseLease()
		return true
	}
	return false
}
