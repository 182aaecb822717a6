package sink_test

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/astro-sts/astro-sts/internal/sink"
)

// messages flattens an errors.Join tree into its leaf messages, so a table
// can list every problem Validate must report.
func messages(err error) []string {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []string
		for _, e := range j.Unwrap() {
			out = append(out, messages(e)...)
		}
		return out
	}
	return []string{strings.TrimPrefix(err.Error(), sink.ErrInvalidConfig.Error()+": ")}
}

func TestVaultConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  sink.VaultConfig
		want []string
	}{
		{"token", sink.VaultConfig{Addr: "https://v:8200", Token: "t"}, nil},
		{"token file", sink.VaultConfig{Addr: "https://v:8200", Auth: "token", TokenFile: "/t"}, nil},
		{"plain http to loopback", sink.VaultConfig{Addr: "http://localhost:8200", Token: "t"}, nil},
		{"plain http to [::1]", sink.VaultConfig{Addr: "http://[::1]:8200", Token: "t"}, nil},
		{"approle", sink.VaultConfig{Addr: "https://v", Auth: "approle", RoleID: "r", SecretID: "s"}, nil},
		{"kubernetes", sink.VaultConfig{Addr: "https://v", Auth: "kubernetes", Role: "r"}, nil},
		{"jwt", sink.VaultConfig{Addr: "https://v", Auth: "jwt", Role: "r", JWTFile: "/id.jwt"}, nil},
		{"empty", sink.VaultConfig{Auth: "token"}, []string{
			"VAULT_ADDR is required",
			"ASTRO_STS_VAULT_AUTH=token needs VAULT_TOKEN or VAULT_TOKEN_FILE",
		}},
		{"plain http to a remote host", sink.VaultConfig{Addr: "http://vault.example.com:8200", Token: "t"}, []string{
			"VAULT_ADDR: plain http is allowed only for loopback hosts",
		}},
		{"no host, and credentials in the URL stay unprinted", sink.VaultConfig{Addr: "https://user:hunter2@", Token: "t"}, []string{
			"VAULT_ADDR: must not contain user information",
		}},
		{"a query in the address", sink.VaultConfig{Addr: "https://vault.example.com:8200/?namespace=x", Token: "t"}, []string{
			"VAULT_ADDR: must not have a query or fragment",
		}},
		{"both token sources", sink.VaultConfig{Addr: "https://v", Token: "t", TokenFile: "/t"}, []string{
			"set only one of VAULT_TOKEN and VAULT_TOKEN_FILE",
		}},
		{"approle missing everything", sink.VaultConfig{Addr: "https://v", Auth: "approle"}, []string{
			"ASTRO_STS_VAULT_AUTH=approle needs ASTRO_STS_VAULT_APPROLE_ROLE_ID",
			"ASTRO_STS_VAULT_AUTH=approle needs ASTRO_STS_VAULT_APPROLE_SECRET_ID or ASTRO_STS_VAULT_APPROLE_SECRET_ID_FILE",
		}},
		{"approle with a stray VAULT_TOKEN", sink.VaultConfig{Addr: "https://v", Auth: "approle", RoleID: "r", SecretIDFile: "/s", Token: "t"}, []string{
			"VAULT_TOKEN is set but ASTRO_STS_VAULT_AUTH is approle, which does not use it",
		}},
		{"jwt without role or file", sink.VaultConfig{Addr: "https://v", Auth: "jwt"}, []string{
			"ASTRO_STS_VAULT_AUTH=jwt needs ASTRO_STS_VAULT_ROLE",
			"ASTRO_STS_VAULT_AUTH=jwt needs ASTRO_STS_VAULT_JWT_FILE",
		}},
		{"kubernetes without role, with approle settings", sink.VaultConfig{Addr: "https://v", Auth: "kubernetes", RoleID: "r"}, []string{
			"ASTRO_STS_VAULT_AUTH=kubernetes needs ASTRO_STS_VAULT_ROLE",
			"ASTRO_STS_VAULT_APPROLE_ROLE_ID is set but ASTRO_STS_VAULT_AUTH is kubernetes, which does not use it",
		}},
		{"unknown method and a bad mount", sink.VaultConfig{Addr: "https://v", Auth: "ldap", AuthMount: "/x/"}, []string{
			`ASTRO_STS_VAULT_AUTH="ldap": want token, approle, kubernetes or jwt`,
			`ASTRO_STS_VAULT_AUTH_MOUNT "/x/" must not start or end with /`,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if diff := cmp.Diff(tt.want, messages(err)); diff != "" {
				t.Errorf("-want +got:\n%s", diff)
			}
			if err != nil && !errors.Is(err, sink.ErrInvalidConfig) {
				t.Errorf("%v is not ErrInvalidConfig", err)
			}
			if strings.Contains(fmt.Sprint(err), "hunter2") {
				t.Errorf("error leaks a URL password: %v", err)
			}
		})
	}
}

