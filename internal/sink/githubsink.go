package sink

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/google/go-github/v62/github"
	"golang.org/x/crypto/nacl/box"
)

// Organization secret visibilities.
const (
	VisibilityAll      = "all"
	VisibilityPrivate  = "private"
	VisibilitySelected = "selected"
)

// GitHubTarget is one GitHub Actions secret: of a repository (Repository),
// of one of its environments (Repository and Environment), or of an
// organization (Organization, with Visibility and, for "selected",
// SelectedRepositoryIDs).
type GitHubTarget struct {
	// Repository is "owner/name".
	Repository   string
	Environment  string
	Organization string
	// Secret is the secret's name.
	Secret string
	// Visibility is required for an organization secret: all, private or
	// selected. There is no default: who can read the token is not guessed.
	Visibility            string
	SelectedRepositoryIDs []int64
}

// Owner is the account the secret belongs to: the organization, or the
// repository as "owner/name" (the most precise handle for finding a GitHub
// App installation, see [GitHubConfig.InstallationOwner]).
func (t GitHubTarget) Owner() string {
	if t.Organization != "" {
		return t.Organization
	}
	return t.Repository
}

// String names the secret for logs: "repo acme/dags secret X",
// "env acme/dags:production secret X", "org acme secret X (private)".
func (t GitHubTarget) String() string {
	switch {
	case t.Organization != "":
		vis := t.Visibility
		if t.Visibility == VisibilitySelected {
			vis = fmt.Sprintf("selected: %d repositories", len(t.SelectedRepositoryIDs))
		}
		return fmt.Sprintf("org %s secret %s (%s)", t.Organization, t.Secret, vis)
	case t.Environment != "":
		return fmt.Sprintf("env %s:%s secret %s", t.Repository, t.Environment, t.Secret)
	default:
		return fmt.Sprintf("repo %s secret %s", t.Repository, t.Secret)
	}
}

// Validate reports every problem with the target at once.
func (t GitHubTarget) Validate() error {
	var errs []error
	bad := func(format string, a ...any) {
		errs = append(errs, fmt.Errorf("%w: github target: "+format, append([]any{ErrInvalidConfig}, a...)...))
	}
	switch {
	case t.Repository != "" && t.Organization != "":
		bad("set repository or organization, not both")
	case t.Repository == "" && t.Organization == "":
		bad("repository or organization is required")
	case t.Repository != "":
		if !ValidRepository(t.Repository) {
			bad("repository %q: want owner/name", t.Repository)
		}
		if t.Visibility != "" || len(t.SelectedRepositoryIDs) > 0 {
			bad("visibility and selected repositories apply to organization secrets only")
		}
	case t.Organization != "":
		if !ValidOrganization(t.Organization) {
			bad("organization %q is not a valid account name", t.Organization)
		}
		if t.Environment != "" {
			bad("environment applies to repository secrets only")
		}
		switch t.Visibility {
		case VisibilityAll, VisibilityPrivate:
			if len(t.SelectedRepositoryIDs) > 0 {
				bad("selected repositories need visibility selected, not %s", t.Visibility)
			}
		case VisibilitySelected:
			if len(t.SelectedRepositoryIDs) == 0 {
				bad("visibility selected needs at least one selected repository id")
			}
			for _, id := range t.SelectedRepositoryIDs {
				if id <= 0 {
					bad("selected repository id %d is not positive", id)
				}
			}
		case "":
			bad("an organization secret needs a visibility: all, private or selected")
		default:
			bad("visibility %q: want all, private or selected", t.Visibility)
		}
	}
	if t.Environment != "" && !ValidEnvironment(t.Environment) {
		bad("environment %q: at most 255 characters, no control characters, no leading or trailing spaces", t.Environment)
	}
	if t.Secret == "" {
		bad("secret name is required")
	} else if err := CheckSecretName(t.Secret); err != nil {
		bad("secret name %q: %v", t.Secret, err)
	}
	return errors.Join(errs...)
}

// GitHubSink writes a GitHub Actions secret. The value is sealed with the
// target's current public key (libsodium's sealed box, as GitHub requires),
// so it is readable only by GitHub. A PUT creates or replaces the secret, so
// writing twice is harmless.
type GitHubSink struct {
	client *github.Client
	target GitHubTarget
}

var _ Sink = (*GitHubSink)(nil)

// NewGitHubSink returns a sink writing target with client (from
// [NewGitHubClient]). The target is checked on every write; call
// [GitHubTarget.Validate] at load time to find a bad one earlier.
func NewGitHubSink(client *github.Client, target GitHubTarget) *GitHubSink {
	return &GitHubSink{client: client, target: target}
}

