package policy_test

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/astro-sts/astro-sts/internal/astro"
	"github.com/astro-sts/astro-sts/internal/policy"
)

const basePolicy = `
rules:
  - name: deploy-main
    match:
      repository_id: "123456"
      ref: refs/heads/main
      event_name: [push, workflow_dispatch]
      job_workflow_ref: {glob: "acme/dags/.github/workflows/*.yml@refs/heads/main"}
    grant:
      workspaces: [ws-prod]
      max_role: WORKSPACE_OPERATOR
      max_ttl: 30m
  - name: preview
    match:
      sub: {regex: "repo:acme/dags:pull_request|repo:acme/dags:ref:refs/heads/feature/.+"}
    grant:
      workspaces: [ws-dev, ws-staging]
      max_role: WORKSPACE_AUTHOR
      max_ttl: 1h
  - name: deploy-only
    match:
      repository_owner_id: 65
      environment: production
      repository: [acme/dags, {glob: "acme/dags-*"}]
    grant:
      deployments: [dep-1, dep-2]
      max_ttl: 15m
`

func mustParse(t testing.TB, src string) *policy.Policy {
	t.Helper()
	p, err := policy.Parse([]byte(src))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return p
}

// mainClaims are the claims of a push to main of acme/dags, as the
// verifier passes them (idtoken Claims.Strings).
func mainClaims() policy.Claims {
	return policy.Claims{
		"iss":                 "https://token.actions.githubusercontent.com",
		"sub":                 "repo:acme/dags:ref:refs/heads/main",
		"repository":          "acme/dags",
		"repository_id":       "123456",
		"repository_owner":    "acme",
		"repository_owner_id": "65",
		"ref":                 "refs/heads/main",
		"event_name":          "push",
		"job_workflow_ref":    "acme/dags/.github/workflows/deploy.yml@refs/heads/main",
		"head_ref":            "",
	}
}

