package policy_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/astro-sts/astro-sts/internal/policy"
)

func TestExplain(t *testing.T) {
	p := mustParse(t, basePolicy)
	tests := []struct {
		name   string
		claims policy.Claims
		n      int
		want   []policy.Miss
	}{
		{
			name:   "one entry of the closest rule fails",
			claims: with(mainClaims(), "ref", "refs/heads/dev"),
			n:      1,
			want: []policy.Miss{
				{Rule: "deploy-main", Held: 3, Of: 4, Key: "ref", Expected: `"refs/heads/main"`, Actual: `"refs/heads/dev"`},
			},
		},
		{
			name:   "a list, and the closest first",
			claims: with(mainClaims(), "event_name", "pull_request_target", "environment", "production"),
			want: []policy.Miss{
				// deploy-only fails on its first entry only: 65 and the
				// repository hold, environment too.
				{Rule: "deploy-main", Held: 3, Of: 4, Key: "event_name", Expected: `["push", "workflow_dispatch"]`, Actual: `"pull_request_target"`},
				{Rule: "preview", Held: 0, Of: 1, Key: "sub", Expected: `{regex: "repo:acme/dags:pull_request|repo:acme/dags:ref:refs/heads/feature/.+"}`, Actual: `"repo:acme/dags:ref:refs/heads/main"`},
			},
		},
		{
			name:   "an absent claim, and equally close rules in file order",
			claims: without(mainClaims(), "job_workflow_ref", "sub"),
			want: []policy.Miss{
				{Rule: "deploy-main", Held: 3, Of: 4, Key: "job_workflow_ref", Expected: `{glob: "acme/dags/.github/workflows/*.yml@refs/heads/main"}`, Actual: "(absent)"},
				{Rule: "preview", Held: 0, Of: 1, Key: "sub", Expected: `{regex: "repo:acme/dags:pull_request|repo:acme/dags:ref:refs/heads/feature/.+"}`, Actual: "(absent)"},
				{Rule: "deploy-only", Held: 2, Of: 3, Key: "environment", Expected: `"production"`, Actual: "(absent)"},
			},
		},
		{
			name:   "a matching rule is not a miss",
			claims: mainClaims(),
			n:      5,
			want: []policy.Miss{
				{Rule: "preview", Held: 0, Of: 1, Key: "sub", Expected: `{regex: "repo:acme/dags:pull_request|repo:acme/dags:ref:refs/heads/feature/.+"}`, Actual: `"repo:acme/dags:ref:refs/heads/main"`},
				{Rule: "deploy-only", Held: 2, Of: 3, Key: "environment", Expected: `"production"`, Actual: "(absent)"},
			},
		},
		{
			name:   "a long claim is shortened",
			claims: with(mainClaims(), "ref", strings.Repeat("x", 300)),
			n:      1,
			want: []policy.Miss{
				{Rule: "deploy-main", Held: 3, Of: 4, Key: "ref", Expected: `"refs/heads/main"`, Actual: `"` + strings.Repeat("x", 200) + `..."`},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, p.Explain(tt.claims, tt.n)); diff != "" {
				t.Errorf("Explain (-want +got):\n%s", diff)
			}
		})
	}
	var nilPolicy *policy.Policy
	if got := nilPolicy.Explain(mainClaims(), 0); got != nil {
		t.Errorf("nil policy explains %v", got)
	}
}

// Wherever Decide says no rule matches, Explain names every rule; wherever
// a rule matches, Explain leaves it out.
func TestExplainAgreesWithDecide(t *testing.T) {
	p := mustParse(t, basePolicy)
	for _, c := range []policy.Claims{
		mainClaims(), with(mainClaims(), "ref", "x"), without(mainClaims(), "repository_id"),
		with(mainClaims(), "environment", "production"), {},
	} {
		_, err := p.Decide(c, policy.Request{})
		misses := p.Explain(c, 0)
		if errors.Is(err, policy.ErrNoMatchingRule) != (len(misses) == p.Rules()) {
			t.Errorf("claims %v: Decide %v, but %d of %d rules explained", c, err, len(misses), p.Rules())
		}
	}
}

func TestRotationExplain(t *testing.T) {
	p := mustParse(t, rotationPolicy)
	r, ok := p.Rotation("airflow-ci")
	if !ok {
		t.Fatal("no rotation airflow-ci")
	}
	m, missed := r.Explain(policy.Claims{"repository_id": "123456", "event_name": "push"})
	want := policy.Miss{Rule: "airflow-ci", Held: 1, Of: 2, Key: "event_name", Expected: `["schedule", "workflow_dispatch"]`, Actual: `"push"`}
	if diff := cmp.Diff(want, m); !missed || diff != "" {
		t.Errorf("Explain = %v (-want +got):\n%s", missed, diff)
	}
	if _, missed := r.Explain(policy.Claims{"repository_id": "123456", "event_name": "schedule"}); missed {
		t.Error("an allowed identity is explained as a miss")
	}
}

