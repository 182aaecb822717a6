package rotation

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"

	"github.com/google/go-github/v62/github"

	"github.com/astro-sts/astro-sts/internal/policy"
	"github.com/astro-sts/astro-sts/internal/sink"
)

// SinkFactory builds the real sinks of a rotation from the sink
// configuration (the sinks' section of internal/config); create it with
// [NewSinks].
//
// Vault is logged in to afresh for every run ([sink.NewVaultClient] does
// not renew its token, and a broker runs for longer than a login lives).
// GitHub clients are kept, one per App installation owner (or one in all
// with a token or a pinned installation id), because a GitHub App client
// holds an installation token that is good for an hour and renews itself.
type SinkFactory struct {
	cfg sink.Config
	hc  *http.Client
	log *slog.Logger

	mu     sync.Mutex
	github map[string]*github.Client // by installation owner; "" when one client serves all
}

var _ Sinks = (*SinkFactory)(nil)

// The factory's sinks are checked before a run, and Vault's is put back
// after a failed replace: a change of their method sets must not silently
// turn either off.
var (
	_ Preflighter = (*sink.VaultSink)(nil)
	_ Restorer    = (*sink.VaultSink)(nil)
	_ Preflighter = (*sink.GitHubSink)(nil)
)

// NewSinks returns the sink factory for cfg. hc is the HTTP client for
// Vault and GitHub (nil: the sink package's default, 30s timeout); logger
// nil discards.
func NewSinks(cfg sink.Config, hc *http.Client, logger *slog.Logger) *SinkFactory {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &SinkFactory{cfg: cfg, hc: hc, log: logger, github: map[string]*github.Client{}}
}

// For returns r's sinks, Vault first: it is the one a failed replace can
// put back ([Restorer]), and GitHub secrets cannot be read back. The
// rotation is checked again ([CheckRotation]) because a policy reloaded
// since start-up may name sinks the configuration has no credentials for.
func (f *SinkFactory) For(ctx context.Context, r *policy.Rotation) ([]sink.Sink, error) {
	if err := CheckRotation(r, f.cfg); err != nil {
		return nil, err
	}
	var out []sink.Sink
	if r.Vault != nil {
		client, err := sink.NewVaultClient(ctx, f.cfg.Vault, f.hc)
		if err != nil {
			return nil, fmt.Errorf("vault login: %w", err)
		}
		out = append(out, sink.NewVaultSink(client, *r.Vault))
	}
	for _, t := range r.GitHub {
		client, err := f.githubClient(ctx, t)
		if err != nil {
			return nil, fmt.Errorf("github client for %s: %w", t.Owner(), err)
		}
		out = append(out, sink.NewGitHubSink(client, t))
	}
	return out, nil
}

// githubClient returns the cached client for t's owner, creating it (and,
// for a GitHub App, finding its installation) on first use.
func (f *SinkFactory) githubClient(ctx context.Context, t sink.GitHubTarget) (*github.Client, error) {
	cfg := f.cfg.GitHub
	key := ""
	if cfg.Token == "" && cfg.InstallationID == 0 {
		key = t.Owner()
		cfg.InstallationOwner = key
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if c, ok := f.github[key]; ok {
		return c, nil
	}
	c, err := sink.NewGitHubClient(ctx, cfg, f.hc)
	if err != nil {
		return nil, err
	}
	f.github[key] = c
	f.log.Debug("github client ready", "owner", key)
	return c, nil
}

// Check reports, for every rotation of p, whether the sink kinds it needs
// have credentials in cfg and whether its targets are valid: all problems
// at once, each naming its rotation. The broker calls it at start-up, so
// that a rotation that could never write is a start-up error rather than a
// failed run weeks later.
func Check(p *policy.Policy, cfg sink.Config) error {
	var errs []error
	for _, r := range p.Rotations() {
		if err := CheckRotation(r, cfg); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// CheckRotation is [Check] for one rotation; `astro-sts rotate` uses it, so
// that a CronJob needs the credentials of its own rotation only.
func CheckRotation(r *policy.Rotation, cfg sink.Config) error {
	var (
		errs  []error
		kinds []string
	)
	if r.Vault != nil {
		kinds = append(kinds, sink.KindVault)
		errs = append(errs, r.Vault.Validate())
	}
	if len(r.GitHub) > 0 {
		kinds = append(kinds, sink.KindGitHub)
		for _, t := range r.GitHub {
			errs = append(errs, t.Validate())
		}
	}
	if len(kinds) == 0 {
		errs = append(errs, fmt.Errorf("%w: no sink: the value would go nowhere", sink.ErrInvalidConfig))
	}
	errs = append(errs, cfg.Require(kinds...))
	var out []error
	for _, err := range flatten(errors.Join(errs...)) {
		out = append(out, fmt.Errorf("rotation %q: %w", r.Name, err))
	}
	return errors.Join(out...)
}

// flatten lists the errors joined in err, recursively, so that each gets
// its own prefix rather than only the first line of a joined message.
func flatten(err error) []error {
	if err == nil {
		return nil
	}
	j, ok := err.(interface{ Unwrap() []error })
	if !ok {
		return []error{err}
	}
	var out []error
	for _, e := range j.Unwrap() {
		out = append(out, flatten(e)...)
	}
	return out
}
