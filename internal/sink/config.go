package sink

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/astro-sts/astro-sts/internal/loopback"
	"github.com/astro-sts/astro-sts/internal/secret"
)

// Vault authentication methods accepted in ASTRO_STS_VAULT_AUTH.
const (
	VaultAuthToken      = "token"
	VaultAuthAppRole    = "approle"
	VaultAuthKubernetes = "kubernetes"
	VaultAuthJWT        = "jwt"
)

// DefaultKubernetesJWTFile is where Kubernetes mounts a pod's service
// account token; the kubernetes method reads it when
// ASTRO_STS_VAULT_JWT_FILE is not set.
const DefaultKubernetesJWTFile = "/var/run/secrets/kubernetes.io/serviceaccount/token"

// DefaultGitHubAPIURL is GitHub.com's REST API. Any other GITHUB_API_URL is
// treated as GitHub Enterprise Server.
const DefaultGitHubAPIURL = "https://api.github.com"

// Config holds the credentials of every sink: the sinks' section of the
// broker's and `astro-sts rotate`'s configuration (internal/config), so a
// rotation behaves the same under both. Its credentials are [secret.Value]s:
// a Config prints and logs without them.
type Config struct {
	Vault  VaultConfig
	GitHub GitHubConfig
}

// VaultConfig is how to reach and log in to Vault. VAULT_ADDR, VAULT_TOKEN,
// VAULT_NAMESPACE and VAULT_CACERT mean what they mean to the Vault CLI; the
// ASTRO_STS_VAULT_* variables choose and configure a login method for
// services that do not hold a long-lived token.
//
// Secret-bearing variables (VAULT_TOKEN, the AppRole secret id) are removed
// from the process environment once read (`unset`), so a child process never
// inherits them. Files (token, secret id, JWT) are read at login time, not at
// load time, so a rotated Kubernetes service account token is picked up.
type VaultConfig struct {
	Addr      string       `env:"VAULT_ADDR"`
	Token     secret.Value `env:"VAULT_TOKEN,unset"`
	TokenFile string       `env:"VAULT_TOKEN_FILE"`
	Namespace string       `env:"VAULT_NAMESPACE"`
	// CACert is a PEM file of CA certificates trusted for Vault's TLS
	// certificate instead of the system pool.
	CACert string `env:"VAULT_CACERT"`

	// Auth is the login method: token (default), approle, kubernetes, jwt.
	Auth string `env:"ASTRO_STS_VAULT_AUTH" envDefault:"token"`
	// AuthMount is where the method is mounted; default: the method's name.
	AuthMount string `env:"ASTRO_STS_VAULT_AUTH_MOUNT"`

	// AppRole.
	RoleID       string       `env:"ASTRO_STS_VAULT_APPROLE_ROLE_ID"`
	SecretID     secret.Value `env:"ASTRO_STS_VAULT_APPROLE_SECRET_ID,unset"`
	SecretIDFile string       `env:"ASTRO_STS_VAULT_APPROLE_SECRET_ID_FILE"`

	// Kubernetes and JWT: the Vault role to log in as and the file holding
	// the JWT presented (for jwt: the broker's own identity token).
	Role    string `env:"ASTRO_STS_VAULT_ROLE"`
	JWTFile string `env:"ASTRO_STS_VAULT_JWT_FILE"`
}

// GitHubConfig is how to authenticate to GitHub's REST API for writing
// Actions secrets: a token with the secrets permission (GITHUB_TOKEN), or a
// GitHub App (GITHUB_APP_ID and GITHUB_APP_PRIVATE_KEY_FILE) whose
// installation tokens are minted on demand.
//
// A workflow's own GITHUB_TOKEN cannot write secrets: the token must be a
// personal access token or another App's token.
type GitHubConfig struct {
	Token             secret.Value `env:"GITHUB_TOKEN,unset"`
	AppID             int64        `env:"GITHUB_APP_ID"`
	AppPrivateKeyFile string       `env:"GITHUB_APP_PRIVATE_KEY_FILE"`
	// InstallationID pins the App installation. When zero, the installation
	// of InstallationOwner is looked up.
	InstallationID int64 `env:"GITHUB_APP_INSTALLATION_ID"`
	// APIURL is the REST API base: https://api.github.com, or
	// https://HOST/api/v3 for GitHub Enterprise Server.
	APIURL string `env:"GITHUB_API_URL" envDefault:"https://api.github.com"`

	// InstallationOwner is the account (organization or user) whose App
	// installation is used when InstallationID is zero. It comes from the
	// target ([GitHubTarget.Owner]), not from the environment.
	InstallationOwner string `env:"-"`
	// Now is the clock used for App JWTs and installation token expiry;
	// nil means time.Now.
	Now func() time.Time `env:"-" json:"-"`
}

