package sink_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/astro-sts/astro-sts/internal/sink"
)

// TestNames: the one set of naming rules. The cases marked "differed" are
// those on which the policy's copy and the sink's copy of the rules
// disagreed before they became one; the answer now is GitHub's or Vault's.
func TestNames(t *testing.T) {
	tests := []struct {
		name  string
		check func(string) bool
		in    string
		want  bool
	}{
		{"repository", sink.ValidRepository, "acme/dags", true},
		{"repository with dots and underscores in the name", sink.ValidRepository, "acme/my_repo.v2-x", true},
		{"repository without owner", sink.ValidRepository, "acme", false},
		{"repository with three parts", sink.ValidRepository, "acme/dags/x", false},
		{"owner of 39 characters", sink.ValidRepository, strings.Repeat("a", 39) + "/dags", true},
		// differed: the sink took '.' and '_' anywhere in a login and any
		// length; GitHub logins are letters, digits and hyphens, up to 39.
		{"differed: owner with a dot", sink.ValidRepository, "acme.corp/dags", false},
		{"differed: owner of 40 characters", sink.ValidRepository, strings.Repeat("a", 40) + "/dags", false},
		{"differed: owner starting with a hyphen", sink.ValidRepository, "-acme/dags", false},
		// differed: the policy refused a managed user's login, which
		// GitHub spells handle_shortcode.
		{"differed: managed user owner", sink.ValidRepository, "mona-lisa_acme/dags", true},
		{"managed user login of 40 characters", sink.ValidRepository, strings.Repeat("a", 35) + "_acme/dags", false},
		{"differed: repository name of 101 characters", sink.ValidRepository, "acme/" + strings.Repeat("a", 101), false},
		{"repository name of 100 characters", sink.ValidRepository, "acme/" + strings.Repeat("a", 100), true},
		// Both copies took these; GitHub refuses them, and go-github would
		// put them in a URL path as they are.
		{"repository named ..", sink.ValidRepository, "acme/..", false},
		{"repository named .", sink.ValidRepository, "acme/.", false},
		{"repository name with a space", sink.ValidRepository, "acme/my dags", false},

		{"organization", sink.ValidOrganization, "acme-corp", true},
		{"differed: organization with an underscore", sink.ValidOrganization, "acme_corp", false},
		{"differed: organization with a dot", sink.ValidOrganization, "acme.corp", false},
		{"differed: organization of 40 characters", sink.ValidOrganization, strings.Repeat("a", 40), false},

		{"environment", sink.ValidEnvironment, "production eu", true},
		{"environment of 255 characters", sink.ValidEnvironment, strings.Repeat("é", 255), true},
		{"empty environment", sink.ValidEnvironment, "", false},
		// differed: the policy took spaces around a name, the sink refused
		// them; the sink took control characters and any length, the
		// policy refused them.
		{"differed: environment with a trailing space", sink.ValidEnvironment, "prod ", false},
		{"differed: environment with a newline", sink.ValidEnvironment, "prod\nx", false},
		{"differed: environment with a tab", sink.ValidEnvironment, "prod\tx", false},
		{"differed: environment of 256 characters", sink.ValidEnvironment, strings.Repeat("a", 256), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.check(tt.in); got != tt.want {
				t.Errorf("%q: %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}

func TestCheckSecretName(t *testing.T) {
	tests := []struct {
		in   string
		ok   bool
		is   error
		desc string
	}{
		{in: "ASTRO_API_TOKEN", ok: true},
		{in: "_x1", ok: true},
		{in: strings.Repeat("A", 255), ok: true},
		{in: "1TOKEN", desc: "starts with a digit"},
		{in: "ASTRO-TOKEN", desc: "a dash"},
		{in: "", desc: "empty"},
		{in: "github_token", is: sink.ErrReservedSecretName, desc: "reserved, case-insensitively"},
		// differed: the sink had no bound on the length.
		{in: strings.Repeat("A", 256), desc: "differed: 256 characters"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			err := sink.CheckSecretName(tt.in)
			if (err == nil) != tt.ok {
				t.Fatalf("CheckSecretName(%q) = %v, want ok=%v (%s)", tt.in, err, tt.ok, tt.desc)
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("CheckSecretName(%q) = %v, want %v", tt.in, err, tt.is)
			}
			if err != nil && tt.in != "" && strings.Contains(err.Error(), tt.in) {
				t.Errorf("the error %q repeats the name", err)
			}
		})
	}
}

func TestCheckVaultNames(t *testing.T) {
	tests := []struct {
		name  string
		check func(string) error
		in    string
		ok    bool
	}{
		{"path", sink.CheckVaultPath, "astro/airflow-ci", true},
		{"mount with a slash", sink.CheckVaultPath, "team/kv", true},
		{"path with @", sink.CheckVaultPath, "ci@prod", true},
		// differed: the policy allowed only letters, digits and "_.@-";
		// Vault takes any character in a KV path.
		{"differed: path with a space", sink.CheckVaultPath, "team a/ci", true},
		{"differed: path with a plus", sink.CheckVaultPath, "ci+prod", true},
		{"differed: path with a non-ASCII letter", sink.CheckVaultPath, "équipe/ci", true},
		{"differed: field with a colon", sink.CheckVaultField, "token:v2", true},
		// differed: the sink took control characters and any length.
		{"differed: path with a newline", sink.CheckVaultPath, "a\nb", false},
		{"differed: path of 513 bytes", sink.CheckVaultPath, strings.Repeat("a", 513), false},
		{"path of 512 bytes", sink.CheckVaultPath, strings.Repeat("a", 512), true},
		{"empty path", sink.CheckVaultPath, "", false},
		{"leading slash", sink.CheckVaultPath, "/a", false},
		{"trailing slash", sink.CheckVaultPath, "a/", false},
		{"empty segment", sink.CheckVaultPath, "a//b", false},
		{"dot-dot segment", sink.CheckVaultPath, "a/../b", false},
		{"dot segment", sink.CheckVaultPath, "./a", false},
		{"field", sink.CheckVaultField, "token", true},
		{"field with a slash", sink.CheckVaultField, "f/g", false},
		{"field ..", sink.CheckVaultField, "..", false},
		{"empty field", sink.CheckVaultField, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.check(tt.in); (err == nil) != tt.ok {
				t.Errorf("%q: %v, want ok=%v", tt.in, err, tt.ok)
			}
		})
	}
}

// FuzzNames: the rules never panic, and what they accept holds none of
// the characters that would change a URL path or a log line.
func FuzzNames(f *testing.F) {
	for _, s := range []string{"acme/dags", "acme/..", "mona_acme/x", "team a/ci", "a\nb", "GITHUB_X", "prod "} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if sink.ValidRepository(s) && (strings.ContainsAny(s, " \n%?#\\") || strings.Count(s, "/") != 1) {
			t.Fatalf("ValidRepository(%q)", s)
		}
		if sink.ValidOrganization(s) && strings.ContainsAny(s, "/._ ") {
			t.Fatalf("ValidOrganization(%q)", s)
		}
		if sink.CheckSecretName(s) == nil && !strings.ContainsAny(s[:1], "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_") {
			t.Fatalf("CheckSecretName(%q) = nil", s)
		}
		if sink.CheckVaultPath(s) == nil && (strings.Contains("/"+s+"/", "/../") || strings.ContainsAny(s, "\n\r\x00")) {
			t.Fatalf("CheckVaultPath(%q) = nil", s)
		}
		_ = sink.ValidEnvironment(s)
		_ = sink.CheckVaultField(s)
	})
}
