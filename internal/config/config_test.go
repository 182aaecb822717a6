package config

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
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
		Addr:              ":8080",
		Audience:          "https://sts.example.com",
		Issuers:           []string{DefaultIssuer},
		PolicyFile:        "/etc/astro-sts/policy.yaml",
		AstroAPIURL:       "https://api.astronomer.io/v1",
		OrganizationID:    "clorg",
		OrganizationToken: "value",
		ReapInterval:      30 * time.Second,
		PolicyInterval:    10 * time.Second,
		LogLevel:          "info",
		ReplayCacheSize:   100000,
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
	if c.OrganizationToken != "from-file" {
		t.Errorf("token from file not read and trimmed")
	}
	want := []string{DefaultIssuer, DefaultIssuer + "/acme", "http://127.0.0.1:9000"}
	if d := cmp.Diff(want, c.Issuers); d != "" {
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
// use them: a URL with user information or a query used to pass here and
// fail later, or never.
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
	c.OrganizationToken = "secret-org-token"
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