// Validate checks every sink that is configured at all: a half-configured
// sink is an error when the configuration loads rather than a surprise at
// the first rotation. A sink with no settings is not an error here;
// [Config.Require] reports it when a rotation needs it.
func (c Config) Validate() error {
	var errs []error
	if c.Vault.Configured() {
		errs = append(errs, c.Vault.Validate())
	}
	if c.GitHub.Configured() {
		errs = append(errs, c.GitHub.Validate())
	}
	return errors.Join(errs...)
}

// Require reports, for each sink kind ("vault", "github") a rotation needs,
// whether it has credentials and whether they are valid. The rotation loader
// calls it so that a rotation whose sink cannot authenticate fails at load.
func (c Config) Require(kinds ...string) error {
	var errs []error
	for _, k := range kinds {
		switch k {
		case KindVault:
			if !c.Vault.Configured() {
				errs = append(errs, fmt.Errorf("%w: a rotation writes to Vault but no Vault credentials are configured (VAULT_ADDR and VAULT_TOKEN, or ASTRO_STS_VAULT_AUTH)", ErrInvalidConfig))
				continue
			}
			errs = append(errs, c.Vault.Validate())
		case KindGitHub:
			if !c.GitHub.Configured() {
				errs = append(errs, fmt.Errorf("%w: a rotation writes to GitHub but no GitHub credentials are configured (GITHUB_TOKEN, or GITHUB_APP_ID and GITHUB_APP_PRIVATE_KEY_FILE)", ErrInvalidConfig))
				continue
			}
			errs = append(errs, c.GitHub.Validate())
		default:
			errs = append(errs, fmt.Errorf("%w: unknown sink kind %q", ErrInvalidConfig, k))
		}
	}
	return errors.Join(errs...)
}

// Configured reports whether any Vault setting is present. The default
// ASTRO_STS_VAULT_AUTH=token alone does not count.
func (c VaultConfig) Configured() bool {
	rest := c
	rest.Auth = ""
	return rest != VaultConfig{} || c.Auth != "" && c.Auth != VaultAuthToken
}

