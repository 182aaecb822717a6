package policy_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/astro-sts/astro-sts/internal/idtoken"
	"github.com/astro-sts/astro-sts/internal/issuer"
	"github.com/astro-sts/astro-sts/internal/policy"
)

// This file holds the policy to the tokens GitHub sends since its OIDC
// changes of 2025-2026: the immutable sub (owner and repository ids next to
// their names, "-" or "@" between), repo_property_* claims and
// check_run_id. The claims come from real tokens, minted by the test issuer
// and verified by idtoken, so that what the policy sees is what the broker
// would.

const githubAudience = "https://astro-sts.example.com"

// verifiedClaims mints c, verifies it as the broker does, and returns the
// string claims the policy matches on.
func verifiedClaims(t *testing.T, iss *issuer.Issuer, c issuer.Claims) policy.Claims {
	t.Helper()
	c.Audience = githubAudience
	raw, err := iss.Mint(c)
	if err != nil {
		t.Fatal(err)
	}
	v, err := idtoken.New(idtoken.Config{Issuers: []string{iss.URL()}, Audience: githubAudience})
	if err != nil {
		t.Fatal(err)
	}
	vc, err := v.Verify(t.Context(), raw)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	return policy.Claims(vc.Strings)
}

func startIssuer(t *testing.T) *issuer.Issuer {
	t.Helper()
	iss, err := issuer.Start(issuer.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { iss.Close() })
	return iss
}

// TestBothSubFormats: a rule on the numeric ids trusts the same repository
// whichever sub format its tokens use; a rule on the classic sub stops
// matching the immutable one, which is what validate warns about.
func TestBothSubFormats(t *testing.T) {
	iss := startIssuer(t)
	classic := verifiedClaims(t, iss, issuer.DefaultClaims())
	dash := verifiedClaims(t, iss, issuer.ImmutableClaims("-"))
	at := verifiedClaims(t, iss, issuer.ImmutableClaims("@"))
	for name, want := range map[string]string{
		"classic": "repo:acme/dags:environment:production",
		"dash":    "repo:acme-65/dags-123456:environment:production",
		"at":      "repo:acme@65/dags@123456:environment:production",
	} {
		got := map[string]policy.Claims{"classic": classic, "dash": dash, "at": at}[name]["sub"]
		if got != want {
			t.Fatalf("%s sub = %q, want %q", name, got, want)
		}
	}

	p := mustParse(t, `
rules:
  - name: by-ids
    match:
      repository_owner_id: "65"
      repository_id: "123456"
      environment: production
      event_name: push
    grant: {workspaces: [ws-prod], max_role: WORKSPACE_AUTHOR, max_ttl: 30m}
`)
	for name, c := range map[string]policy.Claims{"classic": classic, "dash": dash, "at": at} {
		if d, err := p.Decide(c, policy.Request{}); err != nil || d.Rule != "by-ids" {
			t.Errorf("%s sub: Decide = %+v, %v; want rule by-ids", name, d, err)
		}
	}

	bySub := mustParse(t, `
rules:
  - name: by-sub
    match:
      sub: "repo:acme/dags:environment:production"
      environment: production
      event_name: push
    grant: {workspaces: [ws-prod], max_role: WORKSPACE_AUTHOR, max_ttl: 30m}
`)
	if _, err := bySub.Decide(classic, policy.Request{}); err != nil {
		t.Errorf("classic sub: %v", err)
	}
	for name, c := range map[string]policy.Claims{"dash": dash, "at": at} {
		if _, err := bySub.Decide(c, policy.Request{}); !errors.Is(err, policy.ErrNoMatchingRule) {
			t.Errorf("%s sub under a classic sub rule: %v, want no match", name, err)
		}
	}
	if w := bySub.Warnings(); len(w) != 1 || !strings.Contains(w[0].Message, "immutable sub") {
		t.Errorf("Warnings = %v, want one about the immutable sub", w)
	}
}

