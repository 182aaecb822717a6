package config

import (
	"bytes"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/astro-sts/astro-sts/internal/policy"
	"github.com/astro-sts/astro-sts/internal/sink"
)

func validEnv() map[string]string {
	return map[string]string{
		"ASTRO_STS_AUDIENCE":       "https://sts.example.com",
		"ASTRO_STS_POLICY_FILE":    "/etc/astro-sts/policy.yaml",
		"ASTRO_ORGANIZATION_ID":    "clorg",
		"ASTRO_ORGANIZATION_TOKEN": "value",
	}
}

func TestLoadBrokerDefaults(t *testing.T) {
	c, err := LoadBroker(validEnv())
	if err != nil {
		t.Fatal(err)
	}
	want := Broker{
		Addr:            ":8080",
		Audience:        "https://sts.example.com",
		Issuers:         []string{DefaultIssuer},
		PolicyFile:      "/etc/astro-sts/policy.yaml",
		ReapInterval:    30 * time.Second,
		PolicyInterval:  10 * time.Second,
		LogLevel:        "info",
		ReplayCacheSize: 100000,
		// The timeout chain: Astro call < request < shutdown grace, and
		// request < the action's 30s.
		AstroTimeout:     10 * time.Second,
		RequestTimeout:   15 * time.Second,
		ShutdownGrace:    20 * time.Second,
		AstroConcurrency: 16,
		ReapConcurrency:  8,
		RevokeRateLimit:  "120/h",
		Astro: Astro{
			APIURL:         "https://api.astronomer.io/v1",
			OrganizationID: "clorg",
			Token:          "value",
		},
		Sinks: sink.Config{
			Vault:  sink.VaultConfig{Auth: sink.VaultAuthToken},
			GitHub: sink.GitHubConfig{APIURL: sink.DefaultGitHubAPIURL},
		},
	}
	if d := cmp.Diff(want, c); d != "" {
		t.Errorf("LoadBroker (-want +got):\n%s", d)
	}
}

func TestLoadBrokerIssuersAndTokenFile(t *testing.T) {
	f := filepath.Join(t.TempDir(), "tok")
	if err := os.WriteFile(f, []byte("from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	e := validEnv()
	delete(e, "ASTRO_ORGANIZATION_TOKEN")
	e["ASTRO_ORGANIZATION_TOKEN_FILE"] = f
	e["ASTRO_STS_ISSUERS"] = "https://token.actions.githubusercontent.com, https://token.actions.githubusercontent.com/acme ,http://127.0.0.1:9000"
	c, err := LoadBroker(e)
	if err != nil {
		t.Fatal(err)
	}
	if c.Astro.OrganizationToken() != "from-file" {
		t.Errorf("token from file not read and trimmed")
	}
	want := []string{DefaultIssuer, DefaultIssuer + "/acme", "http://127.0.0.1:9000"}
	if d := cmp.Diff(want, []string(c.Issuers)); d != "" {
		t.Errorf("issuers (-want +got):\n%s", d)
	}
}

// Every problem is reported in one error, so the operator fixes them all at
// once.
func TestValidateReportsEverything(t *testing.T) {
	_, err := LoadBroker(map[string]string{
		"ASTRO_STS_ISSUERS":       "http://issuer.example.com",
		"ASTRO_API_URL":           "ftp://x",
		"ASTRO_STS_REAP_INTERVAL": "10ms",
		"ASTRO_STS_LOG_LEVEL":     "loud",
		"ASTRO_STS_ADDR":          "nonsense",
	})
	if err == nil {
		t.Fatal("want an error")
	}
	for _, want := range []string{
		"ASTRO_STS_ADDR", "ASTRO_STS_AUDIENCE", "ASTRO_STS_ISSUERS", "plain http",
		"ASTRO_STS_POLICY_FILE", "ASTRO_API_URL", "ASTRO_ORGANIZATION_ID",
		"ASTRO_ORGANIZATION_TOKEN", "ASTRO_STS_REAP_INTERVAL", "ASTRO_STS_LOG_LEVEL",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not mention %s:\n%v", want, err)
		}
	}
}

func TestLoadBrokerBadDuration(t *testing.T) {
	e := validEnv()
	e["ASTRO_STS_REAP_INTERVAL"] = "soon"
	if _, err := LoadBroker(e); err == nil {
		t.Fatal("want a parse error")
	}
}

func TestMissingTokenFileDoesNotLeak(t *testing.T) {
	e := validEnv()
	delete(e, "ASTRO_ORGANIZATION_TOKEN")
	e["ASTRO_ORGANIZATION_TOKEN_FILE"] = filepath.Join(t.TempDir(), "missing")
	_, err := LoadBroker(e)
	if err == nil || !strings.Contains(err.Error(), "ASTRO_ORGANIZATION_TOKEN_FILE") {
		t.Fatalf("want a file error, got %v", err)
	}
}

// The URL settings follow loopback.ParseURL, the rule of the clients that
// use them: a URL with user information or a query is refused here rather
// than failing later, or never.
func TestURLSettings(t *testing.T) {
	for _, tc := range []struct {
		name, key, value, want string
	}{
		{"loopback http", "ASTRO_API_URL", "http://[::1]:8888/v1", ""},
		{"issuers on loopback", "ASTRO_STS_ISSUERS", "http://localhost:9000, https://token.actions.githubusercontent.com/acme", ""},
		{"plain http to another host", "ASTRO_API_URL", "http://api.astronomer.io/v1", "ASTRO_API_URL: plain http is allowed only for loopback hosts"},
		{"user info", "ASTRO_API_URL", "https://user:hunter2@api.astronomer.io/v1", "ASTRO_API_URL: must not contain user information"},
		{"a query", "ASTRO_API_URL", "https://api.astronomer.io/v1?org=x", "ASTRO_API_URL: must not have a query or fragment"},
		{"an issuer with a query", "ASTRO_STS_ISSUERS", "https://token.actions.githubusercontent.com,https://ghe.example.com/_services/token?x", "ASTRO_STS_ISSUERS entry 2: must not have a query or fragment"},
		{"an issuer with user info", "ASTRO_STS_ISSUERS", "https://u:hunter2@ghe.example.com/_services/token", "ASTRO_STS_ISSUERS entry 1: must not contain user information"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := validEnv()
			e[tc.key] = tc.value
			_, err := LoadBroker(e)
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || err.Error() != tc.want {
				t.Fatalf("LoadBroker = %v, want %q", err, tc.want)
			}
		})
	}
}

