package sink

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	vaultapi "github.com/hashicorp/vault/api"
)

// KindVault and KindGitHub are the values of [Sink.Kind].
const (
	KindVault  = "vault"
	KindGitHub = "github"
)

// defaultHTTPTimeout bounds every request when the caller gives no client.
const defaultHTTPTimeout = 30 * time.Second

// NewVaultClient returns a Vault client for cfg, logged in with the method
// cfg.Auth names. The login happens now, with ctx, so bad credentials are
// found when the rotation loads rather than when it first writes.
//
// The client reads nothing from the process environment: vaultapi.NewClient
// would pick up VAULT_TOKEN, VAULT_NAMESPACE and VAULT_HEADERS by itself, and
// this function overrides all three with what cfg says. It does not retry
// (the rotation decides, on [ErrUnavailable]) and does not follow redirects.
//
// A login token has a TTL and this client does not renew it: a long-running
// caller logs in again (calls NewVaultClient) for each rotation run. hc may
// be nil; it is copied, never modified.
func NewVaultClient(ctx context.Context, cfg VaultConfig, hc *http.Client) (*vaultapi.Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	httpClient, err := vaultHTTPClient(cfg, hc)
	if err != nil {
		return nil, err
	}
	client, err := vaultapi.NewClient(&vaultapi.Config{
		Address:    cfg.Addr,
		HttpClient: httpClient,
		MaxRetries: 0,
		Timeout:    httpClient.Timeout,
	})
	if err != nil {
		return nil, fmt.Errorf("%w: vault client: %w", ErrInvalidConfig, err)
	}
	client.ClearToken()
	client.SetHeaders(http.Header{vaultapi.RequestHeaderName: []string{"true"}})
	if cfg.Namespace != "" {
		client.SetNamespace(cfg.Namespace)
	} else {
		client.ClearNamespace()
	}
	token, err := vaultLogin(ctx, client, cfg)
	if err != nil {
		return nil, err
	}
	client.SetToken(token)
	return client, nil
}

// vaultHTTPClient copies hc, refuses redirects (vaultapi handles Vault's own
// standby redirects; Go would forward X-Vault-Token to any host) and trusts
// cfg.CACert when set.
func vaultHTTPClient(cfg VaultConfig, hc *http.Client) (*http.Client, error) {
	c := &http.Client{Timeout: defaultHTTPTimeout}
	if hc != nil {
		c = &http.Client{Transport: hc.Transport, Jar: nil, Timeout: hc.Timeout}
	}
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	if cfg.CACert == "" {
		return c, nil
	}
	pem, err := os.ReadFile(cfg.CACert)
	if err != nil {
		return nil, fmt.Errorf("%w: VAULT_CACERT: %w", ErrInvalidConfig, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%w: VAULT_CACERT %s holds no PEM certificate", ErrInvalidConfig, cfg.CACert)
	}
	var t *http.Transport
	switch base := c.Transport.(type) {
	case nil:
		t = http.DefaultTransport.(*http.Transport).Clone()
	case *http.Transport:
		t = base.Clone()
	default:
		return nil, fmt.Errorf("%w: VAULT_CACERT needs an *http.Transport, the client has %T", ErrInvalidConfig, base)
	}
	if t.TLSClientConfig == nil {
		t.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	}
	t.TLSClientConfig.RootCAs = pool
	c.Transport = t
	return c, nil
}

// vaultLogin returns the token the client will use.
func vaultLogin(ctx context.Context, client *vaultapi.Client, cfg VaultConfig) (string, error) {
	var body map[string]any
	switch cfg.Auth {
	case VaultAuthToken, "":
		if cfg.Token != "" {
			return cfg.Token.Reveal(), nil
		}
		return readSecretFile(cfg.TokenFile, "VAULT_TOKEN_FILE")
	case VaultAuthAppRole:
		secretID := cfg.SecretID.Reveal()
		if secretID == "" {
			var err error
			if secretID, err = readSecretFile(cfg.SecretIDFile, "ASTRO_STS_VAULT_APPROLE_SECRET_ID_FILE"); err != nil {
				return "", err
			}
		}
		body = map[string]any{"role_id": cfg.RoleID, "secret_id": secretID}
	case VaultAuthKubernetes, VaultAuthJWT:
		file := cfg.JWTFile
		if file == "" {
			file = DefaultKubernetesJWTFile
		}
		jwt, err := readSecretFile(file, "ASTRO_STS_VAULT_JWT_FILE")
		if err != nil {
			return "", err
		}
		body = map[string]any{"role": cfg.Role, "jwt": jwt}
	default:
		return "", fmt.Errorf("%w: ASTRO_STS_VAULT_AUTH=%q", ErrInvalidConfig, cfg.Auth)
	}
	path := "auth/" + cfg.authMount() + "/login"
	secret, err := client.Logical().WriteWithContext(ctx, path, body)
	if err != nil {
		kind := vaultKind(err)
		if re := (*vaultapi.ResponseError)(nil); errors.As(err, &re) && re.StatusCode == http.StatusBadRequest {
			// Vault answers 400 "invalid role or secret ID" to bad
			// credentials: for the caller that is a refusal.
			kind = ErrDenied
		}
		return "", &Error{Sink: KindVault, Target: cfg.Addr + "/v1/" + path, Op: "login", Kind: kind, Err: vaultCause(err)}
	}
	if secret == nil || secret.Auth == nil || secret.Auth.ClientToken == "" {
		return "", &Error{Sink: KindVault, Target: cfg.Addr + "/v1/" + path, Op: "login", Err: errors.New("the answer holds no client token")}
	}
	return secret.Auth.ClientToken, nil
}

// readSecretFile reads a credential file; the error names the variable and
// the file, never the content.
func readSecretFile(path, variable string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("%w: %s: %w", ErrInvalidConfig, variable, err)
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "", fmt.Errorf("%w: %s: %s is empty", ErrInvalidConfig, variable, path)
	}
	return s, nil
}