func TestWarnings(t *testing.T) {
	p := mustParse(t, `
rules:
  - name: narrow
    match:
      repository_owner_id: "65"
      repository_id: "123456"
      ref: refs/heads/main
      event_name: [push, workflow_dispatch]
    grant: {workspaces: [ws], max_role: WORKSPACE_AUTHOR, max_ttl: 30m}
  - name: by-names
    match:
      repository: acme/dags
      repository_owner: acme
      environment: production
      event_name: {glob: "pull_request*"}
    grant: {workspaces: [ws], max_role: WORKSPACE_AUTHOR, max_ttl: 30m}
  - name: reusable
    match:
      job_workflow_ref: {glob: "acme/shared/.github/workflows/deploy.yml@*"}
    grant: {workspaces: [ws], max_role: WORKSPACE_AUTHOR, max_ttl: 30m}
  - name: reusable-pinned
    match:
      repository_owner_id: "65"
      job_workflow_ref: {glob: "acme/shared/.github/workflows/deploy.yml@*"}
      ref: {glob: "refs/tags/*"}
      event_name: [workflow_run, push]
    grant: {workspaces: [ws], max_role: WORKSPACE_AUTHOR, max_ttl: 30m}
  - name: by-sub
    match:
      sub: "repo:acme/dags:environment:production"
      environment: production
      event_name: push
    grant: {workspaces: [ws], max_role: WORKSPACE_AUTHOR, max_ttl: 30m}
  - name: pull-requests-into-main
    match:
      repository_owner_id: "65"
      repository_id: "123456"
      event_name: pull_request
      base_ref: main
    grant: {workspaces: [ws], max_role: WORKSPACE_AUTHOR, max_ttl: 30m}
rotations:
  - name: airflow-ci
    token_id: cltoken
    strategy: rotate
    allow: {repository_id: "123456", event_name: [schedule]}
    vault: {mount: secret, path: astro/ci, field: token}
`)
	var got []string
	for _, w := range p.Warnings() {
		got = append(got, w.String())
	}
	want := []string{
		`rules[1] "by-names": its events include pull_request_target, which runs with the repository's identity for code it may not have reviewed`,
		`rules[1] "by-names": repository without repository_id: a name can be freed by a rename or a deletion and registered by someone else; the id never changes`,
		`rules[1] "by-names": repository_owner without repository_owner_id: an owner's name can be freed and registered by someone else; the id never changes`,
		`rules[2] "reusable": binds neither ref nor environment: every branch of the repository gets the grant, a pull request's included`,
		`rules[2] "reusable": binds no event_name: pull_request_target and workflow_run runs, which carry the repository's identity for code it may not have reviewed, match too`,
		`rules[2] "reusable": job_workflow_ref without repository_owner_id: a reusable workflow in a public repository can be called from any repository on GitHub`,
		`rules[3] "reusable-pinned": its events include workflow_run, which runs with the repository's identity for code it may not have reviewed`,
		`rules[4] "by-sub": sub names an owner or repository without their ids: it stops matching once the repository uses GitHub's immutable sub (repo:OWNER@OWNER_ID/REPO@REPO_ID:..., the default for repositories created, renamed or transferred since 2026-06-18), and a name can be freed and registered by someone else; match repository_owner_id and repository_id instead, which carry the ids whatever the format`,
		`rotations[0] "airflow-ci".allow: binds neither ref nor environment: every branch of the repository gets the grant, a pull request's included`,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Warnings (-want +got):\n%s", diff)
	}
}