// The organization token never shows when the configuration is printed or
// logged, however it is formatted.
func TestBrokerNeverPrintsTheToken(t *testing.T) {
	c, err := LoadBroker(validEnv())
	if err != nil {
		t.Fatal(err)
	}
	c.Astro.Token = "secret-org-token"
	var buf bytes.Buffer
	slog.New(slog.NewJSONHandler(&buf, nil)).Info("cfg", "config", c)
	slog.New(slog.NewTextHandler(&buf, nil)).Info("cfg", "config", c)
	for _, s := range []string{fmt.Sprint(c), fmt.Sprintf("%+v", c), fmt.Sprintf("%#v", c), fmt.Sprintf("%v", &c), buf.String()} {
		if strings.Contains(s, "secret-org-token") {
			t.Errorf("token printed: %s", s)
		}
		if !strings.Contains(s, "clorg") {
			t.Errorf("configuration not printed: %s", s)
		}
	}
}

// The sinks' section is parsed with the rest: each sink that is configured
// at all is validated, a sink with no settings is not an error yet.
func TestLoadSinks(t *testing.T) {
	tests := []struct {
		name    string
		env     map[string]string
		want    sink.Config
		wantErr []string
	}{
		{
			name: "nothing configured",
			env:  map[string]string{"PATH": "/bin", "GITHUB_API_URL": "https://api.github.com"},
			want: sink.Config{
				Vault:  sink.VaultConfig{Auth: "token"},
				GitHub: sink.GitHubConfig{APIURL: "https://api.github.com"},
			},
		},
		{
			name: "vault token and github token",
			env: map[string]string{
				"VAULT_ADDR": "https://vault.example.com:8200", "VAULT_TOKEN": "hvs.x", "VAULT_NAMESPACE": "team",
				"GITHUB_TOKEN": "ghp_x",
			},
			want: sink.Config{
				Vault:  sink.VaultConfig{Addr: "https://vault.example.com:8200", Token: "hvs.x", Namespace: "team", Auth: "token"},
				GitHub: sink.GitHubConfig{Token: "ghp_x", APIURL: "https://api.github.com"},
			},
		},
		{
			name: "vault approle and a github app on GHES",
			env: map[string]string{
				"VAULT_ADDR": "http://127.0.0.1:8200", "ASTRO_STS_VAULT_AUTH": "approle", "ASTRO_STS_VAULT_AUTH_MOUNT": "ci/approle",
				"ASTRO_STS_VAULT_APPROLE_ROLE_ID": "rid", "ASTRO_STS_VAULT_APPROLE_SECRET_ID_FILE": "/run/secret-id",
				"GITHUB_APP_ID": "42", "GITHUB_APP_PRIVATE_KEY_FILE": "/run/app.pem", "GITHUB_APP_INSTALLATION_ID": "7",
				"GITHUB_API_URL": "https://ghes.example.com/api/v3",
			},
			want: sink.Config{
				Vault:  sink.VaultConfig{Addr: "http://127.0.0.1:8200", Auth: "approle", AuthMount: "ci/approle", RoleID: "rid", SecretIDFile: "/run/secret-id"},
				GitHub: sink.GitHubConfig{AppID: 42, AppPrivateKeyFile: "/run/app.pem", InstallationID: 7, APIURL: "https://ghes.example.com/api/v3"},
			},
		},
		{
			name: "vault kubernetes with the default JWT file",
			env:  map[string]string{"VAULT_ADDR": "https://vault:8200", "ASTRO_STS_VAULT_AUTH": "kubernetes", "ASTRO_STS_VAULT_ROLE": "astro-sts"},
			want: sink.Config{
				Vault:  sink.VaultConfig{Addr: "https://vault:8200", Auth: "kubernetes", Role: "astro-sts"},
				GitHub: sink.GitHubConfig{APIURL: "https://api.github.com"},
			},
		},
		{
			name:    "a non-numeric app id",
			env:     map[string]string{"GITHUB_APP_ID": "my-app", "GITHUB_APP_PRIVATE_KEY_FILE": "/k.pem"},
			wantErr: []string{"GITHUB_APP_ID"},
		},
		{
			name: "half-configured sinks are reported together",
			env:  map[string]string{"VAULT_ADDR": "https://vault:8200", "GITHUB_APP_ID": "42"},
			wantErr: []string{
				"ASTRO_STS_VAULT_AUTH=token needs VAULT_TOKEN or VAULT_TOKEN_FILE",
				"GITHUB_APP_PRIVATE_KEY_FILE is required with GITHUB_APP_ID",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := maps.Clone(rotateEnv)
			maps.Copy(e, tt.env)
			c, err := LoadRotate(e)
			got := c.Sinks
			if tt.wantErr != nil {
				if err == nil {
					t.Fatal("want an error")
				}
				for _, w := range tt.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not mention %q", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got, cmpopts.IgnoreFields(sink.GitHubConfig{}, "Now")); diff != "" {
				t.Errorf("-want +got:\n%s", diff)
			}
		})
	}
}

