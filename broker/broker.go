// Package broker is the astro-sts HTTP service. It exchanges a GitHub
// Actions OIDC ID token for a short-lived Astro API token (verify -> decide
// -> mint -> record), revokes such tokens on request of the run that got
// them, reaps the ones whose post step never ran, and triggers rotations of
// long-lived tokens.
//
// The broker keeps no state beyond its [store.Store] (which OIDC tokens
// were used, rate limits, the reaper's lease), in memory or shared by the
// replicas through Redis: what a
// minted token is for, and when it must die, lives in the token's own
// description (see [Marker]), so any number of replicas can serve and reap.
package broker

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"path"
	"sync"
	"time"

	"github.com/astro-sts/astro-sts/internal/astro"
	"github.com/astro-sts/astro-sts/internal/idtoken"
	"github.com/astro-sts/astro-sts/internal/policy"
	"github.com/astro-sts/astro-sts/internal/rotation"
	"github.com/astro-sts/astro-sts/internal/store"
)

// Astro is the part of the Astro API the broker uses; *astro.Client
// implements it.
type Astro interface {
	CreateToken(ctx context.Context, orgID string, req astro.CreateTokenRequest) (*astro.Token, error)
	SetTokenRoles(ctx context.Context, orgID, tokenID string, roles []astro.TokenRole) (*astro.SubjectRoles, error)
	GetToken(ctx context.Context, orgID, tokenID string) (*astro.Token, error)
	DeleteToken(ctx context.Context, orgID, tokenID string) error
	ListTokensPage(ctx context.Context, orgID string, opts astro.ListTokensOptions, offset, limit int) (*astro.TokensPage, error)
	ListOrganizations(ctx context.Context) ([]astro.Organization, error)
}

// Verifier verifies OIDC ID tokens; *idtoken.Verifier implements it.
type Verifier interface {
	Verify(ctx context.Context, raw string) (*idtoken.Claims, error)
}

// Policies hands out the current trust policy; *policy.Reloader implements it.
type Policies interface {
	Current() *policy.Policy
}

// Rotator runs one rotation of a managed token by the strategy its policy
// names (internal/rotation); nil disables POST /v1/rotate.
type Rotator interface {
	Rotate(ctx context.Context, r *policy.Rotation) (*rotation.Result, error)
}

// Config holds the broker's dependencies.
type Config struct {
	Astro          Astro
	OrganizationID string
	Verifier       Verifier
	// Store holds the replay check, the rate limits and the reaper lease:
	// [store.Memory] for one replica, [store.Redis] shared by several.
	Store    store.Store
	Policies Policies
	Rotator  Rotator // optional

	// Logger receives operational logs and the audit records (one per
	// decision). nil discards.
	Logger *slog.Logger
	// Registry is served on /metrics; nil creates a private one.
	Registry *Registry
	// Metrics, if set, must be registered in Registry (see [NewMetrics]); it
	// lets the caller wire the Astro client's Observe hook to the same
	// metrics before the broker exists. nil creates them.
	Metrics *Metrics
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// ReadyCacheTTL bounds how often /readyz asks Astro whether it is up;
	// 0 means 10s.
	ReadyCacheTTL time.Duration

	// AstroConcurrency bounds the broker's Astro calls in flight (0 means
	// [DefaultAstroConcurrency]); AstroTimeout bounds each, once it has a
	// slot (0 means [DefaultAstroTimeout]).
	AstroConcurrency int
	AstroTimeout     time.Duration
	// AstroBound, if set, replaces AstroConcurrency and AstroTimeout
	// (which must then be zero): a bound made with [NewAstroBound] with
	// these Metrics and shared with the process's other callers of the
	// Astro API (the rotator, through [AstroBound.Rotation]), so that
	// their calls and the broker's together stay within it.
	AstroBound *AstroBound
	// RequestTimeout is the deadline of an exchange or a revoke: the broker
	// answers within it, "try again" if Astro is slow, and deletes what it
	// minted too late to deliver. It must stay below the action's per-call
	// timeout (30s) so that the answer arrives while the action waits; 0
	// means [DefaultRequestTimeout].
	RequestTimeout time.Duration
	// Started is when this broker began to accept requests. Unless the
	// replay store survives restarts, an ID token issued before it is
	// refused with a "try again" (see restart.go): it may have been spent
	// in a process whose replay memory is gone. Zero turns the rule off,
	// for a broker that lives as long as its callers (tests, the demo).
	// `astro-sts serve` sets it to its start rounded up to a whole second
	// (the resolution of iat) and serves nothing before that.
	Started time.Time
	// RecoveryWindow is how long after a create with an unknown outcome
	// was sent the broker still looks for the token it may have made; 0
	// means [DefaultRecoveryWindow]. It is never shorter than three times
	// the Astro timeout.
	RecoveryWindow time.Duration
	// ReapConcurrency bounds a reaper pass's deletes in flight, within
	// AstroConcurrency; 0 means [DefaultReapConcurrency] (or
	// AstroConcurrency if that is smaller).
	ReapConcurrency int
	// ReapTicks, if set, starts [Server.RunReaper]'s passes on its values
	// instead of every interval (the interval still sets the lease's
	// lifetime): a test drives the reaper tick by tick with it.
	ReapTicks <-chan time.Time
	// RevokeRateLimit is each repository's budget of revokes, apart from
	// its exchanges' (which the policy's rules set): every revoke by an
	// identity the policy trusts takes one, before any Astro call. The
	// zero value means [DefaultRevokeRateLimit]; there is no "no limit".
	RevokeRateLimit policy.RateLimit
}