func with(c policy.Claims, kv ...string) policy.Claims {
	out := policy.Claims{}
	for k, v := range c {
		out[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		out[kv[i]] = kv[i+1]
	}
	return out
}

func without(c policy.Claims, keys ...string) policy.Claims {
	out := with(c)
	for _, k := range keys {
		delete(out, k)
	}
	return out
}

// outcome flattens a Decide result for cmp.Diff.
func outcome(d policy.Decision, err error) string {
	var we *policy.WidenError
	switch {
	case errors.As(err, &we):
		return fmt.Sprintf("widen %s/%s: %s", we.Rule, we.Field, err)
	case errors.Is(err, policy.ErrNoMatchingRule):
		return "no matching rule"
	case errors.Is(err, policy.ErrBadRequest):
		return "bad request: " + err.Error()
	case err != nil:
		return "unexpected error: " + err.Error()
	}
	return "allow " + d.Rule
}

func TestDecideMatchers(t *testing.T) {
	p := mustParse(t, basePolicy)
	tests := []struct {
		name   string
		claims policy.Claims
		want   string
	}{
		{"exact, list, glob all hold", mainClaims(), "allow deploy-main"},
		{"list: any of", with(mainClaims(), "event_name", "workflow_dispatch"), "allow deploy-main"},
		{"list: none of", with(mainClaims(), "event_name", "schedule"), "no matching rule"},
		{"exact: another repository id", with(mainClaims(), "repository_id", "1234567"), "no matching rule"},
		{"exact is case-sensitive", with(mainClaims(), "ref", "refs/heads/Main"), "no matching rule"},
		{"glob: another workflow file", with(mainClaims(), "job_workflow_ref", "acme/dags/.github/workflows/other.yml@refs/heads/main"), "allow deploy-main"},
		{"glob: * does not cross /", with(mainClaims(), "job_workflow_ref", "acme/dags/.github/workflows/x/y.yml@refs/heads/main"), "no matching rule"},
		{"glob: is anchored at the end", with(mainClaims(), "job_workflow_ref", "acme/dags/.github/workflows/deploy.yml@refs/heads/main2"), "no matching rule"},
		{"glob: reusable workflow from another repo", with(mainClaims(), "job_workflow_ref", "evil/dags/.github/workflows/deploy.yml@refs/heads/main"), "no matching rule"},
		{"missing claim never matches", without(mainClaims(), "ref"), "no matching rule"},
		{"regex: first alternative", with(mainClaims(), "sub", "repo:acme/dags:pull_request", "ref", "refs/pull/1/merge"), "allow preview"},
		{"regex: second alternative", with(mainClaims(), "sub", "repo:acme/dags:ref:refs/heads/feature/x", "ref", "refs/heads/feature/x"), "allow preview"},
		{"regex: alternation cannot escape the end anchor", with(mainClaims(), "sub", "repo:acme/dags:pull_request-evil", "ref", "x"), "no matching rule"},
		{"regex: alternation cannot escape the start anchor", with(mainClaims(), "sub", "evil:repo:acme/dags:ref:refs/heads/feature/x", "ref", "x"), "no matching rule"},
		{"regex: prefix of the other repo", with(mainClaims(), "sub", "repo:acme/dags-evil:pull_request", "ref", "x"), "no matching rule"},
		{"int in YAML matches the string claim; list mixes string and glob", policy.Claims{
			"repository_owner_id": "65", "environment": "production", "repository": "acme/dags-etl"}, "bad request: " + policy.ErrBadRequest.Error() + `: rule "deploy-only" grants several Deployments: ask for one with deployment_id`},
		{"empty claim does not match a non-empty value", policy.Claims{
			"repository_owner_id": "65", "environment": "", "repository": "acme/dags"}, "no matching rule"},
		{"no claims at all", policy.Claims{}, "no matching rule"},
		{"nil claims", nil, "no matching rule"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := outcome(p.Decide(tt.claims, policy.Request{}))
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestEmptyStringMatchesOnlyExplicitEmpty(t *testing.T) {
	p := mustParse(t, `
rules:
  - name: exact-empty
    match: {repository_id: "1", head_ref: ""}
    grant: {workspaces: [ws], max_role: WORKSPACE_MEMBER, max_ttl: 5m}
  - name: glob-star
    match: {repository_id: "2", base_ref: {glob: "*"}}
    grant: {workspaces: [ws], max_role: WORKSPACE_MEMBER, max_ttl: 5m}
  - name: regex-anything
    match: {repository_id: "3", base_ref: {regex: ".*"}}
    grant: {workspaces: [ws], max_role: WORKSPACE_MEMBER, max_ttl: 5m}
`)
	tests := []struct {
		claims policy.Claims
		want   string
	}{
		{policy.Claims{"repository_id": "1", "head_ref": ""}, "allow exact-empty"},
		{policy.Claims{"repository_id": "1"}, "no matching rule"},
		{policy.Claims{"repository_id": "1", "head_ref": "x"}, "no matching rule"},
		{policy.Claims{"repository_id": "2", "base_ref": "main"}, "allow glob-star"},
		{policy.Claims{"repository_id": "2", "base_ref": ""}, "no matching rule"},
		{policy.Claims{"repository_id": "3", "base_ref": "main"}, "allow regex-anything"},
		{policy.Claims{"repository_id": "3", "base_ref": ""}, "no matching rule"},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.claims), func(t *testing.T) {
			if diff := cmp.Diff(tt.want, outcome(p.Decide(tt.claims, policy.Request{}))); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestDecideNarrowing(t *testing.T) {
	p := mustParse(t, basePolicy)
	preview := with(mainClaims(), "sub", "repo:acme/dags:pull_request", "ref", "refs/pull/7/merge")
	deployOnly := policy.Claims{"repository_owner_id": "65", "environment": "production", "repository": "acme/dags"}
	type result struct {
		Decision policy.Decision
		Err      string
	}
	tests := []struct {
		name   string
		claims policy.Claims
		req    policy.Request
		want   result
	}{
		{"defaults: the grant's maximum", mainClaims(), policy.Request{},
			result{Decision: policy.Decision{Rule: "deploy-main", Scope: astro.ScopeWorkspace, WorkspaceID: "ws-prod", Role: "WORKSPACE_OPERATOR", TTL: 30 * time.Minute}}},
		{"narrower role and TTL, the granted Workspace", mainClaims(), policy.Request{WorkspaceID: "ws-prod", Role: "WORKSPACE_AUTHOR", TTL: 10 * time.Minute},
			result{Decision: policy.Decision{Rule: "deploy-main", Scope: astro.ScopeWorkspace, WorkspaceID: "ws-prod", Role: "WORKSPACE_AUTHOR", TTL: 10 * time.Minute}}},
		{"the maximum asked explicitly", mainClaims(), policy.Request{Role: "WORKSPACE_OPERATOR", TTL: 30 * time.Minute},
			result{Decision: policy.Decision{Rule: "deploy-main", Scope: astro.ScopeWorkspace, WorkspaceID: "ws-prod", Role: "WORKSPACE_OPERATOR", TTL: 30 * time.Minute}}},
		{"wider role", mainClaims(), policy.Request{Role: "WORKSPACE_OWNER"},
			result{Err: `role WORKSPACE_OWNER exceeds WORKSPACE_OPERATOR allowed by rule "deploy-main"`}},
		{"longer TTL", mainClaims(), policy.Request{TTL: 31 * time.Minute},
			result{Err: `ttl 31m0s exceeds 30m0s allowed by rule "deploy-main"`}},
		{"another Workspace", mainClaims(), policy.Request{WorkspaceID: "ws-other"},
			result{Err: `workspace_id "ws-other" is not granted by rule "deploy-main"`}},
		{"a Deployment on a Workspace grant", mainClaims(), policy.Request{DeploymentID: "dep-1"},
			result{Err: `deployment_id "dep-1" is not granted by rule "deploy-main"`}},
		{"DEPLOYMENT_ADMIN on a Workspace grant", mainClaims(), policy.Request{Role: "DEPLOYMENT_ADMIN"},
			result{Err: `role DEPLOYMENT_ADMIN is not granted by rule "deploy-main", which allows WORKSPACE_OPERATOR`}},
		{"several Workspaces: an Organization token with a role on each", preview, policy.Request{},
			result{Decision: policy.Decision{Rule: "preview", Scope: astro.ScopeOrganization, Role: "WORKSPACE_AUTHOR", TTL: time.Hour,
				WorkspaceRoles: map[string]string{"ws-dev": "WORKSPACE_AUTHOR", "ws-staging": "WORKSPACE_AUTHOR"}}}},
		{"several Workspaces, narrowed role", preview, policy.Request{Role: "WORKSPACE_ACCESSOR"},
			result{Decision: policy.Decision{Rule: "preview", Scope: astro.ScopeOrganization, Role: "WORKSPACE_ACCESSOR", TTL: time.Hour,
				WorkspaceRoles: map[string]string{"ws-dev": "WORKSPACE_ACCESSOR", "ws-staging": "WORKSPACE_ACCESSOR"}}}},
		{"several Workspaces, one asked", preview, policy.Request{WorkspaceID: "ws-staging"},
			result{Decision: policy.Decision{Rule: "preview", Scope: astro.ScopeWorkspace, WorkspaceID: "ws-staging", Role: "WORKSPACE_AUTHOR", TTL: time.Hour}}},
		{"Deployment grant, one asked", deployOnly, policy.Request{DeploymentID: "dep-2", Role: "DEPLOYMENT_ADMIN"},
			result{Decision: policy.Decision{Rule: "deploy-only", Scope: astro.ScopeDeployment, DeploymentID: "dep-2", Role: "DEPLOYMENT_ADMIN", TTL: 15 * time.Minute}}},
		{"Deployment grant, another Deployment", deployOnly, policy.Request{DeploymentID: "dep-3"},
			result{Err: `deployment_id "dep-3" is not granted by rule "deploy-only"`}},
		{"Deployment grant, a Workspace role", deployOnly, policy.Request{DeploymentID: "dep-1", Role: "WORKSPACE_ACCESSOR"},
			result{Err: `role WORKSPACE_ACCESSOR is not granted by rule "deploy-only", which allows DEPLOYMENT_ADMIN`}},
		{"Deployment grant, a Workspace", deployOnly, policy.Request{WorkspaceID: "ws-prod"},
			result{Err: `workspace_id "ws-prod" is not granted by rule "deploy-only"`}},
		{"Deployment grant, none asked of several", deployOnly, policy.Request{},
			result{Err: `policy: bad request: rule "deploy-only" grants several Deployments: ask for one with deployment_id`}},
		{"unknown role", mainClaims(), policy.Request{Role: "WORKSPACE_GOD"},
			result{Err: `policy: bad request: unknown role "WORKSPACE_GOD" (want a Workspace role or DEPLOYMENT_ADMIN)`}},
		{"an Organization role cannot be asked", mainClaims(), policy.Request{Role: "ORGANIZATION_OWNER"},
			result{Err: `policy: bad request: unknown role "ORGANIZATION_OWNER" (want a Workspace role or DEPLOYMENT_ADMIN)`}},
		{"garbage role is not echoed", mainClaims(), policy.Request{Role: "<script>"},
			result{Err: `policy: bad request: unknown role (malformed) (want a Workspace role or DEPLOYMENT_ADMIN)`}},
		{"negative TTL", mainClaims(), policy.Request{TTL: -time.Second},
			result{Err: `policy: bad request: ttl is negative`}},
		{"both ids", mainClaims(), policy.Request{WorkspaceID: "ws-prod", DeploymentID: "dep-1"},
			result{Err: `policy: bad request: ask for workspace_id or deployment_id, not both`}},
		{"malformed Workspace id", mainClaims(), policy.Request{WorkspaceID: "../x"},
			result{Err: `policy: bad request: workspace_id is not an Astro id`}},
		{"a bad request is refused even when no rule matches", policy.Claims{}, policy.Request{TTL: -1},
			result{Err: `policy: bad request: ttl is negative`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := p.Decide(tt.claims, tt.req)
			got := result{Decision: d}
			if err != nil {
				got.Err = err.Error()
				if d.Rule != "" {
					t.Errorf("a refusal returned a decision: %+v", d)
				}
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
			var we *policy.WidenError
			if err != nil && errors.As(err, &we) == errors.Is(err, policy.ErrBadRequest) {
				t.Errorf("error %v is neither (or both) a WidenError and ErrBadRequest", err)
			}
		})
	}
}

// TestFirstCoveringRuleWins: rules are tried in order; a rule that matches
// but does not cover the request gives way to a later one that does; if
// none covers, the first matching rule's refusal is returned.
func TestFirstCoveringRuleWins(t *testing.T) {
	p := mustParse(t, `
rules:
  - name: operators
    match: {repository_id: "123456"}
    grant: {workspaces: [ws-prod], max_role: WORKSPACE_OPERATOR, max_ttl: 30m}
  - name: owners-on-main
    match: {repository_id: "123456", ref: refs/heads/main}
    grant: {workspaces: [ws-prod], max_role: WORKSPACE_OWNER, max_ttl: 10m}
  - name: unrelated
    match: {repository_id: "999"}
    grant: {workspaces: [ws-prod], max_role: WORKSPACE_OWNER, max_ttl: 24h}
`)
	tests := []struct {
		name   string
		claims policy.Claims
		req    policy.Request
		want   string
	}{
		{"first match covers", mainClaims(), policy.Request{}, "allow operators"},
		{"second covers the higher role", mainClaims(), policy.Request{Role: "WORKSPACE_OWNER"}, "allow owners-on-main"},
		{"second does not match off main", with(mainClaims(), "ref", "refs/heads/dev"), policy.Request{Role: "WORKSPACE_OWNER"}, `widen operators/role: role WORKSPACE_OWNER exceeds WORKSPACE_OPERATOR allowed by rule "operators"`},
		{"none covers: the first matching rule's refusal", mainClaims(), policy.Request{Role: "WORKSPACE_OWNER", TTL: time.Hour}, `widen operators/ttl: ttl 1h0m0s exceeds 30m0s allowed by rule "operators"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, outcome(p.Decide(tt.claims, tt.req))); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestPolicyAccessors(t *testing.T) {
	p := mustParse(t, basePolicy)
	if p.Rules() != 3 {
		t.Errorf("Rules() = %d", p.Rules())
	}
	if diff := cmp.Diff([]string{"deploy-main", "preview", "deploy-only"}, p.RuleNames()); diff != "" {
		t.Errorf("RuleNames (-want +got):\n%s", diff)
	}
	sum := sha256.Sum256([]byte(basePolicy))
	if want := hex.EncodeToString(sum[:]); p.Digest() != want {
		t.Errorf("Digest() = %q, want the sha256 of the source %q", p.Digest(), want)
	}
	q := mustParse(t, basePolicy+"\n# a comment changes the digest\n")
	if p.Digest() == q.Digest() {
		t.Error("different sources, same digest")
	}
	if r := mustParse(t, basePolicy); r.Digest() != p.Digest() {
		t.Error("same source, different digest")
	}
	var nilPolicy *policy.Policy
	if _, err := nilPolicy.Decide(mainClaims(), policy.Request{}); !errors.Is(err, policy.ErrNoMatchingRule) {
		t.Errorf("nil policy Decide = %v", err)
	}
}

func TestParseErrors(t *testing.T) {
	rule := func(match, grant string) string {
		return "rules:\n  - name: r\n    match: " + match + "\n    grant: " + grant + "\n"
	}
	okGrant := "{workspaces: [ws], max_role: WORKSPACE_MEMBER, max_ttl: 5m}"
	okMatch := `{repository_id: "1"}`
	tests := []struct {
		name string
		src  string
		want []string // each must appear in the error
	}{
		{"empty file", "", []string{"policy is empty"}},
		{"only a comment", "# nothing\n", []string{"policy is empty"}},
		{"empty mapping", "{}", []string{"neither rules nor rotations"}},
		{"not YAML", "rules: [\n", []string{"not valid YAML"}},
		{"two documents", rule(okMatch, okGrant) + "---\n" + rule(okMatch, okGrant), []string{"single YAML document"}},
		{"top level is a list", "- a\n", []string{"policy: must be a mapping"}},
		{"unknown top-level key", "rule: []\n", []string{`policy: unknown key "rule"`}},
		{"unknown rule key", "rules:\n  - name: r\n    mach: {repository_id: '1'}\n    match: {repository_id: '1'}\n    grant: " + okGrant, []string{`rules[0] "r": unknown key "mach"`}},
		{"unknown grant key", rule(okMatch, "{workspace: [ws], workspaces: [ws], max_role: WORKSPACE_MEMBER, max_ttl: 5m}"), []string{`rules[0] "r".grant: unknown key "workspace"`}},
		{"unknown pattern key", rule(`{repository_id: "1", ref: {globb: "x"}}`, okGrant), []string{`rules[0] "r".match.ref: unknown key "globb"`, "exactly one of glob or regex"}},
		{"glob and regex together", rule(`{repository_id: "1", ref: {glob: "x", regex: "y"}}`, okGrant), []string{"exactly one of glob or regex"}},
		{"unconstrained rule", rule(`{event_name: push, ref: refs/heads/main}`, okGrant), []string{`rules[0] "r".match: needs at least one identity constraint`}},
		{"regex .* on sub does not constrain", rule(`{sub: {regex: ".*"}}`, okGrant), []string{"identity constraint"}},
		{"regex on sub without an owner", rule(`{sub: {regex: "repo:.*"}}`, okGrant), []string{"identity constraint"}},
		{"glob */* on repository does not constrain", rule(`{repository: {glob: "*/*"}}`, okGrant), []string{"identity constraint"}},
		{"glob on owner does not constrain", rule(`{repository_owner: {glob: "acme*"}}`, okGrant), []string{"identity constraint"}},
		{"regex on repository_id does not constrain", rule(`{repository_id: {regex: "12.*"}}`, okGrant), []string{"identity constraint"}},
		{"one loose alternative spoils the list", rule(`{repository: [acme/dags, {glob: "*"}]}`, okGrant), []string{"identity constraint"}},
		{"bad regex", rule(`{repository_id: "1", sub: {regex: "repo:("}}`, okGrant), []string{`rules[0] "r".match.sub.regex: invalid regex`}},
		{"bad glob", rule(`{repository_id: "1", ref: {glob: "refs/["}}`, okGrant), []string{`rules[0] "r".match.ref.glob: invalid glob`}},
		{"empty pattern", rule(`{repository_id: "1", ref: {glob: ""}}`, okGrant), []string{"must not be empty"}},
		{"pattern too long", rule(`{repository_id: "1", ref: {regex: "`+strings.Repeat("a", 1025)+`"}}`, okGrant), []string{"1025 bytes, more than 1024"}},
		{"exact value too long", rule(`{repository_id: "1", ref: "`+strings.Repeat("a", 1025)+`"}`, okGrant), []string{"1025 bytes, more than 1024"}},
		{"null value", "rules:\n  - name: r\n    match:\n      repository_id: '1'\n      ref:\n    grant: " + okGrant, []string{`match.ref: must be a string, not null`}},
		{"float value", rule(`{repository_id: 1.5}`, okGrant), []string{"!!float"}},
		{"empty list", rule(`{repository_id: "1", event_name: []}`, okGrant), []string{"empty list can never match"}},
		{"nested list", rule(`{repository_id: "1", event_name: [[push]]}`, okGrant), []string{"event_name[0]: must be a string or"}},
		{"empty match", rule(`{}`, okGrant), []string{"match: must not be empty"}},
		{"duplicate claim", "rules:\n  - name: r\n    match:\n      repository_id: '1'\n      repository_id: '2'\n    grant: " + okGrant, []string{`key "repository_id" appears twice`}},
		{"claim name", rule(`{repository_id: "1", Repo-ID: "x"}`, okGrant), []string{`"Repo-ID" is not a claim name`}},
		{"numeric claim", rule(`{repository_id: "1", exp: "1"}`, okGrant), []string{"exp is a number in a token"}},
		{"alias", "x: &m {repository_id: '1'}\n", []string{`unknown key "x"`}},
		{"alias in a rule", "rules:\n  - name: r\n    match: &m {repository_id: '1'}\n    grant: " + okGrant + "\n  - name: s\n    match: *m\n    grant: " + okGrant, []string{"aliases are not supported"}},
		{"merge key", "rules:\n  - name: r\n    match: {<<: {repository_id: '1'}}\n    grant: " + okGrant, []string{"no merge keys"}},
		{"missing name, match and grant", "rules:\n  - {}\n", []string{"rules[0]: name is required", "rules[0]: match is required", "rules[0]: grant is required"}},
		{"bad name", strings.Replace(rule(okMatch, okGrant), "name: r", "name: 'a b'", 1), []string{`"a b" must be 1-64 letters`}},
		{"duplicate names", rule(okMatch, okGrant) + strings.TrimPrefix(rule(okMatch, okGrant), "rules:\n"), []string{`rules[1].name: "r" is also the name of rules[0]`}},
		{"not a Workspace role", rule(okMatch, "{workspaces: [ws], max_role: ORGANIZATION_OWNER, max_ttl: 5m}"), []string{`"ORGANIZATION_OWNER" is not a Workspace role`}},
		{"Deployment grant with a Workspace role", rule(okMatch, "{deployments: [d], max_role: WORKSPACE_OWNER, max_ttl: 5m}"), []string{"a Deployment grant's role can only be DEPLOYMENT_ADMIN"}},
		{"Workspace grant without max_role", rule(okMatch, "{workspaces: [ws], max_ttl: 5m}"), []string{"max_role is required"}},
		{"both kinds", rule(okMatch, "{workspaces: [ws], deployments: [d], max_role: WORKSPACE_MEMBER, max_ttl: 5m}"), []string{"both workspaces and deployments"}},
		{"neither kind", rule(okMatch, "{max_role: WORKSPACE_MEMBER, max_ttl: 5m}"), []string{"needs workspaces or deployments"}},
		{"empty Workspaces", rule(okMatch, "{workspaces: [], max_role: WORKSPACE_MEMBER, max_ttl: 5m}"), []string{"workspaces: must not be empty"}},
		{"duplicate Workspace", rule(okMatch, "{workspaces: [a, a], max_role: WORKSPACE_MEMBER, max_ttl: 5m}"), []string{`"a" appears twice`}},
		{"bad Workspace id", rule(okMatch, "{workspaces: [ws/../x], max_role: WORKSPACE_MEMBER, max_ttl: 5m}"), []string{`"ws/../x" is not an Astro id`}},
		{"no max_ttl", rule(okMatch, "{workspaces: [ws], max_role: WORKSPACE_MEMBER}"), []string{"max_ttl is required"}},
		{"max_ttl too short", rule(okMatch, "{workspaces: [ws], max_role: WORKSPACE_MEMBER, max_ttl: 30s}"), []string{"30s is not within 1m0s..24h0m0s"}},
		{"max_ttl too long", rule(okMatch, "{workspaces: [ws], max_role: WORKSPACE_MEMBER, max_ttl: 25h}"), []string{"25h0m0s is not within"}},
		{"max_ttl not a duration", rule(okMatch, "{workspaces: [ws], max_role: WORKSPACE_MEMBER, max_ttl: 30}"), []string{`"30" is not a duration`}},
		{"rules is not a list", "rules: {}\n", []string{"rules: must be a list"}},
		{"every problem at once, each naming its rule", `
rules:
  - name: one
    match: {event_name: push}
    grant: {workspaces: [ws], max_role: WORKSPACE_MEMBER, max_ttl: 5m}
  - name: two
    match: {repository_id: "1"}
    grant: {workspaces: [ws], max_role: WORKSPACE_BOSS, max_ttl: 5m}
  - name: three
    match: {repository_id: "1"}
    grant: {workspaces: [ws], max_role: WORKSPACE_MEMBER, max_ttl: 5m, extra: 1}
`, []string{`rules[0] "one".match: needs at least one identity constraint`, `rules[1] "two".grant.max_role: "WORKSPACE_BOSS"`, `rules[2] "three".grant: unknown key "extra"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := policy.Parse([]byte(tt.src))
			if err == nil {
				t.Fatalf("Parse accepted it: %d rules", p.Rules())
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
		})
	}
}

func TestParseLimits(t *testing.T) {
	var b strings.Builder
	b.WriteString("rules:\n")
	for i := range policy.MaxRules + 1 {
		fmt.Fprintf(&b, "  - {name: r%d, match: {repository_id: '1'}, grant: {workspaces: [ws], max_role: WORKSPACE_MEMBER, max_ttl: 5m}}\n", i)
	}
	if _, err := policy.Parse([]byte(b.String())); err == nil || !strings.Contains(err.Error(), "1001 rules, more than 1000") {
		t.Errorf("1001 rules: %v", err)
	}
	big := "rules: []\n#" + strings.Repeat("x", policy.MaxFileSize)
	if _, err := policy.Parse([]byte(big)); err == nil || !strings.Contains(err.Error(), "more than 1048576") {
		t.Errorf("oversized file: %v", err)
	}
	// Exactly at the limits is fine.
	if _, err := policy.Parse([]byte(`rules: [{name: r, match: {repository_id: "1", ref: {regex: "` + strings.Repeat("a", 1024) + `"}}, grant: {workspaces: [ws], max_role: WORKSPACE_MEMBER, max_ttl: 24h}}]`)); err != nil {
		t.Errorf("pattern of 1024 bytes and max_ttl 24h: %v", err)
	}
}

func TestParseAccepts(t *testing.T) {
	tests := []struct {
		name string
		src  string
	}{
		{"deny everything", "rules: []\n"},
		{"identity glob with an owner", `rules: [{name: r, match: {repository: {glob: "acme/*"}}, grant: {workspaces: [ws], max_role: WORKSPACE_MEMBER, max_ttl: 5m}}]`},
		{"identity regex with an owner", `rules: [{name: r, match: {sub: {regex: "repo:acme/[a-z-]+:environment:production"}}, grant: {workspaces: [ws], max_role: WORKSPACE_MEMBER, max_ttl: 5m}}]`},
		{"job_workflow_ref glob", `rules: [{name: r, match: {job_workflow_ref: {glob: "acme/workflows/.github/workflows/deploy.yml@*"}}, grant: {deployments: [d], max_ttl: 5m}}]`},
		{"owner id as an int, DEPLOYMENT_ADMIN explicit", `rules: [{name: r, match: {repository_owner_id: 65}, grant: {deployments: [d], max_role: DEPLOYMENT_ADMIN, max_ttl: 5m}}]`},
		{"repo_property and issuer claims", `rules: [{name: r, match: {repository_owner: acme, repo_property_tier: gold, iss: "https://token.actions.githubusercontent.com"}, grant: {workspaces: [ws], max_role: WORKSPACE_MEMBER, max_ttl: 5m}}]`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mustParse(t, tt.src)
		})
	}
}
