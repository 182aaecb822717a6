package sink

import (
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/google/go-github/v62/github"

	"github.com/astro-sts/astro-sts/internal/retry"
)

// maxGitHubResponse caps what is read of any GitHub answer: the secrets
// endpoints answer a few hundred bytes.
const maxGitHubResponse = 1 << 20

// installationTokenMargin is how long before its expiry an installation
// token is replaced, so a request never leaves with a token about to lapse.
const installationTokenMargin = time.Minute

// NewGitHubClient returns a go-github client authenticated as cfg says and
// pointed at cfg.APIURL (GitHub Enterprise Server when it is not
// https://api.github.com).
//
// With a token, every request carries it. With a GitHub App, the client signs
// an RS256 app JWT with the private key, exchanges it for an installation
// token, and keeps that token until a minute before it expires. The
// installation is cfg.InstallationID, or else the one of
// cfg.InstallationOwner (set it from [GitHubTarget.Owner]), looked up now. The
// first installation token is also fetched now, with ctx, so a wrong key or a
// missing installation is found at load time.
//
// Credentials are only ever sent to the API host: redirects to another host
// are refused, and answers are capped in size. hc may be nil; it is not
// modified.
func NewGitHubClient(ctx context.Context, cfg GitHubConfig, hc *http.Client) (*github.Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	api, err := url.Parse(cfg.APIURL)
	if err != nil {
		return nil, fmt.Errorf("%w: GITHUB_API_URL: %w", ErrInvalidConfig, err)
	}
	timeout := defaultHTTPTimeout
	var base http.RoundTripper = http.DefaultTransport
	if hc != nil {
		timeout = hc.Timeout
		if hc.Transport != nil {
			base = hc.Transport
		}
	}
	base = boundedTransport{base: base}
	newClient := func(rt http.RoundTripper) (*github.Client, error) {
		c := github.NewClient(&http.Client{
			Transport: rt,
			Timeout:   timeout,
			CheckRedirect: func(req *http.Request, via []*http.Request) error {
				if req.URL.Host != api.Host || req.URL.Scheme != api.Scheme {
					return fmt.Errorf("refusing a redirect from the GitHub API to %s", req.URL.Host)
				}
				if len(via) >= 5 {
					return errors.New("too many redirects")
				}
				return nil
			},
		})
		if strings.TrimSuffix(cfg.APIURL, "/") == DefaultGitHubAPIURL {
			return c, nil
		}
		upload := strings.TrimSuffix(strings.TrimSuffix(cfg.APIURL, "/"), "/api/v3") + "/api/uploads/"
		c, err := c.WithEnterpriseURLs(cfg.APIURL, upload)
		if err != nil {
			return nil, fmt.Errorf("%w: GITHUB_API_URL: %w", ErrInvalidConfig, err)
		}
		return c, nil
	}

	if cfg.Token != "" {
		return newClient(&bearerTransport{base: base, host: api.Host, token: cfg.Token.Reveal()})
	}

	key, err := loadAppKey(cfg.AppPrivateKeyFile)
	if err != nil {
		return nil, err
	}
	apps, err := newClient(&appJWTTransport{base: base, host: api.Host, appID: cfg.AppID, key: key, now: cfg.now})
	if err != nil {
		return nil, err
	}
	id := cfg.InstallationID
	if id == 0 {
		if id, err = findInstallation(ctx, apps, cfg.InstallationOwner); err != nil {
			return nil, err
		}
	}
	it := &installationTransport{base: base, host: api.Host, apps: apps, id: id, now: cfg.now}
	if _, err := it.token(ctx); err != nil {
		return nil, err
	}
	return newClient(it)
}

