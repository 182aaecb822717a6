package rotation

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

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
		out = append(out, &vaultSink{VaultSink: sink.NewVaultSink(client, vaultTarget(*r.Vault)), field: r.Vault.Field})
	}
	for _, pt := range r.GitHub {
		t := githubTarget(pt)
		client, err := f.githubClient(ctx, t)
		if err != nil {
			return nil, fmt.Errorf("github client for %s: %w", t.Owner(), err)
		}
		out = append(out, &githubSink{GitHubSink: sink.NewGitHubSink(client, t), client: client, target: t})
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
		errs = append(errs, vaultTarget(*r.Vault).Validate())
	}
	if len(r.GitHub) > 0 {
		kinds = append(kinds, sink.KindGitHub)
		for _, t := range r.GitHub {
			errs = append(errs, githubTarget(t).Validate())
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

func vaultTarget(t policy.VaultTarget) sink.VaultTarget {
	return sink.VaultTarget{Mount: t.Mount, Path: t.Path, Field: t.Field}
}

func githubTarget(t policy.GitHubTarget) sink.GitHubTarget {
	return sink.GitHubTarget{
		Repository: t.Repository, Environment: t.Environment, Organization: t.Organization,
		Secret: t.Secret, Visibility: t.Visibility, SelectedRepositoryIDs: t.SelectedRepositoryIDs,
	}
}

// vaultSink is a [sink.VaultSink] that can be checked before the run
// ([Preflighter]) and put back after it ([Restorer]). It lives for one run:
// it remembers, in memory only, the field's value before this run's write.
type vaultSink struct {
	*sink.VaultSink
	field string

	wrote    bool
	version  string // the version this run wrote
	previous *sink.VaultState
}

// Preflight reads the secret as Write will (metadata, then data): a Vault
// that is down, a login that is refused or a policy that denies reading
// fails here, before the token changes.
func (s *vaultSink) Preflight(ctx context.Context) error {
	_, err := s.Current(ctx)
	return err
}

// Write remembers the secret's current state, then writes.
func (s *vaultSink) Write(ctx context.Context, value string, m sink.Metadata) (string, error) {
	if s.previous == nil {
		st, err := s.Current(ctx)
		if err != nil {
			return "", err
		}
		s.previous = &st
	}
	version, err := s.VaultSink.Write(ctx, value, m)
	if version != "" {
		// The value landed, even if the metadata write after it failed.
		s.wrote, s.version = true, version
	}
	return version, err
}

// Restore writes the field's previous value back, with the previous
// rotation's custom_metadata, provided the secret is still at the version
// this run wrote (another writer's later change is left alone).
func (s *vaultSink) Restore(ctx context.Context) (string, error) {
	if !s.wrote || s.previous == nil {
		return "", ErrNothingToRestore
	}
	old, ok := s.previous.Data[s.field].(string)
	if !ok || old == "" {
		return "", fmt.Errorf("%w: the field was empty before", ErrNothingToRestore)
	}
	now, err := s.Current(ctx)
	if err != nil {
		return "", err
	}
	if strconv.Itoa(now.Version) != s.version {
		return "", fmt.Errorf("%w: the secret moved on to version %d since this run wrote version %s", ErrNothingToRestore, now.Version, s.version)
	}
	meta := sink.Metadata{
		TokenID:  s.previous.CustomMetadata[sink.MetaTokenID],
		Strategy: s.previous.CustomMetadata[sink.MetaStrategy],
	}
	if at, err := time.Parse(time.RFC3339, s.previous.CustomMetadata[sink.MetaRotatedAt]); err == nil {
		meta.RotatedAt = at
	}
	version, err := s.VaultSink.Write(ctx, old, meta)
	if version != "" {
		// The old value is back even if its metadata is not: a retry then
		// finds the secret at this version and only writes the metadata.
		s.version = version
	}
	return version, err
}

// githubSink is a [sink.GitHubSink] that can be checked before the run by
// reading the target's public key, which needs the same access as writing.
type githubSink struct {
	*sink.GitHubSink
	client *github.Client
	target sink.GitHubTarget
}

// Preflight fetches the public key the write will seal the value with.
func (s *githubSink) Preflight(ctx context.Context) error {
	t := s.target
	actions := s.client.Actions
	var err error
	switch {
	case t.Organization != "":
		_, _, err = actions.GetOrgPublicKey(ctx, t.Organization)
	case t.Environment != "":
		owner, name, _ := strings.Cut(t.Repository, "/")
		var repo *github.Repository
		if repo, _, err = s.client.Repositories.Get(ctx, owner, name); err == nil {
			_, _, err = actions.GetEnvPublicKey(ctx, int(repo.GetID()), url.PathEscape(t.Environment))
		}
	default:
		owner, name, _ := strings.Cut(t.Repository, "/")
		_, _, err = actions.GetRepoPublicKey(ctx, owner, name)
	}
	if err == nil {
		return nil
	}
	var se *sink.Error
	if errors.As(err, &se) {
		return se // from the App installation transport, already classified
	}
	kind, retryAfter := githubKind(err)
	return &sink.Error{Sink: sink.KindGitHub, Target: s.Target(), Op: "preflight", Kind: kind, RetryAfter: retryAfter, Err: err}
}

// githubKind classifies a go-github error the way the sink package does for
// its writes (that classifier is not exported), so the preflight is retried
// and reported like a write.
func githubKind(err error) (error, time.Duration) {
	var abuse *github.AbuseRateLimitError
	if errors.As(err, &abuse) {
		return sink.ErrUnavailable, abuse.GetRetryAfter()
	}
	var rl *github.RateLimitError
	if errors.As(err, &rl) {
		return sink.ErrUnavailable, 0
	}
	var er *github.ErrorResponse
	if errors.As(err, &er) && er.Response != nil {
		switch c := er.Response.StatusCode; {
		case c == http.StatusUnauthorized, c == http.StatusForbidden:
			return sink.ErrDenied, 0
		case c == http.StatusNotFound:
			return sink.ErrNotFound, 0
		case c == http.StatusTooManyRequests, c >= 500:
			return sink.ErrUnavailable, 0
		}
		return nil, 0
	}
	var ue *url.Error
	var ne net.Error
	if errors.As(err, &ue) || errors.As(err, &ne) {
		return sink.ErrUnavailable, 0
	}
	return nil, 0
}
