// Package config is the environment of each astro-sts command that reads
// one: [Broker] for `astro-sts serve`, [Rotate] for `astro-sts rotate`. They
// share their sections ([Astro], and the sinks' [sink.Config]), so a
// variable means the same to both, and each command parses its whole
// environment once, with caarlos0/env, and validates all of it at once: an
// operator sees every mistake in one start-up instead of one per restart.
//
// A setting is one line: a field with its variable (`env`), its default
// (`envDefault`), and `file` for a secret read from the file a *_FILE
// variable names. Secrets are [secret.Value]s, so a configuration prints and
// logs whole without them.
package config

import (
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"reflect"
	"strings"
	"time"

	"github.com/caarlos0/env/v11"

	"github.com/astro-sts/astro-sts/internal/loopback"
	"github.com/astro-sts/astro-sts/internal/policy"
	"github.com/astro-sts/astro-sts/internal/secret"
	"github.com/astro-sts/astro-sts/internal/sink"
	"github.com/astro-sts/astro-sts/internal/store"
)

// DefaultIssuer is GitHub Actions' OIDC issuer.
const DefaultIssuer = "https://token.actions.githubusercontent.com"

// ActionCallTimeout is how long the action waits for each call to the
// broker (action.Deps.CallTimeout's default): the broker's request
// deadline must be shorter.
const ActionCallTimeout = 30 * time.Second

// Limits on settings that would otherwise defeat the broker's clean-ups.
const (
	// MinAstroTimeout is the shortest Astro timeout accepted. Under it,
	// Astro's ordinary latency (and the client's one retry) times calls
	// out that would have succeeded: creates then have an unknown outcome
	// and the search for them, whose looks are spread over a few Astro
	// timeouts, ends before a slow create lands.
	MinAstroTimeout = time.Second
	// ExitBudget is the longest the broker may take to exit after SIGTERM
	// ([Broker.ExitBound]): the shipped manifests' grace period
	// (terminationGracePeriodSeconds, 50 s) less their preStop sleep
	// (5 s), see deploy/broker-container.yaml. A broker still cleaning up
	// when it runs out is killed, and what it had not deleted yet is left
	// live until its deadline and the reaper.
	ExitBudget = 45 * time.Second
	// MaxReapInterval bounds the reap interval from above: Astro itself
	// expires the broker's tokens after a day (their shortest expiry
	// period), so a reaper that wakes up less often never reaps anything
	// Astro had not already expired.
	MaxReapInterval = 24 * time.Hour
)

// Broker is the configuration of `astro-sts serve`.
type Broker struct {
	Addr       string `env:"ASTRO_STS_ADDR" envDefault:":8080"`
	Audience   string `env:"ASTRO_STS_AUDIENCE"`
	Issuers    List   `env:"ASTRO_STS_ISSUERS" envDefault:"https://token.actions.githubusercontent.com"`
	PolicyFile string `env:"ASTRO_STS_POLICY_FILE"`

	ReapInterval   time.Duration `env:"ASTRO_STS_REAP_INTERVAL" envDefault:"30s"`
	PolicyInterval time.Duration `env:"ASTRO_STS_POLICY_RELOAD_INTERVAL" envDefault:"10s"`
	LogLevel       string        `env:"ASTRO_STS_LOG_LEVEL" envDefault:"info"`
	// ReplayCacheSize bounds the set of OIDC token ids remembered for replay
	// protection. When full of live entries the broker refuses new tokens
	// (fails closed) rather than forgetting one that could be replayed.
	ReplayCacheSize int `env:"ASTRO_STS_REPLAY_CACHE_SIZE" envDefault:"100000"`

	// The timeout chain (docs/architecture.md, "Timeouts"): one Astro call
	// < a request's deadline < the action's per-call timeout, and the
	// shutdown grace > a request's deadline, so that in-flight exchanges
	// finish and what they mint is delivered or deleted.
	AstroTimeout   time.Duration `env:"ASTRO_STS_ASTRO_TIMEOUT" envDefault:"10s"`
	RequestTimeout time.Duration `env:"ASTRO_STS_REQUEST_TIMEOUT" envDefault:"15s"`
	ShutdownGrace  time.Duration `env:"ASTRO_STS_SHUTDOWN_GRACE" envDefault:"20s"`
	// AstroConcurrency bounds the broker's Astro calls in flight;
	// ReapConcurrency a reaper pass's deletes, within it.
	AstroConcurrency int `env:"ASTRO_STS_ASTRO_CONCURRENCY" envDefault:"16"`
	ReapConcurrency  int `env:"ASTRO_STS_REAP_CONCURRENCY" envDefault:"8"`
	// RevokeRateLimit is each repository's budget of revokes, COUNT/PERIOD
	// as the policy writes rates (burst COUNT), apart from its exchanges'
	// budgets, which the policy's rules set. See [Broker.RevokeLimit].
	RevokeRateLimit string `env:"ASTRO_STS_REVOKE_RATE_LIMIT" envDefault:"120/h"`

	Astro Astro
	// Sinks are needed only when the policy has rotations; the policy reloader
	// checks that at every load.
	Sinks sink.Config
	// Store is where the replay check, the rate limits and the reaper's
	// lease live: this process's memory, or Redis shared by the replicas.
	Store Store
}