// A suggested rule parses, allows exactly the identity it was made from
// (with the grant the job asked for), and nothing that differs in any
// claim it binds.
func TestSuggest(t *testing.T) {
	push := policy.Claims{
		"repository": "acme/dags", "repository_id": "123456", "repository_owner": "acme", "repository_owner_id": "65",
		"ref": "refs/heads/main", "ref_type": "branch", "event_name": "push", "sub": "repo:acme/dags:ref:refs/heads/main",
	}
	deployEnv := with(push, "environment", "production", "event_name", "workflow_dispatch", "sub", "repo:acme/dags:environment:production")
	hostile := with(push, "ref", "refs/heads/x\"\n  - name: evil\n", "repository", "acme/da gs#")
	// The job log shows the suggestion: the runner reads "##[" anywhere in
	// a line as a workflow command, and a zero-width space may hide one.
	commands := with(push, "environment", "x##[set-output name=token]FAKE\u2028::error::y", "event_name", "##\u200b[add-mask]z")

	tests := []struct {
		name    string
		claims  policy.Claims
		req     policy.Request
		want    string
		binds   []string
		decided policy.Decision
	}{
		{
			name: "a push to main, nothing asked", claims: push,
			want: `  - name: "dags-main"
    match:
      repository_owner_id: "65"
      repository_id: "123456"
      ref: "refs/heads/main"
      event_name: "push"
    grant:
      workspaces: ["REPLACE-WITH-WORKSPACE-ID"]
      max_role: WORKSPACE_AUTHOR
      max_ttl: 30m0s
`,
			binds:   []string{"repository_owner_id", "repository_id", "ref", "event_name"},
			decided: policy.Decision{Rule: "dags-main", Scope: "WORKSPACE", WorkspaceID: policy.SuggestedWorkspace, Role: "WORKSPACE_AUTHOR", TTL: 30 * time.Minute},
		},
		{
			name: "an environment, and what the job asked for", claims: deployEnv,
			req: policy.Request{WorkspaceID: "clws0001", Role: "WORKSPACE_OPERATOR", TTL: 20 * time.Minute},
			want: `  - name: "dags-production"
    match:
      repository_owner_id: "65"
      repository_id: "123456"
      environment: "production"
      event_name: "workflow_dispatch"
    grant:
      workspaces: ["clws0001"]
      max_role: WORKSPACE_OPERATOR
      max_ttl: 20m0s
`,
			binds:   []string{"repository_owner_id", "repository_id", "environment", "event_name"},
			decided: policy.Decision{Rule: "dags-production", Scope: "WORKSPACE", WorkspaceID: "clws0001", Role: "WORKSPACE_OPERATOR", TTL: 20 * time.Minute},
		},
		{
			name: "a Deployment, a ttl below the minimum", claims: push,
			req: policy.Request{DeploymentID: "cldep01", TTL: 10 * time.Second},
			want: `  - name: "dags-main"
    match:
      repository_owner_id: "65"
      repository_id: "123456"
      ref: "refs/heads/main"
      event_name: "push"
    grant:
      deployments: ["cldep01"]
      max_ttl: 1m0s
`,
			binds:   []string{"repository_owner_id", "repository_id", "ref", "event_name"},
			decided: policy.Decision{Rule: "dags-main", Scope: "DEPLOYMENT", DeploymentID: "cldep01", Role: "DEPLOYMENT_ADMIN", TTL: 10 * time.Second},
		},
		{
			name: "claims that try to break out of their line", claims: hostile,
			want: `  - name: "da-gs-x-name-evil"
    match:
      repository_owner_id: "65"
      repository_id: "123456"
      ref: "refs/heads/x\"\n  - name: evil\n"
      event_name: "push"
    grant:
      workspaces: ["REPLACE-WITH-WORKSPACE-ID"]
      max_role: WORKSPACE_AUTHOR
      max_ttl: 30m0s
`,
			binds:   []string{"repository_owner_id", "repository_id", "ref", "event_name"},
			decided: policy.Decision{Rule: "da-gs-x-name-evil", Scope: "WORKSPACE", WorkspaceID: policy.SuggestedWorkspace, Role: "WORKSPACE_AUTHOR", TTL: 30 * time.Minute},
		},
		{
			name: "claims that would be workflow commands", claims: commands,
			want: `  - name: "dags-x-set-output-name-token-FAKE-error-y"
    match:
      repository_owner_id: "65"
      repository_id: "123456"
      environment: "x##\u005bset-output name=token]FAKE\u2028::error::y"
      event_name: "##\u200b\u005badd-mask]z"
    grant:
      workspaces: ["REPLACE-WITH-WORKSPACE-ID"]
      max_role: WORKSPACE_AUTHOR
      max_ttl: 30m0s
`,
			binds:   []string{"repository_owner_id", "repository_id", "environment", "event_name"},
			decided: policy.Decision{Rule: "dags-x-set-output-name-token-FAKE-error-y", Scope: "WORKSPACE", WorkspaceID: policy.SuggestedWorkspace, Role: "WORKSPACE_AUTHOR", TTL: 30 * time.Minute},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := policy.Suggest(tt.claims, tt.req)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Suggest (-want +got):\n%s", diff)
			}
			for i, line := range strings.Split(got, "\n") {
				if strings.Contains(line, "##[") || strings.HasPrefix(strings.TrimSpace(line), "::") {
					t.Errorf("line %d of the suggestion is a workflow command: %q", i+1, line)
				}
			}
			p := mustParse(t, "rules:\n"+got)
			if p.Rules() != 1 {
				t.Fatalf("the suggestion holds %d rules", p.Rules())
			}
			d, err := p.Decide(tt.claims, tt.req)
			if err != nil {
				t.Fatalf("the suggested rule refuses its own identity: %v", err)
			}
			if diff := cmp.Diff(tt.decided, d); diff != "" {
				t.Errorf("Decide (-want +got):\n%s", diff)
			}
			if w := p.Warnings(); len(w) > 0 {
				t.Errorf("the suggested rule has warnings: %v", w)
			}
			for _, k := range tt.binds {
				if _, err := p.Decide(with(tt.claims, k, tt.claims[k]+"0"), tt.req); !errors.Is(err, policy.ErrNoMatchingRule) {
					t.Errorf("another %s is not refused: %v", k, err)
				}
				if _, err := p.Decide(without(tt.claims, k), tt.req); !errors.Is(err, policy.ErrNoMatchingRule) {
					t.Errorf("a token without %s is not refused: %v", k, err)
				}
			}
		})
	}
	if _, err := policy.Suggest(without(push, "repository_id"), policy.Request{}); !errors.Is(err, policy.ErrNoIdentity) {
		t.Errorf("without repository_id: %v, want ErrNoIdentity", err)
	}
}