// TestRepoPropertyClaims: a repository custom property, whatever the case
// and punctuation of its name, arrives in a verified token and is matched
// like any string claim: the documented rule trusts every repository of
// one owner whose astro-team property is data.
func TestRepoPropertyClaims(t *testing.T) {
	iss := startIssuer(t)
	p := mustParse(t, `
rules:
  - name: team-data
    match:
      repository_owner_id: "65"
      repo_property_astro-team: data
      ref: refs/heads/main
      event_name: [push, workflow_dispatch]
    grant: {workspaces: [ws-data], max_role: WORKSPACE_AUTHOR, max_ttl: 30m}
  - name: capitals
    match:
      repository_owner_id: "65"
      repo_property_Astro-Team: data
      ref: refs/heads/main
      event_name: push
    grant: {workspaces: [ws-caps], max_role: WORKSPACE_AUTHOR, max_ttl: 30m}
`)
	if w := p.Warnings(); len(w) != 0 {
		t.Errorf("Warnings = %v", w)
	}
	other := issuer.ImmutableClaims("@")
	other.Repository, other.RepositoryID = "acme/warehouse", "777"
	capitals := issuer.DefaultClaims()
	capitals.Extra = map[string]any{"repo_property_Astro-Team": "data"}
	elsewhere := issuer.ImmutableClaims("@")
	elsewhere.RepositoryOwner, elsewhere.RepositoryOwnerID, elsewhere.Repository = "evil", "66", "evil/dags"
	wrongTeam := issuer.ImmutableClaims("@")
	wrongTeam.Extra = map[string]any{"repo_property_astro-team": "web"}

	tests := []struct {
		name   string
		claims issuer.Claims
		want   string // the deciding rule, or "" for no match
	}{
		{"the property, immutable sub", issuer.ImmutableClaims("@"), "team-data"},
		{"another repository of the team", other, "team-data"},
		{"a capitalised property name", capitals, "capitals"},
		{"the property under another owner", elsewhere, ""},
		{"another team", wrongTeam, ""},
		{"no property", issuer.DefaultClaims(), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := verifiedClaims(t, iss, tt.claims)
			d, err := p.Decide(c, policy.Request{})
			switch {
			case tt.want == "" && !errors.Is(err, policy.ErrNoMatchingRule):
				t.Errorf("Decide = %+v, %v; want no match", d, err)
			case tt.want != "" && (err != nil || d.Rule != tt.want):
				t.Errorf("Decide = %+v, %v; want rule %s", d, err, tt.want)
			}
		})
	}
}

// TestClaimNames: every name a GitHub token can carry can be matched,
// custom properties with capitals, '-', '$' or '#' included; anything else
// is still a mistake the file is refused for.
func TestClaimNames(t *testing.T) {
	for _, name := range []string{"check_run_id", "repo_property_astro-team", "repo_property_Astro-Team", "repo_property_cost$center", "repo_property_tier#1", "repo_property_" + strings.Repeat("A", 75)} {
		src := "rules:\n  - name: r\n    match: {repository_id: \"1\", ref: refs/heads/main, event_name: push, \"" + name + "\": x}\n    grant: {workspaces: [ws], max_role: WORKSPACE_MEMBER, max_ttl: 5m}\n"
		p, err := policy.Parse([]byte(src))
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		c := policy.Claims{"repository_id": "1", "ref": "refs/heads/main", "event_name": "push", name: "x"}
		if _, err := p.Decide(c, policy.Request{}); err != nil {
			t.Errorf("%s: Decide: %v", name, err)
		}
	}
	for _, name := range []string{"Repo-ID", "repository-id", "Repository_id", "repo_property_a b", "repo_property_a.b", "repo_property_" + strings.Repeat("A", 76), "REPO_PROPERTY_team"} {
		src := "rules:\n  - name: r\n    match: {repository_id: \"1\", \"" + name + "\": x}\n    grant: {workspaces: [ws], max_role: WORKSPACE_MEMBER, max_ttl: 5m}\n"
		if _, err := policy.Parse([]byte(src)); err == nil || !strings.Contains(err.Error(), "is not a claim name") {
			t.Errorf("%q: err = %v, want not a claim name", name, err)
		}
	}
	// Only match and allow blocks take claim names: everywhere else an
	// unknown key is still an error.
	for _, src := range []string{
		"repo_property_team: data\nrules: []\n",
		"rules:\n  - name: r\n    match: {repository_id: \"1\"}\n    grant: {workspaces: [ws], max_role: WORKSPACE_MEMBER, max_ttl: 5m}\n    repo_property_team: data\n",
		"rules:\n  - name: r\n    match: {repository_id: \"1\"}\n    grant: {workspaces: [ws], max_role: WORKSPACE_MEMBER, max_ttl: 5m, check_run_id: \"1\"}\n",
	} {
		if _, err := policy.Parse([]byte(src)); err == nil || !strings.Contains(err.Error(), "unknown key") {
			t.Errorf("Parse(%q) = %v, want an unknown key", src, err)
		}
	}
}

