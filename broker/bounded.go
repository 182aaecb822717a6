package broker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/astro-sts/astro-sts/internal/astro"
)

// Defaults of the bound on the broker's Astro calls.
const (
	// DefaultAstroConcurrency is how many Astro calls the broker has in
	// flight at most: Astro rate-limits bursts of a few POSTs a second, and
	// past that number waiting in the broker is cheaper than a 429.
	DefaultAstroConcurrency = 16
	// DefaultAstroTimeout bounds one Astro operation (the client's retries
	// included) once it has a slot.
	DefaultAstroTimeout = 10 * time.Second
	// DefaultRequestTimeout is the deadline of an exchange or a revoke:
	// longer than one Astro call, shorter than the action's 30s per call.
	DefaultRequestTimeout = 15 * time.Second
)

// errNoAstroSlot means the caller's context ended while its Astro call was
// still waiting for a slot: nothing was sent, so nothing can have been
// created.
var errNoAstroSlot = errors.New("waited too long for a free Astro call slot")

// boundedAstro is the one door of the broker's calls to Astro: at most
// cap(slots) of them in flight, so that a burst of exchanges or a reaper
// sweep queues briefly in the broker instead of tripping Astro's own rate
// limit, and each bounded by timeout once it has its slot (the wait for a
// slot is bounded by the caller's context only, so a queue does not eat
// the call's own time).
type boundedAstro struct {
	next    Astro
	slots   chan struct{}
	timeout time.Duration
	metrics *Metrics
}

func newBoundedAstro(next Astro, n int, timeout time.Duration, m *Metrics) *boundedAstro {
	return &boundedAstro{next: next, slots: make(chan struct{}, n), timeout: timeout, metrics: m}
}

// enter waits for a slot and returns the call's context and the function
// that gives the slot back.
func (b *boundedAstro) enter(ctx context.Context) (context.Context, func(), error) {
	start := time.Now()
	select {
	case b.slots <- struct{}{}:
	case <-ctx.Done():
		b.metrics.upstreamWait.Observe(time.Since(start).Seconds())
		return nil, nil, fmt.Errorf("%w: %w", errNoAstroSlot, ctx.Err())
	}
	b.metrics.upstreamWait.Observe(time.Since(start).Seconds())
	b.metrics.upstreamInFlight.Inc()
	cctx, cancel := context.WithTimeout(ctx, b.timeout)
	return cctx, func() {
		cancel()
		b.metrics.upstreamInFlight.Dec()
		<-b.slots
	}, nil
}

func (b *boundedAstro) CreateToken(ctx context.Context, orgID string, req astro.CreateTokenRequest) (*astro.Token, error) {
	ctx, done, err := b.enter(ctx)
	if err != nil {
		return nil, err
	}
	defer done()
	return b.next.CreateToken(ctx, orgID, req)
}

func (b *boundedAstro) SetTokenRoles(ctx context.Context, orgID, tokenID string, roles []astro.TokenRole) (*astro.SubjectRoles, error) {
	ctx, done, err := b.enter(ctx)
	if err != nil {
		return nil, err
	}
	defer done()
	return b.next.SetTokenRoles(ctx, orgID, tokenID, roles)
}

func (b *boundedAstro) GetToken(ctx context.Context, orgID, tokenID string) (*astro.Token, error) {
	ctx, done, err := b.enter(ctx)
	if err != nil {
		return nil, err
	}
	defer done()
	return b.next.GetToken(ctx, orgID, tokenID)
}

func (b *boundedAstro) DeleteToken(ctx context.Context, orgID, tokenID string) error {
	ctx, done, err := b.enter(ctx)
	if err != nil {
		return err
	}
	defer done()
	return b.next.DeleteToken(ctx, orgID, tokenID)
}

func (b *boundedAstro) ListTokensPage(ctx context.Context, orgID string, opts astro.ListTokensOptions, offset, limit int) (*astro.TokensPage, error) {
	ctx, done, err := b.enter(ctx)
	if err != nil {
		return nil, err
	}
	defer done()
	return b.next.ListTokensPage(ctx, orgID, opts, offset, limit)
}

// ListOrganizations is the readiness probe's call: it does not queue for a
// slot, so that a broker busy with a burst or a sweep is not reported
// unready (and taken out of service) for being busy. It is at most one
// call per ReadyCacheTTL.
func (b *boundedAstro) ListOrganizations(ctx context.Context) ([]astro.Organization, error) {
	ctx, cancel := context.WithTimeout(ctx, b.timeout)
	defer cancel()
	return b.next.ListOrganizations(ctx)
}
