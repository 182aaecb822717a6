package broker

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/astro-sts/astro-sts/internal/astro"
	"github.com/astro-sts/astro-sts/internal/rotation"
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

// AstroBound is the bound on a process's Astro calls in flight: at most
// its concurrency at once, so that a burst of exchanges, a reaper sweep or
// a rotation queues briefly in the process instead of tripping Astro's own
// rate limit, which counts every call of the organization token alike.
// The broker makes one from [Config.AstroConcurrency] and
// [Config.AstroTimeout]; [Assemble] makes it with [NewAstroBound]
// and shares it with the rotator ([AstroBound.Rotation],
// [Config.AstroBound]), so that the broker's calls and the rotator's
// together stay within it.
//
// A call holds its slot for the whole operation, the Astro client's
// retries included. The wait for a slot is bounded by the caller's
// context only, so that a queue does not eat the call's own time.
type AstroBound struct {
	slots chan struct{}
	// timeout bounds each of the broker's calls once it has its slot.
	timeout time.Duration
	metrics *Metrics
}

// NewAstroBound returns a bound of concurrency calls in flight (0 means
// [DefaultAstroConcurrency]) whose broker calls each get timeout once they
// have a slot (0 means [DefaultAstroTimeout]). The waits and the calls in
// flight are counted in m, which must be the [Metrics] the broker is
// given.
func NewAstroBound(concurrency int, timeout time.Duration, m *Metrics) (*AstroBound, error) {
	if concurrency < 0 || timeout < 0 {
		return nil, errors.New("broker: the Astro concurrency and timeout must not be negative")
	}
	if m == nil {
		return nil, errors.New("broker: an Astro bound needs the broker's Metrics")
	}
	return &AstroBound{
		slots:   make(chan struct{}, cmp.Or(concurrency, DefaultAstroConcurrency)),
		timeout: cmp.Or(timeout, DefaultAstroTimeout),
		metrics: m,
	}, nil
}

// acquire waits for a slot and returns the function that gives it back.
func (b *AstroBound) acquire(ctx context.Context) (func(), error) {
	start := time.Now()
	select {
	case b.slots <- struct{}{}:
	default:
		b.metrics.upstreamQueued.Inc()
		select {
		case b.slots <- struct{}{}:
			b.metrics.upstreamQueued.Dec()
		case <-ctx.Done():
			b.metrics.upstreamQueued.Dec()
			b.metrics.upstreamWait.Observe(time.Since(start).Seconds())
			return nil, fmt.Errorf("%w: %w", errNoAstroSlot, ctx.Err())
		}
	}
	b.metrics.upstreamWait.Observe(time.Since(start).Seconds())
	b.metrics.upstreamInFlight.Inc()
	return func() {
		b.metrics.upstreamInFlight.Dec()
		<-b.slots
	}, nil
}

// within runs call holding a slot of b, and, if timeout is not zero,
// bounded by it once it has the slot. It is the one body of every bounded
// Astro method, the broker's and the rotator's.
func within[T any](ctx context.Context, b *AstroBound, timeout time.Duration, call func(context.Context) (T, error)) (T, error) {
	release, err := b.acquire(ctx)
	if err != nil {
		var zero T
		return zero, err
	}
	defer release()
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	return call(ctx)
}

// tokenCalls are the Astro calls the broker and the rotator both make.
type tokenCalls interface {
	CreateToken(ctx context.Context, orgID string, req astro.CreateTokenRequest) (*astro.Token, error)
	SetTokenRoles(ctx context.Context, orgID, tokenID string, roles []astro.TokenRole) (*astro.SubjectRoles, error)
	GetToken(ctx context.Context, orgID, tokenID string) (*astro.Token, error)
	DeleteToken(ctx context.Context, orgID, tokenID string) error
}

// boundedTokens makes [tokenCalls] of next through the bound, each with
// timeout once it has its slot (zero: none). It keeps next as its own
// client type, so that the broker's and the rotator's bounds add their
// other calls on the one client they hold.
type boundedTokens[T tokenCalls] struct {
	next    T
	bound   *AstroBound
	timeout time.Duration
}

func (b boundedTokens[T]) CreateToken(ctx context.Context, orgID string, req astro.CreateTokenRequest) (*astro.Token, error) {
	return within(ctx, b.bound, b.timeout, func(ctx context.Context) (*astro.Token, error) {
		return b.next.CreateToken(ctx, orgID, req)
	})
}