// TestSubWarnings: validate warns on a sub that names an owner or
// repository without the ids, whichever matcher writes it, and not on one
// that carries them in either separator.
func TestSubWarnings(t *testing.T) {
	tests := []struct {
		sub  string
		ids  bool // the rule also binds repository_id
		want string
	}{
		{`"repo:acme/dags:environment:production"`, true, "immutable sub"},
		{`"repo:acme/dags:environment:production"`, false, "a name can be freed"},
		{`{regex: "repo:acme/.*"}`, true, "immutable sub"},
		{`{glob: "repo:acme/*"}`, true, "immutable sub"},
		{`{glob: "repo:acme*"}`, true, "immutable sub"},
		{`"repo:acme@65/dags@123456:environment:production"`, true, ""},
		{`"repo:acme-65/dags-123456:environment:production"`, true, ""},
		{`"repo:acme-65/dags-123456:environment:production"`, false, `owner named "acme-65"`},
		{`{regex: "repo:acme-65/.*"}`, true, ""},
		{`{regex: "repo:acme-65/.*"}`, false, `owner named "acme-65"`},
		{`{regex: "repo:acme@65/dags@123456:.*"}`, false, ""},
		{`{glob: "repo:acme@65/*"}`, true, ""},
		{`{regex: "repo:acme[@-]65/.*"}`, true, ""},
		{`"repo:acme@65/dags:environment:production"`, true, "immutable sub"},
		{`{regex: ".*:environment:production"}`, true, ""},
		{`{regex: ".*:environment:production"}`, false, "sub without repository_id"},
	}
	for _, tt := range tests {
		ids := ""
		if tt.ids {
			ids = `repository_id: "123456", `
		}
		identity := ""
		if !tt.ids {
			identity = `repository: acme/dags, `
		}
		src := "rules:\n  - name: r\n    match: {" + ids + identity + "ref: refs/heads/main, event_name: push, sub: " + tt.sub + "}\n    grant: {workspaces: [ws], max_role: WORKSPACE_MEMBER, max_ttl: 5m}\n"
		p, err := policy.Parse([]byte(src))
		if err != nil {
			t.Errorf("%s: %v", tt.sub, err)
			continue
		}
		var got []string
		for _, w := range p.Warnings() {
			if strings.Contains(w.Message, "sub") && !strings.HasPrefix(w.Message, "repository without") {
				got = append(got, w.Message)
			}
		}
		switch {
		case tt.want == "" && len(got) > 0:
			t.Errorf("sub %s (ids %v): warnings %q, want none", tt.sub, tt.ids, got)
		case tt.want != "" && (len(got) != 1 || !strings.Contains(got[0], tt.want)):
			t.Errorf("sub %s (ids %v): warnings %q, want one saying %q", tt.sub, tt.ids, got, tt.want)
		case tt.want == "immutable sub" && !strings.Contains(got[0], "repository_owner_id and repository_id"):
			t.Errorf("sub %s: %q does not suggest the id claims", tt.sub, got[0])
		}
	}
}

// TestSuggestNeverUsesSub: the paste-ready rule binds the ids, never sub,
// so it trusts the job whichever sub format its repository moves to; and
// without the ids it is refused rather than falling back on sub.
func TestSuggestNeverUsesSub(t *testing.T) {
	iss := startIssuer(t)
	classic := verifiedClaims(t, iss, issuer.DefaultClaims())
	immutable := verifiedClaims(t, iss, issuer.ImmutableClaims("@"))
	for name, c := range map[string]policy.Claims{"classic": classic, "immutable": immutable} {
		rule, err := policy.Suggest(c, policy.Request{WorkspaceID: "ws-prod"})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if strings.Contains(rule, "sub:") || strings.Contains(rule, "repo:") {
			t.Errorf("%s: the suggested rule relies on sub:\n%s", name, rule)
		}
		p := mustParse(t, "rules:\n"+rule)
		for other, oc := range map[string]policy.Claims{"classic": classic, "immutable": immutable} {
			if _, err := p.Decide(oc, policy.Request{}); err != nil {
				t.Errorf("rule suggested for the %s sub refuses the %s sub: %v", name, other, err)
			}
		}
	}
	noIDs := policy.Claims{"sub": immutable["sub"], "repository": "acme/dags", "ref": "refs/heads/main"}
	if rule, err := policy.Suggest(noIDs, policy.Request{}); !errors.Is(err, policy.ErrNoIdentity) {
		t.Errorf("Suggest without ids = %q, %v; want ErrNoIdentity", rule, err)
	}
}

// Check that the two fixtures differ only in sub and the property, so that
// a test passing with one and failing with the other is about those.
func TestImmutableFixture(t *testing.T) {
	c, d := issuer.ImmutableClaims("@"), issuer.DefaultClaims()
	c.Subject, c.Extra = d.Subject, nil
	if diff := cmp.Diff(d, c); diff != "" {
		t.Errorf("ImmutableClaims differs from DefaultClaims beyond sub and Extra:\n%s", diff)
	}
}
