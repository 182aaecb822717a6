package broker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/astro-sts/astro-sts/internal/astro"
	"github.com/astro-sts/astro-sts/internal/idtoken"
	"github.com/astro-sts/astro-sts/internal/policy"
	"github.com/astro-sts/astro-sts/internal/store"
)

// What the broker asks of its [store.Store] besides the replay check
// ([Server.spend]): rate limits, its readiness, and the reaper's lease.

// rateLimitedError refuses an exchange over its rule's rate limit, or a
// revoke over its repository's (429).
type rateLimitedError struct {
	op         op // opExchange (rule is set) or opRevoke
	rule       string
	limit      policy.RateLimit
	retryAfter time.Duration
}

func (e *rateLimitedError) Error() string {
	if e.op == opRevoke {
		return fmt.Sprintf("rate limited: a repository may revoke %d tokens per %s (burst %d); next in %s",
			e.limit.Rate, e.limit.Period, e.limit.Burst, e.retryAfter.Round(time.Millisecond))
	}
	return fmt.Sprintf("rate limited: rule %q allows a repository %d tokens per %s (burst %d); next in %s",
		e.rule, e.limit.Rate, e.limit.Period, e.limit.Burst, e.retryAfter.Round(time.Millisecond))
}

// limit takes one token from the budget of the repository (repository_id
// of the issuer) under the deciding rule, if the rule has a limit. It runs
// after the read-only replay check and before the spend (see
// [Server.exchange]).
func (s *Server) limit(ctx context.Context, c *idtoken.Claims, d policy.Decision) error {
	l := d.RateLimit
	if l.IsZero() {
		return nil
	}
	v, err := s.store.Allow(ctx, rateKey(c, d), store.Limit{Rate: l.Rate, Period: l.Period, Burst: l.Burst})
	if err != nil {
		return s.storeErr("rate_limit", err)
	}
	if !v.Allowed {
		s.metrics.rateLimited.WithLabelValues(d.Rule).Inc()
		return &rateLimitedError{op: opExchange, rule: d.Rule, limit: l, retryAfter: v.RetryAfter}
	}
	return nil
}

// rateKey is the budget of the repository (repository_id of the issuer)
// under the deciding rule.
func rateKey(c *idtoken.Claims, d policy.Decision) string {
	return store.Key("rate", c.Issuer, c.RepositoryID, d.Rule)
}

// storeTimeout bounds the readiness probe's ping.
const storeTimeout = 2 * time.Second

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
	if errors.Is(err, idtoken.ErrReplayCacheFull) {
		s.log.Error("readiness: the replay cache is full of live ID tokens, so every exchange is refused (503 busy) until some expire; "+
			"raise ASTRO_STS_REPLAY_CACHE_SIZE, give busy rules a rate_limit, or share a Redis (ASTRO_STS_REDIS_URL)", "error", err)
		return "replay cache full"
	}
	s.log.Warn("readiness: store unreachable or refusing writes (the error says why, and the fix where Redis gave a reason)", "error", err)
	return "shared store unreachable"
}

// refund gives back the budget [Server.limit] took for an exchange whose
// create failed with createErr, if the create provably did nothing (Astro
// refused it, or it was never sent): the job has had no token. A create
// whose outcome is unknown keeps it spent, since a token may exist. A
// failed refund only leaves the budget spent, as before.
func (s *Server) refund(ctx context.Context, c *idtoken.Claims, d policy.Decision, createErr error) {
	if !(errors.Is(createErr, errNoAstroSlot) || astro.NotProcessed(createErr)) {
		return
	}
	s.giveBack(ctx, c, d)
}

// giveBack returns to the repository's budget what [Server.limit] took
// for an exchange that did nothing (its spend failed, or its create
// provably did nothing). A failed give-back only leaves the budget spent.
func (s *Server) giveBack(ctx context.Context, c *idtoken.Claims, d policy.Decision) {
	l := d.RateLimit
	if l.IsZero() {
		return
	}
	// The request's context may be what ended the mint.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), storeTimeout)
	defer cancel()
	err := s.store.Refund(ctx, rateKey(c, d), store.Limit{Rate: l.Rate, Period: l.Period, Burst: l.Burst})
	if err != nil {
		s.storeErr("rate_limit", err)
		s.log.Warn("rate limit: could not give back the budget of an exchange that did nothing", "rule", d.Rule, "error", err)
	}
}

// storeErr counts err if it is the store's failure to answer, and returns
// it.
func (s *Server) storeErr(op string, err error) error {
	if errors.Is(err, store.ErrUnavailable) {
		s.metrics.storeErrors.WithLabelValues(op).Inc()
	}
	return err
}

// reaperLease names the lease that lets one replica reap per interval.
const reaperLease = "reaper"

// errLeaseLost is why a pass stops when its replica no longer holds the
// reaper's lease.
var errLeaseLost = errors.New("the reaper's lease was lost (another replica holds it, or the store could not renew it)")

// reapLease is the reaper's lease as one pass holds it, or, for a pass
// that started while the store could not answer, hopes to. The store says
// who holds it, and the pass asks it before each delete (and every half
// interval, for the listing's sake): one Lua call, which renews the lease
// or takes it if it is free. So a holder whose lease Redis lost (a restart
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
	done := make(chan struct{})
	renewed := make(chan struct{})
	go func() {
		defer close(renewed)
		t := time.NewTicker(interval / 2)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
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
	close(done)
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

func boolGauge(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