// Server is the broker. Create it with [New]; it is safe for concurrent use.
type Server struct {
	astro    *boundedAstro // cfg.Astro within the bound on Astro calls in flight
	org      string
	verifier Verifier
	store    store.Store
	policies Policies
	rotator  Rotator
	log      *slog.Logger
	now      func() time.Time
	metrics  *Metrics
	registry *Registry

	reapConc    int
	reapTicks   <-chan time.Time
	revokeLimit policy.RateLimit

	astroTimeout   time.Duration
	requestTimeout time.Duration
	track          *tracker // operations in flight and their clean-ups
	recovery       *recoverer
	started        time.Time

	readyTTL time.Duration
	readyMu  sync.Mutex
	readyAt  time.Time
	readyErr error
}

// New checks cfg and returns a broker.
func New(cfg Config) (*Server, error) {
	var errs []error
	if cfg.Astro == nil {
		errs = append(errs, errors.New("broker: Astro client is required"))
	}
	if cfg.OrganizationID == "" {
		errs = append(errs, errors.New("broker: OrganizationID is required"))
	}
	if cfg.Verifier == nil {
		errs = append(errs, errors.New("broker: Verifier is required"))
	}
	if cfg.Store == nil {
		errs = append(errs, errors.New("broker: Store is required"))
	}
	if cfg.Policies == nil {
		errs = append(errs, errors.New("broker: Policies is required"))
	}
	if cfg.AstroConcurrency < 0 || cfg.ReapConcurrency < 0 || cfg.AstroTimeout < 0 || cfg.RequestTimeout < 0 || cfg.RecoveryWindow < 0 {
		errs = append(errs, errors.New("broker: AstroConcurrency, ReapConcurrency, AstroTimeout, RequestTimeout and RecoveryWindow must not be negative"))
	}
	if l := cfg.RevokeRateLimit; !l.IsZero() && l.Validate() != nil {
		errs = append(errs, errors.New("broker: RevokeRateLimit needs a positive Rate, Period and Burst"))
	}
	if cfg.AstroBound != nil && (cfg.AstroConcurrency != 0 || cfg.AstroTimeout != 0) {
		errs = append(errs, errors.New("broker: set AstroBound or AstroConcurrency and AstroTimeout, not both"))
	}
	if cfg.AstroBound != nil && cfg.AstroBound.metrics != cfg.Metrics {
		errs = append(errs, errors.New("broker: AstroBound must count into Config.Metrics"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	s := &Server{
		org:      cfg.OrganizationID,
		verifier: cfg.Verifier,
		store:    cfg.Store,
		policies: cfg.Policies,
		rotator:  cfg.Rotator,
		log:      cfg.Logger,
		now:      cfg.Now,
		registry: cfg.Registry,
		readyTTL: cfg.ReadyCacheTTL,

		reapTicks: cfg.ReapTicks,
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.registry == nil {
		s.registry = NewRegistry()
	}
	if s.readyTTL == 0 {
		s.readyTTL = 10 * time.Second
	}
	s.metrics = cfg.Metrics
	if s.metrics == nil {
		m, err := NewMetrics(s.registry)
		if err != nil {
			return nil, err
		}
		s.metrics = m
	}
	if dl, ok := cfg.Store.(dataLoss); ok {
		if err := registerDataLoss(s.registry, dl); err != nil {
			return nil, err
		}
	}
	if ph, ok := cfg.Policies.(policyHealth); ok {
		if err := registerPolicyHealth(s.registry, ph); err != nil {
			return nil, err
		}
	}
	bound := cfg.AstroBound
	if bound == nil {
		var err error
		if bound, err = NewAstroBound(cfg.AstroConcurrency, cfg.AstroTimeout, s.metrics); err != nil {
			return nil, err
		}
	}
	s.astro = newBoundedAstro(cfg.Astro, bound)
	s.reapConc = min(cmp.Or(cfg.ReapConcurrency, DefaultReapConcurrency), cap(bound.slots))
	s.astroTimeout = bound.timeout
	s.requestTimeout = cmp.Or(cfg.RequestTimeout, DefaultRequestTimeout)
	s.started = cfg.Started
	s.revokeLimit = cfg.RevokeRateLimit
	if s.revokeLimit.IsZero() {
		s.revokeLimit = DefaultRevokeRateLimit
	}
	s.track = newTracker()
	s.recovery = newRecoverer(s, cfg.Astro, cmp.Or(cfg.RecoveryWindow, DefaultRecoveryWindow))
	return s, nil
}

// maxBody bounds every request body: the largest legitimate one is a few
// hundred bytes.
const maxBody = 64 << 10

// Handler returns the broker's routes.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("POST /v1/exchange", s.api("exchange", s.handleExchange))
	mux.Handle("POST /v1/revoke", s.api("revoke", s.handleRevoke))
	mux.Handle("POST /v1/rotate", s.api("rotate", s.handleRotate))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", s.handleReady)
	mux.Handle("GET /metrics", s.metrics.Handler(s.registry))
	// The API's paths with another method get 405 and an Allow header, not
	// the catch-all's 404 (a pattern without a method is less specific
	// than the ones above, so it only sees the other methods).
	for _, path := range []string{"/v1/exchange", "/v1/revoke", "/v1/rotate"} {
		mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Allow", http.MethodPost)
			s.writeError(w, r, "", errMethodNotAllowed)
		})
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		s.writeError(w, r, "", errNotFound)
	})
	return withRequestID(securityHeaders(s.cleanPathsOnly(mux)))
}