// Store chooses the broker's store: memory unless ASTRO_STS_REDIS_URL is
// set (see docs/operations.md).
type Store struct {
	// RedisURL is redis:// or rediss:// (TLS), with an ACL user and
	// password if Redis wants them: a secret, removed from the process
	// environment once read.
	RedisURL secret.Value `env:"ASTRO_STS_REDIS_URL,unset"`
	// RedisPasswordFile names a file holding the password instead;
	// RedisPassword is its content.
	RedisPasswordFile string       `env:"ASTRO_STS_REDIS_PASSWORD_FILE"`
	RedisPassword     secret.Value `env:"ASTRO_STS_REDIS_PASSWORD_FILE,file"`
	// RedisCAFile names a PEM file of the CAs that vouch for a rediss://
	// server (default: the system's); RedisCA is its content.
	RedisCAFile string `env:"ASTRO_STS_REDIS_CA_FILE"`
	RedisCA     string `env:"ASTRO_STS_REDIS_CA_FILE,file"`
}

// Shared reports whether the replicas share their state through Redis.
func (s Store) Shared() bool { return s.RedisURL != "" }

// Validate reports every problem at once. No error shows the URL or the
// password.
func (s Store) Validate() error {
	var errs []error
	add := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if !s.Shared() {
		for _, v := range []struct{ name, value string }{
			{"ASTRO_STS_REDIS_PASSWORD_FILE", s.RedisPasswordFile},
			{"ASTRO_STS_REDIS_CA_FILE", s.RedisCAFile},
		} {
			if v.value != "" {
				add("%s is set but ASTRO_STS_REDIS_URL is not", v.name)
			}
		}
		return errors.Join(errs...)
	}
	if s.RedisPasswordFile != "" && s.RedisPassword == "" {
		add("ASTRO_STS_REDIS_PASSWORD_FILE %q is empty", s.RedisPasswordFile)
	}
	if _, err := store.RedisOptions(s.RedisURL.Reveal(), s.RedisPassword.Reveal()); err != nil {
		add("ASTRO_STS_REDIS_URL: %v", err)
	}
	if s.RedisCAFile != "" {
		if _, err := s.RootCAs(); err != nil {
			add("ASTRO_STS_REDIS_CA_FILE %q: %v", s.RedisCAFile, err)
		}
	}
	return errors.Join(errs...)
}

// RootCAs is the pool of ASTRO_STS_REDIS_CA_FILE, or nil (the system's
// roots) when it is not set.
func (s Store) RootCAs() (*x509.CertPool, error) {
	if s.RedisCAFile == "" {
		return nil, nil
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(s.RedisCA)) {
		return nil, errors.New("holds no PEM certificate")
	}
	return pool, nil
}

// Rotate is the configuration of `astro-sts rotate`: the broker's
// variables of the same names, without those only a server needs.
type Rotate struct {
	LogLevel string `env:"ASTRO_STS_LOG_LEVEL" envDefault:"info"`
	Astro    Astro
	// Sinks: only the run rotation's sinks need credentials, which the
	// command checks once it has read the policy.
	Sinks sink.Config
}

// Astro is how a command reaches the Astro API as the Organization.
type Astro struct {
	APIURL         string `env:"ASTRO_API_URL" envDefault:"https://api.astronomer.io/v1"`
	OrganizationID string `env:"ASTRO_ORGANIZATION_ID"`
	// Token is an Organization token that may manage API tokens. It is
	// removed from the process environment once read, so no child process
	// inherits it; [Astro.OrganizationToken] prefers it to TokenFromFile.
	Token secret.Value `env:"ASTRO_ORGANIZATION_TOKEN,unset"`
	// TokenFile names a file holding the token, mounted from a secret
	// store; TokenFromFile is its content, read once at start (restart
	// after rotating it).
	TokenFile     string       `env:"ASTRO_ORGANIZATION_TOKEN_FILE"`
	TokenFromFile secret.Value `env:"ASTRO_ORGANIZATION_TOKEN_FILE,file"`
}

// OrganizationToken is the token to send to Astro.
func (a Astro) OrganizationToken() secret.Value {
	if a.Token != "" {
		return a.Token
	}
	return a.TokenFromFile
}