// findInstallation looks the App's installation up for owner: a repository
// ("acme/dags"), else an organization, else a user account.
func findInstallation(ctx context.Context, apps *github.Client, owner string) (int64, error) {
	target := "app installation for " + owner
	if owner == "" {
		return 0, fmt.Errorf("%w: GITHUB_APP_INSTALLATION_ID is not set and no target owner was given to look the installation up", ErrInvalidConfig)
	}
	var (
		inst *github.Installation
		err  error
	)
	if o, r, ok := strings.Cut(owner, "/"); ok {
		inst, _, err = apps.Apps.FindRepositoryInstallation(ctx, o, r)
	} else {
		inst, _, err = apps.Apps.FindOrganizationInstallation(ctx, owner)
		if kind, _ := githubKind(err); kind == ErrNotFound {
			inst, _, err = apps.Apps.FindUserInstallation(ctx, owner)
		}
	}
	if err != nil {
		return 0, githubError(target, "installation", err)
	}
	if inst.GetID() == 0 {
		return 0, &Error{Sink: KindGitHub, Target: target, Op: "installation", Err: errors.New("the answer holds no installation id")}
	}
	return inst.GetID(), nil
}

// loadAppKey reads the App's PEM private key: PKCS #1 as GitHub hands it
// out, or PKCS #8. Errors never quote the file's content.
func loadAppKey(path string) (*rsa.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: GITHUB_APP_PRIVATE_KEY_FILE: %w", ErrInvalidConfig, err)
	}
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, fmt.Errorf("%w: GITHUB_APP_PRIVATE_KEY_FILE %s holds no PEM block", ErrInvalidConfig, path)
	}
	switch block.Type {
	case "RSA PRIVATE KEY":
		k, err := x509.ParsePKCS1PrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%w: GITHUB_APP_PRIVATE_KEY_FILE %s: not a PKCS #1 RSA key", ErrInvalidConfig, path)
		}
		return k, nil
	case "PRIVATE KEY":
		k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%w: GITHUB_APP_PRIVATE_KEY_FILE %s: not a PKCS #8 key", ErrInvalidConfig, path)
		}
		rk, ok := k.(*rsa.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("%w: GITHUB_APP_PRIVATE_KEY_FILE %s: a GitHub App key is RSA, this is %T", ErrInvalidConfig, path, k)
		}
		return rk, nil
	default:
		return nil, fmt.Errorf("%w: GITHUB_APP_PRIVATE_KEY_FILE %s: unexpected PEM block %q", ErrInvalidConfig, path, block.Type)
	}
}

// bearerTransport adds a fixed token to requests for the API host only.
type bearerTransport struct {
	base  http.RoundTripper
	host  string
	token string
}

func (t *bearerTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	return t.base.RoundTrip(withAuth(req, t.host, t.token))
}

// withAuth returns req with the token added when it goes to host, and req
// unchanged otherwise; a RoundTripper must not modify its request.
func withAuth(req *http.Request, host, token string) *http.Request {
	if req.URL.Host != host {
		return req
	}
	r := req.Clone(req.Context())
	r.Header.Set("Authorization", "Bearer "+token)
	return r
}

// appJWTTransport authenticates as the App itself, with a JWT signed per
// request: GitHub accepts them for at most 10 minutes, and signing is cheap.
type appJWTTransport struct {
	base  http.RoundTripper
	host  string
	appID int64
	key   *rsa.PrivateKey
	now   func() time.Time
}

func (t *appJWTTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	tok, err := signAppJWT(t.key, t.appID, t.now())
	if err != nil {
		return nil, err
	}
	return t.base.RoundTrip(withAuth(req, t.host, tok))
}

// signAppJWT makes the JWT GitHub expects from an App: RS256, issued 60 s in
// the past to absorb clock drift, expiring 9 minutes ahead (GitHub's limit is
// 10), issuer the App id.
func signAppJWT(key *rsa.PrivateKey, appID int64, now time.Time) (string, error) {
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: key}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		return "", fmt.Errorf("github app jwt: %w", err)
	}
	return jwt.Signed(signer).Claims(jwt.Claims{
		Issuer:   strconv.FormatInt(appID, 10),
		IssuedAt: jwt.NewNumericDate(now.Add(-60 * time.Second)),
		Expiry:   jwt.NewNumericDate(now.Add(9 * time.Minute)),
	}).Serialize()
}