// vaultKind classifies an error from the Vault client.
func vaultKind(err error) error {
	if err == nil {
		return nil
	}
	var re *vaultapi.ResponseError
	if errors.As(err, &re) {
		switch c := re.StatusCode; {
		case c == http.StatusUnauthorized, c == http.StatusForbidden:
			return ErrDenied
		case c == http.StatusNotFound:
			return ErrNotFound
		// 412: a performance standby has not caught up yet; 429: rate
		// limited; 5xx includes 503 sealed or standby.
		case c == http.StatusPreconditionFailed, c == http.StatusTooManyRequests, c >= 500:
			return ErrUnavailable
		}
		return nil
	}
	if errors.Is(err, context.Canceled) {
		// The caller gave up: not the destination's fault. The context
		// error stays matchable through [Error.Err].
		return nil
	}
	var ue *url.Error
	var ne net.Error
	if errors.As(err, &ue) || errors.As(err, &ne) {
		return ErrUnavailable
	}
	return nil
}

// vaultCause shortens a *vaultapi.ResponseError, whose message spans several
// lines, to one line: method, path, status and Vault's messages.
func vaultCause(err error) error {
	var re *vaultapi.ResponseError
	if !errors.As(err, &re) {
		return err
	}
	path := re.URL
	if u, perr := url.Parse(re.URL); perr == nil {
		path = u.Path
	}
	// Vault's messages may themselves be multi-line lists.
	msg := strings.Join(strings.Fields(strings.Join(re.Errors, "; ")), " ")
	if msg == "" {
		msg = http.StatusText(re.StatusCode)
	}
	return &vaultResponseError{method: re.HTTPMethod, path: path, status: re.StatusCode, msg: msg, err: re}
}

type vaultResponseError struct {
	method, path string
	status       int
	msg          string
	err          *vaultapi.ResponseError
}

func (e *vaultResponseError) Error() string {
	return fmt.Sprintf("%s %s: HTTP %d: %s", e.method, e.path, e.status, e.msg)
}

func (e *vaultResponseError) Unwrap() error { return e.err }