func TestGitHubConfigValidate(t *testing.T) {
	const api = "https://api.github.com"
	tests := []struct {
		name string
		cfg  sink.GitHubConfig
		want []string
	}{
		{"token", sink.GitHubConfig{Token: "t", APIURL: api}, nil},
		{"app", sink.GitHubConfig{AppID: 1, AppPrivateKeyFile: "/k", APIURL: api}, nil},
		{"app with installation on GHES", sink.GitHubConfig{AppID: 1, AppPrivateKeyFile: "/k", InstallationID: 9, APIURL: "https://ghes.corp/api/v3"}, nil},
		{"nothing", sink.GitHubConfig{APIURL: api}, []string{
			"GITHUB_TOKEN, or GITHUB_APP_ID and GITHUB_APP_PRIVATE_KEY_FILE, are required",
		}},
		{"both", sink.GitHubConfig{Token: "t", AppID: 1, AppPrivateKeyFile: "/k", APIURL: api}, []string{
			"set either GITHUB_TOKEN or the GITHUB_APP_* variables, not both",
		}},
		{"installation id alone, and no API URL", sink.GitHubConfig{InstallationID: 3}, []string{
			"GITHUB_APP_ID is required with the other GITHUB_APP_* variables and must be positive",
			"GITHUB_APP_PRIVATE_KEY_FILE is required with GITHUB_APP_ID",
			"GITHUB_API_URL is empty",
		}},
		{"plain http to a remote GHES", sink.GitHubConfig{Token: "t", APIURL: "http://ghes.corp/api/v3"}, []string{
			"GITHUB_API_URL: plain http is allowed only for loopback hosts",
		}},
		{"a query in the API URL", sink.GitHubConfig{Token: "t", APIURL: "https://ghes.corp/api/v3?per_page=1"}, []string{
			"GITHUB_API_URL: must not have a query or fragment",
		}},
		{"not https", sink.GitHubConfig{Token: "t", APIURL: "ftp://ghes.corp"}, []string{
			"GITHUB_API_URL: scheme must be https",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Validate()
			if diff := cmp.Diff(tt.want, messages(err)); diff != "" {
				t.Errorf("-want +got:\n%s", diff)
			}
		})
	}
}

func TestRequire(t *testing.T) {
	cfg := sink.Config{GitHub: sink.GitHubConfig{Token: "t", APIURL: sink.DefaultGitHubAPIURL}}
	if err := cfg.Require(sink.KindGitHub); err != nil {
		t.Errorf("Require(github) = %v", err)
	}
	err := cfg.Require(sink.KindVault, sink.KindGitHub, "s3")
	got := messages(err)
	want := []string{
		"a rotation writes to Vault but no Vault credentials are configured (VAULT_ADDR and VAULT_TOKEN, or ASTRO_STS_VAULT_AUTH)",
		`unknown sink kind "s3"`,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("-want +got:\n%s", diff)
	}
}

// String and %#v of a configuration never show a credential, so a config
// can be logged.
func TestConfigStringRedacts(t *testing.T) {
	cfg := sink.Config{
		Vault:  sink.VaultConfig{Addr: "https://v", Token: "hvs.SECRET1", SecretID: "SECRET2"},
		GitHub: sink.GitHubConfig{Token: "ghp_SECRET3", APIURL: "https://api.github.com"},
	}
	for _, format := range []string{"%v", "%+v", "%#v", "%s"} {
		out := fmt.Sprintf(format, cfg) + fmt.Sprintf(format, cfg.Vault) + fmt.Sprintf(format, cfg.GitHub) + fmt.Sprintf(format, &cfg)
		if strings.Contains(out, "SECRET") {
			t.Errorf("%s prints a credential: %s", format, out)
		}
		if !strings.Contains(out, "<redacted>") {
			t.Errorf("%s does not show that a token is set: %s", format, out)
		}
	}
}

// FuzzCheckBaseURL: whatever VAULT_ADDR or GITHUB_API_URL holds, an accepted
// value is https, or plain http to a loopback host, and a rejected one is
// never echoed in the error (it may carry credentials).
func FuzzCheckBaseURL(f *testing.F) {
	for _, s := range []string{
		"https://vault:8200", "http://127.0.0.1:8200", "http://localhost", "http://[::1]:1",
		"http://10.0.0.1", "https://u:p@h", "http://127.0.0.1.evil.com", "HTTP://127.0.0.1", "https://", "%zz", "http://localhost@evil.com",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		err := sink.GitHubConfig{Token: "t", APIURL: raw}.Validate()
		if err != nil {
			if raw != "" && len(raw) > 3 && strings.Contains(err.Error(), raw) {
				t.Errorf("error echoes the URL: %v", err)
			}
			return
		}
		u, perr := url.Parse(raw)
		if perr != nil {
			t.Fatalf("accepted an unparsable URL %q", raw)
		}
		if u.User != nil || u.Host == "" {
			t.Fatalf("accepted %q with user info or no host", raw)
		}
		switch u.Scheme {
		case "https":
		case "http":
			h := u.Hostname()
			if h != "localhost" && !strings.HasPrefix(h, "127.") && h != "::1" && !strings.HasPrefix(h, "::ffff:127.") {
				t.Fatalf("accepted plain http to %q", h)
			}
		default:
			t.Fatalf("accepted scheme %q", u.Scheme)
		}
	})
}