// rotateEnv is the least `astro-sts rotate` runs with.
var rotateEnv = map[string]string{
	"ASTRO_ORGANIZATION_ID":    "clorg",
	"ASTRO_ORGANIZATION_TOKEN": "value",
}

func TestLoadRotate(t *testing.T) {
	f := filepath.Join(t.TempDir(), "tok")
	if err := os.WriteFile(f, []byte("from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := LoadRotate(map[string]string{
		"ASTRO_API_URL":                 "http://127.0.0.1:8888/v1",
		"ASTRO_ORGANIZATION_ID":         "clorg",
		"ASTRO_ORGANIZATION_TOKEN_FILE": f,
		"ASTRO_STS_LOG_LEVEL":           "debug",
		"GITHUB_TOKEN":                  "ghp_x",
		// The broker's own settings mean nothing here, and are not checked.
		"ASTRO_STS_REAP_INTERVAL": "soon",
	})
	if err != nil {
		t.Fatal(err)
	}
	want := Rotate{
		LogLevel: "debug",
		Astro:    Astro{APIURL: "http://127.0.0.1:8888/v1", OrganizationID: "clorg", TokenFile: f, TokenFromFile: "from-file"},
		Sinks: sink.Config{
			Vault:  sink.VaultConfig{Auth: sink.VaultAuthToken},
			GitHub: sink.GitHubConfig{Token: "ghp_x", APIURL: sink.DefaultGitHubAPIURL},
		},
	}
	if d := cmp.Diff(want, c); d != "" {
		t.Errorf("LoadRotate (-want +got):\n%s", d)
	}
	if c.Astro.OrganizationToken() != "from-file" {
		t.Errorf("token from file not read and trimmed")
	}
}