func (b boundedTokens[T]) SetTokenRoles(ctx context.Context, orgID, tokenID string, roles []astro.TokenRole) (*astro.SubjectRoles, error) {
	return within(ctx, b.bound, b.timeout, func(ctx context.Context) (*astro.SubjectRoles, error) {
		return b.next.SetTokenRoles(ctx, orgID, tokenID, roles)
	})
}

func (b boundedTokens[T]) GetToken(ctx context.Context, orgID, tokenID string) (*astro.Token, error) {
	return within(ctx, b.bound, b.timeout, func(ctx context.Context) (*astro.Token, error) {
		return b.next.GetToken(ctx, orgID, tokenID)
	})
}

func (b boundedTokens[T]) DeleteToken(ctx context.Context, orgID, tokenID string) error {
	_, err := within(ctx, b.bound, b.timeout, func(ctx context.Context) (struct{}, error) {
		return struct{}{}, b.next.DeleteToken(ctx, orgID, tokenID)
	})
	return err
}

// boundedAstro is the one door of the broker's calls to Astro: each takes
// a slot of the bound, and is bounded by its timeout once it has it.
type boundedAstro struct {
	boundedTokens[Astro]
}

func newBoundedAstro(next Astro, bound *AstroBound) *boundedAstro {
	return &boundedAstro{boundedTokens[Astro]{next: next, bound: bound, timeout: bound.timeout}}
}

// foundDeleter is an Astro client that says whether a delete found the
// token (*astro.Client does, and so does the broker's bound around it), so
// that a 404 is recorded as already gone rather than as reaped.
type foundDeleter interface {
	DeleteTokenFound(ctx context.Context, orgID, tokenID string) (found bool, err error)
}

// DeleteTokenFound is DeleteToken saying whether the token was there,
// when the client it wraps can tell (see [foundDeleter]).
func (b *boundedAstro) DeleteTokenFound(ctx context.Context, orgID, tokenID string) (bool, error) {
	return within(ctx, b.bound, b.timeout, func(ctx context.Context) (bool, error) {
		if d, ok := b.next.(foundDeleter); ok {
			return d.DeleteTokenFound(ctx, orgID, tokenID)
		}
		err := b.next.DeleteToken(ctx, orgID, tokenID)
		return err == nil, err
	})
}

func (b *boundedAstro) ListTokensPage(ctx context.Context, orgID string, opts astro.ListTokensOptions, offset, limit int) (*astro.TokensPage, error) {
	return within(ctx, b.bound, b.timeout, func(ctx context.Context) (*astro.TokensPage, error) {
		return b.next.ListTokensPage(ctx, orgID, opts, offset, limit)
	})
}

// ListOrganizations is the readiness probe's call: it does not queue for a
// slot, so that a broker busy with a burst or a sweep is not reported
// unready (and taken out of service) for being busy. It is at most one
// call per ReadyCacheTTL.
func (b *boundedAstro) ListOrganizations(ctx context.Context) ([]astro.Organization, error) {
	ctx, cancel := context.WithTimeout(ctx, b.bound.timeout)
	defer cancel()
	return b.next.ListOrganizations(ctx)
}

// Rotation returns next, the Astro client of a rotator, with each call
// taking a slot of the bound: a rotation triggered through the broker
// (POST /v1/rotate) queues behind a burst of exchanges or a sweep instead
// of adding to them. Its calls get no timeout from the bound: a rotation,
// once started, must not be cut off halfway (it runs without its caller's
// cancellation, see [Server.Rotate]); the Astro client's own timeouts
// bound them.
func (b *AstroBound) Rotation(next rotation.Astro) rotation.Astro {
	return &boundedRotation{boundedTokens[rotation.Astro]{next: next, bound: b}}
}

type boundedRotation struct {
	boundedTokens[rotation.Astro]
}

func (b *boundedRotation) ListTokens(ctx context.Context, orgID string, opts astro.ListTokensOptions) ([]astro.Token, error) {
	return within(ctx, b.bound, 0, func(ctx context.Context) ([]astro.Token, error) {
		return b.next.ListTokens(ctx, orgID, opts)
	})
}

func (b *boundedRotation) RotateToken(ctx context.Context, orgID, tokenID string) (*astro.Token, error) {
	return within(ctx, b.bound, 0, func(ctx context.Context) (*astro.Token, error) {
		return b.next.RotateToken(ctx, orgID, tokenID)
	})
}
