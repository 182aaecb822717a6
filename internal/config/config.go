// Package config loads the broker's configuration from the environment with
// caarlos0/env, and validates all of it at once so that an operator sees
// every mistake in one start-up instead of one per restart.
package config

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"github.com/caarlos0/env/v11"

	"github.com/astro-sts/astro-sts/internal/loopback"
)

// DefaultIssuer is GitHub Actions' OIDC issuer.
const DefaultIssuer = "https://token.actions.githubusercontent.com"

// Broker is the configuration of `astro-sts serve`.
type Broker struct {
	Addr       string   `env:"ASTRO_STS_ADDR" envDefault:":8080"`
	Audience   string   `env:"ASTRO_STS_AUDIENCE"`
	Issuers    []string `env:"ASTRO_STS_ISSUERS" envDefault:"https://token.actions.githubusercontent.com" envSeparator:","`
	PolicyFile string   `env:"ASTRO_STS_POLICY_FILE"`

	AstroAPIURL           string `env:"ASTRO_API_URL" envDefault:"https://api.astronomer.io/v1"`
	OrganizationID        string `env:"ASTRO_ORGANIZATION_ID"`
	OrganizationToken     string `env:"ASTRO_ORGANIZATION_TOKEN,unset"`
	OrganizationTokenFile string `env:"ASTRO_ORGANIZATION_TOKEN_FILE"`

	ReapInterval   time.Duration `env:"ASTRO_STS_REAP_INTERVAL" envDefault:"30s"`
	PolicyInterval time.Duration `env:"ASTRO_STS_POLICY_RELOAD_INTERVAL" envDefault:"10s"`
	LogLevel       string        `env:"ASTRO_STS_LOG_LEVEL" envDefault:"info"`
	// ReplayCacheSize bounds the set of OIDC token ids remembered for replay
	// protection. When full of live entries the broker refuses new tokens
	// (fails closed) rather than forgetting one that could be replayed.
	ReplayCacheSize int `env:"ASTRO_STS_REPLAY_CACHE_SIZE" envDefault:"100000"`
}

// LoadBroker parses the broker's configuration from environ (not from the
// process environment, so tests stay hermetic), reads the organization token
// file if one is named, and validates the result.
func LoadBroker(environ map[string]string) (Broker, error) {
	var c Broker
	if err := env.ParseWithOptions(&c, env.Options{Environment: environ}); err != nil {
		return c, fmt.Errorf("config: %w", err)
	}
	c.Issuers = trimAll(c.Issuers)
	if c.OrganizationToken == "" && c.OrganizationTokenFile != "" {
		b, err := os.ReadFile(c.OrganizationTokenFile)
		if err != nil {
			// The path is configuration, not a secret; the content never
			// appears in an error.
			return c, fmt.Errorf("config: ASTRO_ORGANIZATION_TOKEN_FILE: %w", err)
		}
		c.OrganizationToken = strings.TrimSpace(string(b))
	}
	return c, c.Validate()
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
	if _, err := loopback.ParseURL(c.AstroAPIURL); err != nil {
		add("ASTRO_API_URL: %v", err)
	}
	if c.OrganizationID == "" {
		add("ASTRO_ORGANIZATION_ID is required")
	}
	switch {
	case c.OrganizationToken == "" && c.OrganizationTokenFile == "":
		add("one of ASTRO_ORGANIZATION_TOKEN or ASTRO_ORGANIZATION_TOKEN_FILE is required")
	case c.OrganizationToken == "":
		add("ASTRO_ORGANIZATION_TOKEN_FILE %q is empty", c.OrganizationTokenFile)
	}
	if c.ReapInterval < time.Second {
		add("ASTRO_STS_REAP_INTERVAL must be at least 1s, got %s", c.ReapInterval)
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
	return errors.Join(errs...)
}

// ParseLevel turns debug, info, warn or error into a slog level.
func ParseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("unknown log level %q (want debug, info, warn or error)", s)
	}
	return l, nil
}

// trimAll drops blanks around and between the comma-separated entries. An
// issuer is otherwise kept exactly as written: it is compared byte for byte
// with the token's iss claim.
func trimAll(in []string) []string {
	out := in[:0]
	for _, s := range in {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// String hides the organization token, so the configuration can be
// printed or logged whole.
func (c Broker) String() string {
	tok := `""`
	if c.OrganizationToken != "" {
		tok = "[redacted]"
	}
	return fmt.Sprintf("{Addr:%s Audience:%s Issuers:%v PolicyFile:%s AstroAPIURL:%s OrganizationID:%s OrganizationToken:%s OrganizationTokenFile:%s ReapInterval:%s LogLevel:%s}",
		c.Addr, c.Audience, c.Issuers, c.PolicyFile, c.AstroAPIURL, c.OrganizationID, tok, c.OrganizationTokenFile, c.ReapInterval, c.LogLevel)
}

// GoString is [Broker.String], for %#v.
func (c Broker) GoString() string { return "config.Broker" + c.String() }

// LogValue keeps the organization token out of structured logs.
func (c Broker) LogValue() slog.Value { return slog.StringValue(c.String()) }