// Kind is "github".
func (s *GitHubSink) Kind() string { return KindGitHub }

// Target names the secret, see [GitHubTarget.String].
func (s *GitHubSink) Target() string { return s.target.String() }

// Preflight fetches the public key a Write would seal the value with,
// which needs the same access as writing: a token that is refused or a
// target that does not exist fails here, before anything changes. The
// rotation calls it before it rotates or creates a token.
func (s *GitHubSink) Preflight(ctx context.Context) error {
	if err := s.target.Validate(); err != nil {
		return err
	}
	_, _, err := s.secrets(ctx)
	return err
}

// Write seals value with the target's public key and stores it. version is
// the key_id the value was sealed with. m is not recorded: GitHub secrets
// have no metadata.
func (s *GitHubSink) Write(ctx context.Context, value string, _ Metadata) (string, error) {
	if err := s.target.Validate(); err != nil {
		return "", err
	}
	if value == "" {
		return "", &Error{Sink: KindGitHub, Target: s.Target(), Op: "write", Err: errors.New("refusing to write an empty value")}
	}
	key, put, err := s.secrets(ctx)
	if err != nil {
		return "", err
	}
	sealed, err := seal(key, value)
	if err != nil {
		return "", &Error{Sink: KindGitHub, Target: s.Target(), Op: "public key", Err: err}
	}
	es := &github.EncryptedSecret{Name: s.target.Secret, KeyID: key.GetKeyID(), EncryptedValue: sealed}
	if err := put(es); err != nil {
		return "", githubError(s.Target(), "write", err)
	}
	return key.GetKeyID(), nil
}

// secrets finds where the target's secret lives, as the organization,
// environment or repository secrets API: the public key to seal a value
// with, and the call that stores the sealed value. Its errors are
// classified [*Error]s.
func (s *GitHubSink) secrets(ctx context.Context) (*github.PublicKey, func(*github.EncryptedSecret) error, error) {
	t := s.target
	actions := s.client.Actions
	var (
		key *github.PublicKey
		put func(*github.EncryptedSecret) error
		err error
	)
	switch {
	case t.Organization != "":
		key, _, err = actions.GetOrgPublicKey(ctx, t.Organization)
		put = func(es *github.EncryptedSecret) error {
			es.Visibility = t.Visibility
			if t.Visibility == VisibilitySelected {
				es.SelectedRepositoryIDs = github.SelectedRepoIDs(t.SelectedRepositoryIDs)
			}
			_, err := actions.CreateOrUpdateOrgSecret(ctx, t.Organization, es)
			return err
		}
	case t.Environment != "":
		owner, name, _ := strings.Cut(t.Repository, "/")
		// go-github addresses environment secrets by repository id.
		repo, _, rerr := s.client.Repositories.Get(ctx, owner, name)
		if rerr != nil {
			return nil, nil, githubError(s.Target(), "repository", rerr)
		}
		id := int(repo.GetID())
		env := url.PathEscape(t.Environment)
		key, _, err = actions.GetEnvPublicKey(ctx, id, env)
		put = func(es *github.EncryptedSecret) error {
			_, err := actions.CreateOrUpdateEnvSecret(ctx, id, env, es)
			return err
		}
	default:
		owner, name, _ := strings.Cut(t.Repository, "/")
		key, _, err = actions.GetRepoPublicKey(ctx, owner, name)
		put = func(es *github.EncryptedSecret) error {
			_, err := actions.CreateOrUpdateRepoSecret(ctx, owner, name, es)
			return err
		}
	}
	if err != nil {
		return nil, nil, githubError(s.Target(), "public key", err)
	}
	return key, put, nil
}

// seal encrypts value to key (base64 of a Curve25519 public key) with an
// anonymous sealed box, and returns it base64-encoded as GitHub expects.
func seal(key *github.PublicKey, value string) (string, error) {
	if key.GetKeyID() == "" {
		return "", errors.New("the public key has no key_id")
	}
	raw, err := base64.StdEncoding.DecodeString(key.GetKey())
	if err != nil || len(raw) != 32 {
		return "", errors.New("the public key is not 32 bytes of base64")
	}
	var pk [32]byte
	copy(pk[:], raw)
	out, err := box.SealAnonymous(nil, []byte(value), &pk, rand.Reader)
	if err != nil {
		return "", fmt.Errorf("seal: %w", err)
	}
	return base64.StdEncoding.EncodeToString(out), nil
}