// Validate reports every problem at once. It does not read the files it is
// given: they are read at login, where a missing file is an error too.
func (c VaultConfig) Validate() error {
	var errs []error
	bad := func(format string, a ...any) {
		errs = append(errs, fmt.Errorf("%w: "+format, append([]any{ErrInvalidConfig}, a...)...))
	}
	if c.Addr == "" {
		bad("VAULT_ADDR is required")
	} else if _, err := loopback.ParseURL(c.Addr); err != nil {
		bad("VAULT_ADDR: %v", err)
	}
	// set lists the method-specific variables that are present, to report
	// those the chosen method would silently ignore.
	set := func(pairs ...string) []string {
		var names []string
		for i := 0; i < len(pairs); i += 2 {
			if pairs[i+1] != "" {
				names = append(names, pairs[i])
			}
		}
		return names
	}
	tokenVars := set("VAULT_TOKEN", c.Token.Reveal(), "VAULT_TOKEN_FILE", c.TokenFile)
	approleVars := set("ASTRO_STS_VAULT_APPROLE_ROLE_ID", c.RoleID, "ASTRO_STS_VAULT_APPROLE_SECRET_ID", c.SecretID.Reveal(), "ASTRO_STS_VAULT_APPROLE_SECRET_ID_FILE", c.SecretIDFile)
	roleVars := set("ASTRO_STS_VAULT_ROLE", c.Role, "ASTRO_STS_VAULT_JWT_FILE", c.JWTFile)
	ignored := func(method string, names []string) {
		for _, n := range names {
			bad("%s is set but ASTRO_STS_VAULT_AUTH is %s, which does not use it", n, method)
		}
	}
	switch c.Auth {
	case VaultAuthToken, "":
		switch {
		case c.Token == "" && c.TokenFile == "":
			bad("ASTRO_STS_VAULT_AUTH=token needs VAULT_TOKEN or VAULT_TOKEN_FILE")
		case c.Token != "" && c.TokenFile != "":
			bad("set only one of VAULT_TOKEN and VAULT_TOKEN_FILE")
		}
		if c.AuthMount != "" {
			bad("ASTRO_STS_VAULT_AUTH_MOUNT is set but ASTRO_STS_VAULT_AUTH is token, which has no mount")
		}
		ignored(VaultAuthToken, append(approleVars, roleVars...))
	case VaultAuthAppRole:
		if c.RoleID == "" {
			bad("ASTRO_STS_VAULT_AUTH=approle needs ASTRO_STS_VAULT_APPROLE_ROLE_ID")
		}
		switch {
		case c.SecretID == "" && c.SecretIDFile == "":
			bad("ASTRO_STS_VAULT_AUTH=approle needs ASTRO_STS_VAULT_APPROLE_SECRET_ID or ASTRO_STS_VAULT_APPROLE_SECRET_ID_FILE")
		case c.SecretID != "" && c.SecretIDFile != "":
			bad("set only one of ASTRO_STS_VAULT_APPROLE_SECRET_ID and ASTRO_STS_VAULT_APPROLE_SECRET_ID_FILE")
		}
		ignored(VaultAuthAppRole, append(tokenVars, roleVars...))
	case VaultAuthKubernetes, VaultAuthJWT:
		if c.Role == "" {
			bad("ASTRO_STS_VAULT_AUTH=%s needs ASTRO_STS_VAULT_ROLE", c.Auth)
		}
		if c.Auth == VaultAuthJWT && c.JWTFile == "" {
			bad("ASTRO_STS_VAULT_AUTH=jwt needs ASTRO_STS_VAULT_JWT_FILE")
		}
		ignored(c.Auth, append(tokenVars, approleVars...))
	default:
		bad("ASTRO_STS_VAULT_AUTH=%q: want token, approle, kubernetes or jwt", c.Auth)
	}
	if strings.Trim(c.AuthMount, "/") != c.AuthMount {
		bad("ASTRO_STS_VAULT_AUTH_MOUNT %q must not start or end with /", c.AuthMount)
	}
	return errors.Join(errs...)
}

// authMount is the login path's mount, defaulting to the method's name.
func (c VaultConfig) authMount() string {
	if c.AuthMount != "" {
		return c.AuthMount
	}
	return c.Auth
}

// Configured reports whether any GitHub credential setting is present.
// GITHUB_API_URL alone does not count: the Actions runner always sets it.
func (c GitHubConfig) Configured() bool {
	return c.Token != "" || c.AppID != 0 || c.AppPrivateKeyFile != "" || c.InstallationID != 0
}

// Validate reports every problem at once.
func (c GitHubConfig) Validate() error {
	var errs []error
	bad := func(format string, a ...any) {
		errs = append(errs, fmt.Errorf("%w: "+format, append([]any{ErrInvalidConfig}, a...)...))
	}
	app := c.AppID != 0 || c.AppPrivateKeyFile != "" || c.InstallationID != 0
	switch {
	case c.Token != "" && app:
		bad("set either GITHUB_TOKEN or the GITHUB_APP_* variables, not both")
	case c.Token == "" && !app:
		bad("GITHUB_TOKEN, or GITHUB_APP_ID and GITHUB_APP_PRIVATE_KEY_FILE, are required")
	case app:
		if c.AppID <= 0 {
			bad("GITHUB_APP_ID is required with the other GITHUB_APP_* variables and must be positive")
		}
		if c.AppPrivateKeyFile == "" {
			bad("GITHUB_APP_PRIVATE_KEY_FILE is required with GITHUB_APP_ID")
		}
		if c.InstallationID < 0 {
			bad("GITHUB_APP_INSTALLATION_ID must be positive")
		}
	}
	if c.APIURL == "" {
		bad("GITHUB_API_URL is empty")
	} else if _, err := loopback.ParseURL(c.APIURL); err != nil {
		bad("GITHUB_API_URL: %v", err)
	}
	return errors.Join(errs...)
}

func (c GitHubConfig) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}
