package broker

import (
	"context"
	"errors"
	"sync"
	"time"
)

// The reaper's lease, which the broker holds in its [store.Store] so that
// one replica reaps per interval (see reaper.go).

// reaperLease names the lease that lets one replica reap per interval.
const reaperLease = "reaper"

// errLeaseLost is why a pass stops when its replica no longer holds the
// reaper's lease.
var errLeaseLost = errors.New("the reaper's lease was lost (another replica holds it, or the store could not renew it)")

// reapLease is the reaper's lease as one pass holds it, or, for a pass
// that started while the store could not answer, hopes to. The store says
// who holds it, and the pass asks it before each delete (and every half
// interval, for the listing's sake): one [store.Store.Lease] call, which
// renews the lease or takes it if it is free (with Redis, a renewal script
// and, when this replica does not hold it, a SETNX). So a holder whose lease Redis lost (a restart
// without persistence, a failover, FLUSHALL) and another replica took,
// or that was paused past its lease, stops at its next delete rather than
// at its next renewal; and a pass without the lease stops as soon as the
// store answers that another replica holds it, or takes the lease if
// nobody does. Only deletes already past their check can meet the other
// replica's: at most the reap concurrency.
//
// While the store cannot answer, a pass that started without the lease
// goes on (fail-open: a token reaped twice costs an Astro call, one not
// reaped stays alive); a holder stops, as a failed renewal always stopped
// it, and its next tick reaps without the lease if the store is still out.
type reapLease struct {
	s    *Server
	ttl  time.Duration
	stop context.CancelCauseFunc // cancels the pass

	mu       sync.Mutex
	held     bool        // the store's last answer: this replica holds the lease
	inflight *leaseCheck // the check in flight, which callers meanwhile share
}

// leaseCheck is one question to the store, shared by every deleter that
// asks while it is in flight: while the store does not answer (a paused
// or unreachable Redis) they wait on one call, not one each.
type leaseCheck struct {
	done chan struct{}
	ok   bool
}

// holds reports whether the pass may send its next delete: the pass is
// still running, and the store says the lease is this replica's, or, for a
// pass that started without it, cannot answer. A nil lease (the manual
// [Server.Reap]) always holds.
func (l *reapLease) holds(ctx context.Context) bool {
	if l == nil {
		return ctx.Err() == nil
	}
	if ctx.Err() != nil {
		return false
	}
	l.mu.Lock()
	c := l.inflight
	if c != nil {
		l.mu.Unlock()
		select {
		case <-c.done:
			return c.ok && ctx.Err() == nil
		case <-ctx.Done():
			return false
		}
	}
	c = &leaseCheck{done: make(chan struct{})}
	l.inflight = c
	l.mu.Unlock()

	// The pass's end is not the store's failure.
	held, err := l.s.store.Lease(context.WithoutCancel(ctx), reaperLease, l.ttl)

	l.mu.Lock()
	defer l.mu.Unlock()
	l.inflight = nil
	defer close(c.done)
	switch {
	case err == nil && held:
		if !l.held {
			l.s.log.Info("reaper lease: the store answers again and the lease was free; this pass now holds it")
		}
		l.held = true
		l.s.metrics.leaseHeld.Set(1)
		c.ok = true
	case err == nil:
		l.held = false
		l.s.metrics.leaseHeld.Set(0)
		l.stop(errLeaseLost)
	case l.held:
		l.s.storeErr("lease", err)
		l.held = false
		l.s.metrics.leaseHeld.Set(0)
		l.stop(errLeaseLost)
	default:
		l.s.storeErr("lease", err)
		c.ok = true
	}
	c.ok = c.ok && ctx.Err() == nil
	return c.ok
}

// underLease runs pass if this replica holds the reaper's lease, which it
// takes (or renews) for one interval: with a shared store, one replica
// lists the organization per interval instead of every one; if it dies,
// its lease expires and another takes over at its next tick, within one
// interval more. The pass asks the store before each delete, and every
// half interval besides (see [reapLease]); the first answer that another
// replica holds the lease, or a holder's failure to renew it, cancels the
// pass's context, so that two replicas do not go on deleting the same
// tokens side by side. If the store cannot answer at the start, the pass
// runs anyway, without the lease, until the store answers again: a token
// reaped twice costs an Astro call, one not reaped stays alive.
//
// It reports whether a pass ran.
func (s *Server) underLease(ctx context.Context, interval time.Duration, pass func(context.Context, *reapLease)) bool {
	pctx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	held, err := s.store.Lease(ctx, reaperLease, interval)
	switch {
	case err != nil:
		s.storeErr("lease", err)
		s.log.Warn("reaper lease: store unreachable; reaping without it", "error", err)
		s.metrics.leaseHeld.Set(0)
	case !held:
		s.metrics.leaseHeld.Set(0)
		s.log.Debug("reaper: not this tick", "why", "another replica holds the lease")
		return false
	default:
		s.metrics.leaseHeld.Set(1)
	}
	l := &reapLease{s: s, ttl: interval, stop: stop, held: held}
	renewed := make(chan struct{})
	go func() {
		defer close(renewed)
		t := time.NewTicker(interval / 2)
		defer t.Stop()
		for {
			select {
			case <-pctx.Done():
				return
			case <-t.C:
				if !l.holds(pctx) {
					return
				}
			}
		}
	}()
	pass(pctx, l)
	// The pass is over: ending its context stops the renewals too.
	stop(nil)
	<-renewed
	return true
}

// releaseLease gives the reaper's lease up, at shutdown or when this
// replica cannot reap, so that another replica need not wait for it to
// expire.
func (s *Server) releaseLease() {
	ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	if err := s.store.ReleaseLease(ctx, reaperLease); err != nil {
		s.storeErr("lease", err)
		s.log.Warn("reaper lease: could not release; it expires by itself", "error", err)
	}
	s.metrics.leaseHeld.Set(0)
}