// cleanPathsOnly answers 404 to a path that is not clean ("//", "/./",
// "/../"), before the mux would answer it with a redirect to the clean
// path: ServeMux's redirect echoes the caller's whole query in Location,
// so that a 60 KB query came back as a 60 KB header. No client of the
// broker sends such a path; the action joins its paths cleanly.
func (s *Server) cleanPathsOnly(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p := r.URL.Path; p != cleanPath(p) {
			s.writeError(w, r, "", errNotFound)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// cleanPath is the path ServeMux would redirect p to: rooted, with no
// empty, "." or ".." element, and a trailing slash kept.
func cleanPath(p string) string {
	if p == "" || p[0] != '/' {
		p = "/" + p
	}
	np := path.Clean(p)
	if p[len(p)-1] == '/' && np != "/" {
		np += "/"
	}
	return np
}

// HTTPServer returns the [http.Server] that serves the broker's [Handler]
// with its timeouts, and its errors in the broker's log. `astro-sts serve`
// and the demo both serve it, so that the two cannot drift apart.
func (s *Server) HTTPServer() *http.Server {
	return &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       15 * time.Second,
		// A rotation waits out sinks' Retry-After and backoff before it
		// answers; every other handler answers in seconds.
		WriteTimeout:   5 * time.Minute,
		IdleTimeout:    120 * time.Second,
		MaxHeaderBytes: 64 << 10,
		ErrorLog:       slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
}

// apiHandler is a JSON endpoint: it returns its answer or an error that
// writeError maps to a status code.
type apiHandler func(w http.ResponseWriter, r *http.Request) error

func (s *Server) api(endpoint string, h apiHandler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Counted until it returns, so that a shutdown waits for what it
		// minted to be delivered or deleted (see [Server.Drain]).
		s.track.enter()
		defer s.track.leave()
		r.Body = http.MaxBytesReader(w, r.Body, maxBody)
		if err := h(w, r); err != nil {
			s.writeError(w, r, endpoint, err)
		}
	})
}

func securityHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		// Answers carry tokens: never cache them anywhere.
		h.Set("Cache-Control", "no-store")
		h.Set("X-Content-Type-Options", "nosniff")
		next.ServeHTTP(w, r)
	})
}
