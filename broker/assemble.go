package broker

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/astro-sts/astro-sts/internal/astro"
	"github.com/astro-sts/astro-sts/internal/config"
	"github.com/astro-sts/astro-sts/internal/idtoken"
	"github.com/astro-sts/astro-sts/internal/policy"
	"github.com/astro-sts/astro-sts/internal/rotation"
	"github.com/astro-sts/astro-sts/internal/store"
)

// Deps are what [Assemble] does not read from the configuration: the
// process's clock, HTTP client and logger, and the parts a caller builds
// itself. The zero value is the production one, except for what the
// configuration cannot say (the user agent, the start time).
type Deps struct {
	// Now is the clock of every part (nil: time.Now); the demo moves it to
	// show the reaper, the tests step it.
	Now func() time.Time
	// HTTPClient makes the Astro and OIDC discovery calls (nil: each
	// client's default).
	HTTPClient *http.Client
	Logger     *slog.Logger
	// UserAgent is the Astro client's.
	UserAgent string
	// TuneAstro, if set, adjusts the Astro client's configuration before it
	// is built (tests shorten its retries).
	TuneAstro func(*astro.Config)
	// Store, if set, is the broker's store instead of the one the
	// configuration names; the assembly closes it.
	Store store.Store
	// PolicyChecks run on every load of the policy file.
	PolicyChecks []func(*policy.Policy) error
	// Rotator, if set, builds the rotator on the Astro client it is given,
	// which shares the broker's bound on Astro calls in flight.
	Rotator func(rotation.Astro) (Rotator, error)
	// Started is when the broker starts accepting ID tokens (see
	// [Config.Started]).
	Started time.Time
	// Configure, if set, adjusts the broker's configuration before [New]
	// (tests wrap its Astro client to misbehave, or shorten its timeouts):
	// after the configuration's values are in, before the bound on Astro
	// calls is made of its AstroConcurrency and AstroTimeout. The rotator
	// keeps the unwrapped client.
	Configure func(*Config)
}

// Assembly is a broker and the parts it was built from.
type Assembly struct {
	Server *Server
	// Astro is the Astro client, unbounded and unwrapped.
	Astro    *astro.Client
	Store    store.Store
	Policies *policy.Reloader
	Bound    *AstroBound
	Registry *Registry
}

// Close releases the store; the caller stops serving first.
func (a *Assembly) Close() error { return a.Store.Close() }

// Assemble builds a broker from the broker's configuration and deps: its
// store, policy reloader, Astro client, OIDC verifier, metrics, the bound on
// its Astro calls (shared with the rotator) and the rotator. It is the one
// wiring of `astro-sts serve`, the demo and the tests, so that they cannot
// drift apart. On error, whatever was opened is closed again.
func Assemble(cfg config.Broker, deps Deps) (_ *Assembly, err error) {
	a := &Assembly{Store: deps.Store}
	if a.Store == nil {
		if a.Store, err = newStore(cfg, deps); err != nil {
			return nil, err
		}
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, a.Store.Close())
		}
	}()
	if a.Policies, err = policy.NewReloader(cfg.PolicyFile, deps.Logger, deps.PolicyChecks...); err != nil {
		return nil, fmt.Errorf("policy: %w", err)
	}
	a.Registry = NewRegistry()
	metrics, err := NewMetrics(a.Registry)
	if err != nil {
		return nil, err
	}
	acfg := astro.Config{
		BaseURL:    cfg.Astro.APIURL,
		Token:      cfg.Astro.OrganizationToken().Reveal(),
		HTTPClient: deps.HTTPClient,
		UserAgent:  deps.UserAgent,
		Now:        deps.Now,
		Observe:    metrics.ObserveUpstream,
	}
	if deps.TuneAstro != nil {
		deps.TuneAstro(&acfg)
	}
	if a.Astro, err = astro.New(acfg); err != nil {
		return nil, fmt.Errorf("astro client: %w", err)
	}
	verifier, err := idtoken.New(idtoken.Config{
		Issuers:    cfg.Issuers,
		Audience:   cfg.Audience,
		HTTPClient: deps.HTTPClient,
		Now:        deps.Now,
	})
	if err != nil {
		return nil, err
	}
	bc := Config{
		Astro:            a.Astro,
		OrganizationID:   cfg.Astro.OrganizationID,
		Verifier:         verifier,
		Store:            a.Store,
		Policies:         a.Policies,
		Logger:           deps.Logger,
		Registry:         a.Registry,
		Metrics:          metrics,
		Now:              deps.Now,
		AstroConcurrency: cfg.AstroConcurrency,
		AstroTimeout:     cfg.AstroTimeout,
		RequestTimeout:   cfg.RequestTimeout,
		ReapConcurrency:  cfg.ReapConcurrency,
		RevokeRateLimit:  cfg.RevokeLimit(),
		Started:          deps.Started,
	}
	if deps.Configure != nil {
		deps.Configure(&bc)
	}
	// One bound on the Astro calls in flight for the broker and its
	// rotator: Astro's rate limit counts the organization token's calls,
	// whoever makes them.
	if bc.AstroBound == nil {
		if bc.AstroBound, err = NewAstroBound(bc.AstroConcurrency, bc.AstroTimeout, bc.Metrics); err != nil {
			return nil, err
		}
		bc.AstroConcurrency, bc.AstroTimeout = 0, 0
	}
	a.Bound = bc.AstroBound
	if deps.Rotator != nil {
		if bc.Rotator, err = deps.Rotator(a.Bound.Rotation(a.Astro)); err != nil {
			return nil, fmt.Errorf("rotation: %w", err)
		}
	}
	if a.Server, err = New(bc); err != nil {
		return nil, err
	}
	return a, nil
}

// newStore is the store the configuration names: Redis when
// ASTRO_STS_REDIS_URL is set, shared by the replicas; else this process's
// memory. Redis need not be up yet: the broker starts, not ready, and
// serves once it answers.
func newStore(cfg config.Broker, deps Deps) (store.Store, error) {
	if !cfg.Store.Shared() {
		now := deps.Now
		if now == nil {
			now = time.Now
		}
		return store.NewMemory(cfg.ReplayCacheSize, now), nil
	}
	roots, err := cfg.Store.RootCAs()
	if err != nil {
		return nil, fmt.Errorf("ASTRO_STS_REDIS_CA_FILE: %w", err)
	}
	return store.NewRedis(store.RedisConfig{
		URL:      cfg.Store.RedisURL.Reveal(),
		Password: cfg.Store.RedisPassword.Reveal(),
		RootCAs:  roots,
		Logger:   deps.Logger,
	})
}
