package rotation

import (
	"regexp"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"

	"github.com/astro-sts/astro-sts/internal/astro"
	"github.com/astro-sts/astro-sts/internal/policy"
)

func TestWithLineage(t *testing.T) {
	r := &policy.Rotation{Name: "airflow-ci", TokenID: "cltoken1"}
	const mark = "astro-sts-rotation=airflow-ci/cltoken1"
	tests := []struct {
		name, in, want string
	}{
		{"empty", "", mark},
		{"human text kept", "Airflow CI", "Airflow CI " + mark},
		{"mark refreshed, not repeated", "Airflow CI " + mark, "Airflow CI " + mark},
		{"another rotation's mark replaced", "Airflow CI astro-sts-rotation=old/clx", "Airflow CI " + mark},
		{"trailing spaces", "Airflow CI   ", "Airflow CI " + mark},
		{"shortened to 500", strings.Repeat("a", 600), strings.Repeat("a", 500-len(mark)-1) + " " + mark},
		{"shortened on a character boundary", strings.Repeat("é", 500), strings.Repeat("é", 500-len(mark)-1) + " " + mark},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := withLineage(tt.in, r)
			if d := cmp.Diff(tt.want, got); d != "" {
				t.Errorf("withLineage (-want +got):\n%s", d)
			}
			if lineage(got) != lineageMark(r) {
				t.Errorf("lineage(%q) = %q", got, lineage(got))
			}
		})
	}
}

func TestLineage(t *testing.T) {
	tests := map[string]string{
		"":                                "",
		"made by hand":                    "",
		"x astro-sts-rotation=a/b":        "a/b",
		"astro-sts-rotation=a/b trailing": "a/b",
		"astro-sts-rotation=a/b astro-sts-rotation=c/d": "c/d",
	}
	for in, want := range tests {
		if got := lineage(in); got != want {
			t.Errorf("lineage(%q) = %q, want %q", in, got, want)
		}
	}
}

// The policy's rules for rotation names and token ids.
var (
	fuzzNameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)
	fuzzIDRE   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$`)
)

// FuzzWithLineage: whatever the description Astro hands back, the marked
// one fits Astro's limit, is valid UTF-8 and carries exactly our mark.
func FuzzWithLineage(f *testing.F) {
	f.Add("Airflow CI", "airflow-ci", "cltoken")
	f.Add(strings.Repeat("é", 499)+"astro-sts-rotation=", "a", "b")
	f.Add("\xff\xfe", "n", "id")
	f.Fuzz(func(t *testing.T, desc, name, id string) {
		if !fuzzNameRE.MatchString(name) || !fuzzIDRE.MatchString(id) {
			return // the policy refuses such names and ids
		}
		r := &policy.Rotation{Name: name, TokenID: id}
		got := withLineage(desc, r)
		if n := utf8.RuneCountInString(got); n > maxDescription {
			t.Fatalf("%d characters", n)
		}
		if !utf8.ValidString(got) {
			t.Fatalf("invalid UTF-8: %q", got)
		}
		if lineage(got) != lineageMark(r) {
			t.Fatalf("lineage(%q) = %q, want %q", got, lineage(got), lineageMark(r))
		}
		if withLineage(got, r) != got {
			t.Fatalf("not idempotent: %q", got)
		}
	})
}

func TestLikeToken(t *testing.T) {
	days := 30
	org := astro.TokenRole{EntityID: "org", EntityType: astro.EntityOrganization, Role: astro.RoleOrganizationMember}
	ws := astro.TokenRole{EntityID: "ws1", EntityType: astro.EntityWorkspace, Role: astro.RoleWorkspaceAuthor}
	dep := astro.TokenRole{EntityID: "dep1", EntityType: astro.EntityDeployment, Role: astro.RoleDeploymentAdmin}
	tests := []struct {
		name      string
		tok       astro.Token
		wantReq   astro.CreateTokenRequest
		wantRoles []astro.TokenRole
		wantErr   bool
	}{
		{
			name:    "workspace",
			tok:     astro.Token{ID: "t", Name: "n", Scope: astro.ScopeWorkspace, ExpiryPeriodInDays: &days, Roles: []astro.TokenRole{ws}},
			wantReq: astro.CreateTokenRequest{Name: "n", Scope: astro.ScopeWorkspace, Role: astro.RoleWorkspaceAuthor, EntityID: "ws1", TokenExpiryPeriodInDays: &days},
		},
		{
			name:    "deployment",
			tok:     astro.Token{ID: "t", Name: "n", Scope: astro.ScopeDeployment, Roles: []astro.TokenRole{dep}},
			wantReq: astro.CreateTokenRequest{Name: "n", Scope: astro.ScopeDeployment, Role: astro.RoleDeploymentAdmin, EntityID: "dep1"},
		},
		{
			name:    "organization alone",
			tok:     astro.Token{ID: "t", Name: "n", Scope: astro.ScopeOrganization, Roles: []astro.TokenRole{org}},
			wantReq: astro.CreateTokenRequest{Name: "n", Scope: astro.ScopeOrganization, Role: astro.RoleOrganizationMember},
		},
		{
			name:      "organization with workspace roles, org role listed last",
			tok:       astro.Token{ID: "t", Name: "n", Scope: astro.ScopeOrganization, Roles: []astro.TokenRole{ws, dep, org}},
			wantReq:   astro.CreateTokenRequest{Name: "n", Scope: astro.ScopeOrganization, Role: astro.RoleOrganizationMember},
			wantRoles: []astro.TokenRole{ws, dep, org},
		},
		{name: "workspace token without its role", tok: astro.Token{ID: "t", Scope: astro.ScopeWorkspace, Roles: []astro.TokenRole{org}}, wantErr: true},
		{name: "unknown scope", tok: astro.Token{ID: "t", Scope: "TEAM"}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, roles, err := likeToken(&tt.tok, "org")
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			if err != nil {
				return
			}
			if d := cmp.Diff(tt.wantReq, req); d != "" {
				t.Errorf("request (-want +got):\n%s", d)
			}
			if d := cmp.Diff(tt.wantRoles, roles); d != "" {
				t.Errorf("roles (-want +got):\n%s", d)
			}
		})
	}
}