// installationTransport authenticates with an installation token, minted
// through apps and cached until installationTokenMargin before it expires.
// The cache lives in the transport, so it is per client, never global.
type installationTransport struct {
	base http.RoundTripper
	host string
	apps *github.Client
	id   int64
	now  func() time.Time

	mu      sync.Mutex
	current string
	expires time.Time
}

func (t *installationTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Host != t.host {
		return t.base.RoundTrip(req)
	}
	tok, err := t.token(req.Context())
	if err != nil {
		return nil, err
	}
	return t.base.RoundTrip(withAuth(req, t.host, tok))
}

// token returns the cached installation token or mints a new one. The lock
// is held during the exchange so concurrent requests share one exchange.
func (t *installationTransport) token(ctx context.Context) (string, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.current != "" && t.now().Before(t.expires.Add(-installationTokenMargin)) {
		return t.current, nil
	}
	it, _, err := t.apps.Apps.CreateInstallationToken(ctx, t.id, nil)
	if err != nil {
		return "", githubError("app installation "+strconv.FormatInt(t.id, 10), "installation token", err)
	}
	if it.GetToken() == "" || it.ExpiresAt == nil {
		return "", &Error{Sink: KindGitHub, Target: "app installation " + strconv.FormatInt(t.id, 10), Op: "installation token",
			Err: errors.New("the answer holds no token or no expiry")}
	}
	t.current, t.expires = it.GetToken(), it.GetExpiresAt().Time
	return t.current, nil
}

// boundedTransport caps every answer's body at maxGitHubResponse.
type boundedTransport struct{ base http.RoundTripper }

func (t boundedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	resp.Body = struct {
		io.Reader
		io.Closer
	}{io.LimitReader(resp.Body, maxGitHubResponse), resp.Body}
	return resp, nil
}

// githubKind classifies an error from go-github, with the delay GitHub asked
// for when it did.
func githubKind(err error) (kind error, retryAfter time.Duration) {
	if err == nil {
		return nil, 0
	}
	var se *Error
	if errors.As(err, &se) {
		return se.Kind, se.RetryAfter
	}
	var abuse *github.AbuseRateLimitError
	if errors.As(err, &abuse) {
		return ErrUnavailable, abuse.GetRetryAfter()
	}
	var rl *github.RateLimitError
	if errors.As(err, &rl) {
		return ErrUnavailable, time.Until(rl.Rate.Reset.Time).Round(time.Second)
	}
	var er *github.ErrorResponse
	if errors.As(err, &er) && er.Response != nil {
		switch c := er.Response.StatusCode; {
		case c == http.StatusUnauthorized, c == http.StatusForbidden:
			return ErrDenied, 0
		case c == http.StatusNotFound:
			return ErrNotFound, 0
		case c == http.StatusTooManyRequests, c >= 500:
			return ErrUnavailable, retry.ParseAfter(er.Response.Header.Get("Retry-After"), time.Now())
		}
		return nil, 0
	}
	if errors.Is(err, context.Canceled) {
		return nil, 0
	}
	var ue *url.Error
	var ne net.Error
	if errors.As(err, &ue) || errors.As(err, &ne) {
		return ErrUnavailable, 0
	}
	return nil, 0
}

// githubError wraps err as an [*Error], keeping an inner [*Error] (from the
// installation transport) as it is.
func githubError(target, op string, err error) error {
	var se *Error
	if errors.As(err, &se) {
		return se
	}
	kind, ra := githubKind(err)
	return &Error{Sink: KindGitHub, Target: target, Op: op, Kind: kind, RetryAfter: ra, Err: err}
}