// The Astro section is the broker's and the rotate command's alike: the
// same rules, the same messages, every problem at once.
func TestAstroSectionShared(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		env  map[string]string
		want []string
	}{
		{"nothing", map[string]string{}, []string{
			"ASTRO_ORGANIZATION_ID is required",
			"one of ASTRO_ORGANIZATION_TOKEN or ASTRO_ORGANIZATION_TOKEN_FILE is required",
		}},
		{"an empty token file and a lax URL", map[string]string{
			"ASTRO_API_URL": "https://u:hunter2@api.astronomer.io/v1", "ASTRO_ORGANIZATION_ID": "o", "ASTRO_ORGANIZATION_TOKEN_FILE": empty,
		}, []string{
			"ASTRO_API_URL: must not contain user information",
			fmt.Sprintf("ASTRO_ORGANIZATION_TOKEN_FILE %q is empty", empty),
		}},
		{"the token wins over the file", map[string]string{
			"ASTRO_ORGANIZATION_ID": "o", "ASTRO_ORGANIZATION_TOKEN": "t", "ASTRO_ORGANIZATION_TOKEN_FILE": empty,
		}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, rerr := LoadRotate(tc.env)
			b := maps.Clone(validEnv())
			for _, k := range []string{"ASTRO_ORGANIZATION_ID", "ASTRO_ORGANIZATION_TOKEN"} {
				delete(b, k)
			}
			maps.Copy(b, tc.env)
			_, berr := LoadBroker(b)
			for _, err := range []error{rerr, berr} {
				if d := cmp.Diff(tc.want, leaves(err)); d != "" {
					t.Errorf("(-want +got):\n%s", d)
				}
				if strings.Contains(fmt.Sprint(err), "hunter2") {
					t.Errorf("error shows the URL's password: %v", err)
				}
			}
		})
	}
}

// A value that does not parse is named by its variable, never shown, and
// reported with every other one that does not parse.
func TestParseErrorsNameTheVariable(t *testing.T) {
	e := validEnv()
	e["ASTRO_STS_REAP_INTERVAL"] = "soon"
	e["ASTRO_STS_REPLAY_CACHE_SIZE"] = "many"
	e["GITHUB_APP_ID"] = "hunter2"
	e["ASTRO_ORGANIZATION_TOKEN_FILE"] = filepath.Join(t.TempDir(), "missing")
	_, err := LoadBroker(e)
	got := leaves(err)
	want := []string{
		"ASTRO_STS_REAP_INTERVAL: want a duration such as 30s",
		"ASTRO_STS_REPLAY_CACHE_SIZE: want int",
		"ASTRO_ORGANIZATION_TOKEN_FILE: open " + e["ASTRO_ORGANIZATION_TOKEN_FILE"] + ": no such file or directory",
		"GITHUB_APP_ID: want int64",
	}
	if d := cmp.Diff(want, got, cmpopts.SortSlices(func(a, b string) bool { return a < b })); d != "" {
		t.Errorf("(-want +got):\n%s", d)
	}
	if strings.Contains(fmt.Sprint(err), "hunter2") {
		t.Errorf("error shows a value: %v", err)
	}
}

// leaves flattens an errors.Join tree into its messages.
func leaves(err error) []string {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []string
		for _, e := range j.Unwrap() {
			out = append(out, leaves(e)...)
		}
		return out
	}
	return []string{err.Error()}
}

