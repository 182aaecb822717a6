package broker

import (
	"context"
	"fmt"
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

// reapSummary is what one pass did.
type reapSummary struct {
	listed, expired, deleted, failed int
	mostOverdue                      time.Duration
	errs                             []error // the first reapErrorsKept
	duration                         time.Duration
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
// deadline has passed, and returns how many it deleted. It keeps no state:
// the marker in each token's description says everything, so any number of
// replicas may reap at once (a 404 on delete is success to the client).
//
// The pass deletes as it lists, with at most the configured number of
// deletes in flight, all inside the broker's bound on Astro calls. It has
// no deadline of its own: each call has its timeout, so a large
// organization takes longer but is never cut off half way, pass after
// pass. Its error, if any, summarizes the pass (a count and the first few
// errors).
func (s *Server) Reap(ctx context.Context) (int, error) {
	r := s.reapOnce(ctx)
	return r.deleted, r.err()
}

// reapOnce runs one pass, records its metrics and logs one summary line.
// It is the one call [Server.RunReaper] makes per tick.
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
func (s *Server) reapOnce(ctx context.Context) reapSummary {
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
				err := s.astro.DeleteToken(ctx, s.org, it.id)
				mu.Lock()
				if err != nil {
					r.note(fmt.Errorf("delete %s: %w", it.id, err))
				} else {
					r.deleted++
				}
				mu.Unlock()
				if err != nil {
					continue
				}
				s.metrics.reaped.Inc()
				s.log.Info("reaped expired token", "audit", "reap", "token_id", it.id,
					"repository_id", it.m.RepositoryID, "run_id", it.m.RunID, "run_attempt", it.m.RunAttempt,
					"rule", it.m.Rule, "deadline", it.m.Deadline)
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
	case r.expired > 0:
		level = s.log.Info
	}
	msg := "reaper pass"
	if r.failed > 0 {
		msg = "reaper pass incomplete; the next pass retries"
	}
	args := []any{"listed", r.listed, "expired", r.expired, "reaped", r.deleted, "failed", r.failed,
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

// RunReaper reaps every interval until ctx ends. Each tick runs one pass
// ([Server.Reap]); a pass runs as long as it needs, and the ticks that
// fall while it runs are skipped (counted in the metrics), so passes never
// overlap and a slow Astro never stops the reaper: it only makes it late.
func (s *Server) RunReaper(ctx context.Context, interval time.Duration) {
	ticks := s.reapTicks
	if ticks == nil {
		t := time.NewTicker(interval)
		defer t.Stop()
		ticks = t.C
	}
	defer s.releaseLease()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticks:
		}
		start := time.Now()
		// One pass, under the reaper's lease when the store is shared
		// (with Redis, one replica sweeps per interval).
		s.underLease(ctx, interval, func() { s.reapOnce(ctx) })
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