// LoadBroker parses the broker's configuration from environ (not from the
// process environment, so tests stay hermetic) and validates it.
func LoadBroker(environ map[string]string) (Broker, error) {
	return load[Broker](environ)
}

// LoadRotate parses `astro-sts rotate`'s configuration from environ and
// validates it.
func LoadRotate(environ map[string]string) (Rotate, error) {
	return load[Rotate](environ)
}

// load is the one parse of a command's environment. A variable that does
// not parse (a duration, a number, a file that cannot be read) is reported
// on its own: the rest is not validated against the zero value it left.
func load[C interface{ Validate() error }](environ map[string]string) (C, error) {
	var c C
	if err := env.ParseWithOptions(&c, env.Options{Environment: environ}); err != nil {
		return c, parseErrors(err, reflect.TypeFor[C]())
	}
	return c, c.Validate()
}

// ExitBound is the longest `astro-sts serve` takes to exit after SIGTERM:
// the shutdown grace for the requests in flight, then up to twice the
// Astro timeout for the clean-ups of what they minted and could not
// deliver. It must fit in [ExitBudget]. The sum saturates: durations near
// the largest one would otherwise wrap to a negative bound, which fits.
func (c Broker) ExitBound() time.Duration {
	return addSaturating(addSaturating(c.ShutdownGrace, c.AstroTimeout), c.AstroTimeout)
}

// addSaturating is a+b, held at the largest (smallest) duration instead of
// wrapping past it.
func addSaturating(a, b time.Duration) time.Duration {
	switch {
	case b > 0 && a > math.MaxInt64-b:
		return math.MaxInt64
	case b < 0 && a < math.MinInt64-b:
		return math.MinInt64
	}
	return a + b
}

// RevokeLimit is ASTRO_STS_REVOKE_RATE_LIMIT as the broker takes it; the
// zero limit (the broker's default) if it does not parse, which Validate
// reports.
func (c Broker) RevokeLimit() policy.RateLimit {
	l, _ := policy.ParseRate(c.RevokeRateLimit)
	return l
}

// Validate reports every problem at once.
func (c Broker) Validate() error {
	var errs []error
	add := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }

	if c.Addr == "" {
		add("ASTRO_STS_ADDR must not be empty")
	} else if _, _, err := net.SplitHostPort(c.Addr); err != nil {
		add("ASTRO_STS_ADDR %q is not host:port", c.Addr)
	}
	if c.Audience == "" {
		add("ASTRO_STS_AUDIENCE is required (the audience the action asks GitHub for, usually the broker's URL)")
	}
	if len(c.Issuers) == 0 {
		add("ASTRO_STS_ISSUERS must name at least one issuer")
	}
	for i, iss := range c.Issuers {
		if _, err := loopback.ParseURL(iss); err != nil {
			add("ASTRO_STS_ISSUERS entry %d: %v", i+1, err)
		}
	}
	if c.PolicyFile == "" {
		add("ASTRO_STS_POLICY_FILE is required")
	}
	if c.ReapInterval < time.Second || c.ReapInterval >= MaxReapInterval {
		add("ASTRO_STS_REAP_INTERVAL must be at least 1s and under %s (Astro's own expiry of the broker's tokens), got %s", MaxReapInterval, c.ReapInterval)
	}
	if c.PolicyInterval < 0 {
		add("ASTRO_STS_POLICY_RELOAD_INTERVAL must not be negative")
	}
	if _, err := ParseLevel(c.LogLevel); err != nil {
		add("ASTRO_STS_LOG_LEVEL: %v", err)
	}
	if c.ReplayCacheSize < 1 {
		add("ASTRO_STS_REPLAY_CACHE_SIZE must be positive")
	}
	if c.AstroTimeout < MinAstroTimeout {
		add("ASTRO_STS_ASTRO_TIMEOUT must be at least %s, got %s: shorter, ordinary Astro latency times calls out and defeats the search for a create whose answer was lost", MinAstroTimeout, c.AstroTimeout)
	}
	if c.RequestTimeout <= c.AstroTimeout || c.RequestTimeout >= ActionCallTimeout {
		add("ASTRO_STS_REQUEST_TIMEOUT (%s) must be longer than ASTRO_STS_ASTRO_TIMEOUT (%s) and shorter than the action's %s per call, so that a slow Astro gets the action a \"try again\" before it gives up",
			c.RequestTimeout, c.AstroTimeout, ActionCallTimeout)
	}
	if c.ShutdownGrace <= c.RequestTimeout {
		add("ASTRO_STS_SHUTDOWN_GRACE (%s) must be longer than ASTRO_STS_REQUEST_TIMEOUT (%s), so that exchanges in flight finish before the broker stops", c.ShutdownGrace, c.RequestTimeout)
	}
	if b := c.ExitBound(); b > ExitBudget {
		add("ASTRO_STS_SHUTDOWN_GRACE (%s) plus twice ASTRO_STS_ASTRO_TIMEOUT (%s) is %s, the longest the broker may take to exit after SIGTERM; it must be at most %s (the manifests' terminationGracePeriodSeconds less their preStop sleep), or the broker is killed before it has deleted what it could not deliver",
			c.ShutdownGrace, c.AstroTimeout, b, ExitBudget)
	}
	if c.AstroConcurrency < 1 {
		add("ASTRO_STS_ASTRO_CONCURRENCY must be positive")
	}
	if _, err := policy.ParseRate(c.RevokeRateLimit); err != nil {
		add("ASTRO_STS_REVOKE_RATE_LIMIT %q %v", c.RevokeRateLimit, err)
	}
	if c.ReapConcurrency < 1 || c.ReapConcurrency > c.AstroConcurrency {
		add("ASTRO_STS_REAP_CONCURRENCY must be 1..ASTRO_STS_ASTRO_CONCURRENCY (%d), got %d", c.AstroConcurrency, c.ReapConcurrency)
	}
	return errors.Join(append(errs, c.Astro.Validate(), c.Sinks.Validate(), c.Store.Validate())...)
}