// The timeouts must form a chain, and the concurrency bounds nest: each
// broken link is reported, with the variables it involves.
func TestTimeoutChain(t *testing.T) {
	for _, tc := range []struct {
		name string
		set  map[string]string
		want []string // "" means valid
	}{
		{"defaults", nil, nil},
		{"short and consistent", map[string]string{"ASTRO_STS_ASTRO_TIMEOUT": "1s", "ASTRO_STS_REQUEST_TIMEOUT": "2s", "ASTRO_STS_SHUTDOWN_GRACE": "3s"}, nil},
		{"request not longer than an Astro call", map[string]string{"ASTRO_STS_ASTRO_TIMEOUT": "15s"}, []string{"ASTRO_STS_REQUEST_TIMEOUT (15s) must be longer than ASTRO_STS_ASTRO_TIMEOUT (15s)"}},
		{"request as long as the action waits", map[string]string{"ASTRO_STS_REQUEST_TIMEOUT": "30s", "ASTRO_STS_SHUTDOWN_GRACE": "40s"}, []string{"shorter than the action's 30s per call"}},
		{"grace not longer than a request", map[string]string{"ASTRO_STS_SHUTDOWN_GRACE": "15s"}, []string{"ASTRO_STS_SHUTDOWN_GRACE (15s) must be longer than ASTRO_STS_REQUEST_TIMEOUT (15s)"}},
		{"tiny Astro timeout", map[string]string{"ASTRO_STS_ASTRO_TIMEOUT": "1ms"}, []string{"ASTRO_STS_ASTRO_TIMEOUT must be at least 1s, got 1ms"}},
		{"Astro timeout under the floor", map[string]string{"ASTRO_STS_ASTRO_TIMEOUT": "100ms", "ASTRO_STS_REQUEST_TIMEOUT": "2s", "ASTRO_STS_SHUTDOWN_GRACE": "3s"}, []string{"ASTRO_STS_ASTRO_TIMEOUT must be at least 1s, got 100ms"}},
		{"exit bound at the budget", map[string]string{"ASTRO_STS_SHUTDOWN_GRACE": "25s"}, nil},
		{"exit bound over the budget", map[string]string{"ASTRO_STS_SHUTDOWN_GRACE": "60s"}, []string{"ASTRO_STS_SHUTDOWN_GRACE (1m0s) plus twice ASTRO_STS_ASTRO_TIMEOUT (10s) is 1m20s", "must be at most 45s"}},
		{"exit bound over the budget by the Astro timeout", map[string]string{"ASTRO_STS_ASTRO_TIMEOUT": "14s", "ASTRO_STS_REQUEST_TIMEOUT": "20s", "ASTRO_STS_SHUTDOWN_GRACE": "25s"}, []string{"is 53s", "must be at most 45s"}},
		{"reap interval just under a day", map[string]string{"ASTRO_STS_REAP_INTERVAL": "23h59m"}, nil},
		{"reap interval of a day", map[string]string{"ASTRO_STS_REAP_INTERVAL": "24h"}, []string{"ASTRO_STS_REAP_INTERVAL must be at least 1s and under 24h0m0s", "got 24h0m0s"}},
		{"reap interval of two days", map[string]string{"ASTRO_STS_REAP_INTERVAL": "48h"}, []string{"ASTRO_STS_REAP_INTERVAL must be at least 1s and under 24h0m0s", "got 48h0m0s"}},
		{"every limit at once", map[string]string{"ASTRO_STS_ASTRO_TIMEOUT": "100ms", "ASTRO_STS_REQUEST_TIMEOUT": "29s", "ASTRO_STS_SHUTDOWN_GRACE": "80s", "ASTRO_STS_REAP_INTERVAL": "48h"},
			[]string{"ASTRO_STS_ASTRO_TIMEOUT must be at least 1s", "is 1m20.2s", "ASTRO_STS_REAP_INTERVAL must be"}},
		{"reap concurrency above the bound", map[string]string{"ASTRO_STS_ASTRO_CONCURRENCY": "4", "ASTRO_STS_REAP_CONCURRENCY": "5"}, []string{"ASTRO_STS_REAP_CONCURRENCY must be 1..ASTRO_STS_ASTRO_CONCURRENCY (4), got 5"}},
		{"no Astro calls", map[string]string{"ASTRO_STS_ASTRO_CONCURRENCY": "0", "ASTRO_STS_REAP_CONCURRENCY": "0"}, []string{"ASTRO_STS_ASTRO_CONCURRENCY must be positive", "ASTRO_STS_REAP_CONCURRENCY must be 1.."}},
		{"revoke budget", map[string]string{"ASTRO_STS_REVOKE_RATE_LIMIT": "10/15m"}, nil},
		{"no revoke budget", map[string]string{"ASTRO_STS_REVOKE_RATE_LIMIT": "none"}, []string{`ASTRO_STS_REVOKE_RATE_LIMIT "none" is not COUNT/PERIOD`}},
		{"revoke budget of nothing", map[string]string{"ASTRO_STS_REVOKE_RATE_LIMIT": "0/h"}, []string{`ASTRO_STS_REVOKE_RATE_LIMIT "0/h" count is not a whole number`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := validEnv()
			maps.Copy(env, tc.set)
			_, err := LoadBroker(env)
			if len(tc.want) == 0 {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
		})
	}
}

// The revoke budget reaches the broker as the policy would read the same
// rate: COUNT per PERIOD, burst COUNT.
func TestRevokeLimit(t *testing.T) {
	env := validEnv()
	env["ASTRO_STS_REVOKE_RATE_LIMIT"] = "10/15m"
	c, err := LoadBroker(env)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(policy.RateLimit{Rate: 10, Period: 15 * time.Minute, Burst: 10}, c.RevokeLimit()); d != "" {
		t.Errorf("RevokeLimit (-want +got):\n%s", d)
	}
}