// Validate reports every problem at once.
func (c Rotate) Validate() error {
	var errs []error
	if _, err := ParseLevel(c.LogLevel); err != nil {
		errs = append(errs, fmt.Errorf("ASTRO_STS_LOG_LEVEL: %w", err))
	}
	return errors.Join(append(errs, c.Astro.Validate(), c.Sinks.Validate())...)
}

// Validate reports every problem at once. No error shows the token.
func (a Astro) Validate() error {
	var errs []error
	add := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if _, err := loopback.ParseURL(a.APIURL); err != nil {
		add("ASTRO_API_URL: %v", err)
	}
	if a.OrganizationID == "" {
		add("ASTRO_ORGANIZATION_ID is required")
	}
	switch {
	case a.Token != "":
	case a.TokenFile == "":
		add("one of ASTRO_ORGANIZATION_TOKEN or ASTRO_ORGANIZATION_TOKEN_FILE is required")
	case a.TokenFromFile == "":
		add("ASTRO_ORGANIZATION_TOKEN_FILE %q is empty", a.TokenFile)
	}
	return errors.Join(errs...)
}

// List is a comma-separated variable. Blanks around the commas and empty
// entries are dropped; an entry is otherwise kept exactly as written (an
// issuer is compared byte for byte with a token's iss claim).
type List []string

// UnmarshalText splits text at its commas.
func (l *List) UnmarshalText(text []byte) error {
	*l = nil
	for _, s := range strings.Split(string(text), ",") {
		if s = strings.TrimSpace(s); s != "" {
			*l = append(*l, s)
		}
	}
	return nil
}

// ParseLevel turns debug, info, warn or error into a slog level.
func ParseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("unknown log level %q (want debug, info, warn or error)", s)
	}
	return l, nil
}

// parseErrors names the variable behind each of env's errors (its parse
// errors name the Go field) and leaves the value out: it may be a secret
// put in the wrong variable.
func parseErrors(err error, t reflect.Type) error {
	var agg env.AggregateError
	if !errors.As(err, &agg) {
		return err
	}
	vars := map[field][]string{}
	variables(t, vars)
	var errs []error
	for _, e := range agg.Errors {
		var (
			pe env.ParseError
			fe env.LoadFileContentError
		)
		switch {
		case errors.As(e, &pe) && len(vars[field{pe.Name, pe.Type}]) > 0:
			want := pe.Type.String()
			if pe.Type == reflect.TypeFor[time.Duration]() {
				want = "a duration such as 30s"
			}
			errs = append(errs, fmt.Errorf("%s: want %s", strings.Join(vars[field{pe.Name, pe.Type}], " or "), want))
		case errors.As(e, &fe):
			errs = append(errs, fmt.Errorf("%s: %w", fe.Key, fe.Err))
		default:
			errs = append(errs, e)
		}
	}
	return errors.Join(errs...)
}

// field is what env's ParseError says of the field that failed.
type field struct {
	name string
	typ  reflect.Type
}

// variables collects the variable of each field of t, and of its sections
// (struct fields without a variable of their own, which env descends into).
func variables(t reflect.Type, into map[field][]string) {
	for f := range t.Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("env"), ",")
		switch {
		case name == "" && f.Type.Kind() == reflect.Struct:
			variables(f.Type, into)
		case name != "" && name != "-":
			k := field{f.Name, f.Type}
			into[k] = append(into[k], name)
		}
	}
}
