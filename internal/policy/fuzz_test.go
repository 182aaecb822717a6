package policy_test

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/astro-sts/astro-sts/internal/astro"
	"github.com/astro-sts/astro-sts/internal/policy"
)

// FuzzParse: no input panics; an accepted policy denies a token with no
// claims (every rule needs an identity claim, and a missing claim never
// matches), and no rotation allows it.
func FuzzParse(f *testing.F) {
	f.Add(basePolicy)
	f.Add(rotationPolicy)
	f.Add(otherPolicy)
	f.Add(limitedPolicy)
	f.Add("rules: []\n")
	f.Add("rules: [{name: r, match: {repository: [acme/x, {regex: 'acme/(a|b)'}]}, grant: {deployments: [d], max_ttl: 1m}}]")
	f.Add("rules:\n  - name: r\n    match: &a {repository_id: '1'}\n    grant: *a\n")
	f.Add("a: [*b]\n")
	f.Add("--- \n...\n")
	f.Fuzz(func(t *testing.T, src string) {
		p, err := policy.Parse([]byte(src))
		if err != nil {
			if p != nil {
				t.Fatal("Parse returned a policy and an error")
			}
			return
		}
		if len(p.Digest()) != 64 || p.Rules() > policy.MaxRules {
			t.Fatalf("digest %q, %d rules", p.Digest(), p.Rules())
		}
		for _, c := range []policy.Claims{nil, {}, {"event_name": "push", "ref": "refs/heads/main"}} {
			if _, err := p.Decide(c, policy.Request{}); !errors.Is(err, policy.ErrNoMatchingRule) {
				t.Fatalf("Decide(%v) without identity claims = %v, want ErrNoMatchingRule", c, err)
			}
			for _, r := range p.Rotations() {
				if r.Allows(c) {
					t.Fatalf("rotation %q allows %v", r.Name, c)
				}
			}
		}
	})
}

// FuzzDecide: for fuzzed claims and requests against basePolicy, an
// allowed decision always satisfies the deciding rule's constraints and
// never exceeds its grant.
func FuzzDecide(f *testing.F) {
	p := mustParse(f, basePolicy)
	f.Add("123456", "refs/heads/main", "push", "acme/dags/.github/workflows/deploy.yml@refs/heads/main", "repo:acme/dags:ref:refs/heads/main", "65", "production", "acme/dags", "", "", "", int64(0))
	f.Add("1", "x", "pull_request", "", "repo:acme/dags:pull_request", "65", "production", "acme/dags-x", "ws-dev", "", "WORKSPACE_MEMBER", int64(time.Minute))
	f.Add("", "", "", "", "repo:acme/dags:ref:refs/heads/feature/\n", "", "", "", "", "dep-1", "DEPLOYMENT_ADMIN", int64(-1))
	f.Fuzz(func(t *testing.T, repoID, ref, event, jwr, sub, ownerID, env, repo, ws, dep, role string, ttl int64) {
		c := policy.Claims{"repository_id": repoID, "ref": ref, "event_name": event, "job_workflow_ref": jwr,
			"sub": sub, "repository_owner_id": ownerID, "environment": env, "repository": repo}
		d, err := p.Decide(c, policy.Request{WorkspaceID: ws, DeploymentID: dep, Role: role, TTL: time.Duration(ttl)})
		if err != nil {
			var we *policy.WidenError
			if !errors.Is(err, policy.ErrNoMatchingRule) && !errors.Is(err, policy.ErrBadRequest) && !errors.As(err, &we) {
				t.Fatalf("unexpected error %v", err)
			}
			return
		}
		if d.TTL <= 0 {
			t.Fatalf("TTL %v", d.TTL)
		}
		switch d.Rule {
		case "deploy-main":
			if repoID != "123456" || ref != "refs/heads/main" || (event != "push" && event != "workflow_dispatch") ||
				!strings.HasPrefix(jwr, "acme/dags/.github/workflows/") || !strings.HasSuffix(jwr, ".yml@refs/heads/main") {
				t.Fatalf("deploy-main allowed %v", c)
			}
			rank, _ := astro.WorkspaceRoleRank(d.Role)
			if d.Scope != astro.ScopeWorkspace || d.WorkspaceID != "ws-prod" || rank < 1 || rank > 4 || d.TTL > 30*time.Minute {
				t.Fatalf("deploy-main granted too much: %+v", d)
			}
		case "preview":
			if sub != "repo:acme/dags:pull_request" && !strings.HasPrefix(sub, "repo:acme/dags:ref:refs/heads/feature/") {
				t.Fatalf("preview allowed sub %q", sub)
			}
			rank, _ := astro.WorkspaceRoleRank(d.Role)
			if rank < 1 || rank > 3 || d.TTL > time.Hour {
				t.Fatalf("preview granted too much: %+v", d)
			}
			for w := range d.WorkspaceRoles {
				if w != "ws-dev" && w != "ws-staging" {
					t.Fatalf("preview granted Workspace %q", w)
				}
			}
			if d.WorkspaceID != "" && d.WorkspaceID != "ws-dev" && d.WorkspaceID != "ws-staging" {
				t.Fatalf("preview granted Workspace %q", d.WorkspaceID)
			}
		case "deploy-only":
			if ownerID != "65" || env != "production" || (repo != "acme/dags" && !strings.HasPrefix(repo, "acme/dags-")) || strings.Contains(strings.TrimPrefix(repo, "acme/"), "/") {
				t.Fatalf("deploy-only allowed %v", c)
			}
			if d.Scope != astro.ScopeDeployment || !slices.Contains([]string{"dep-1", "dep-2"}, d.DeploymentID) || d.Role != astro.RoleDeploymentAdmin || d.TTL > 15*time.Minute {
				t.Fatalf("deploy-only granted too much: %+v", d)
			}
		default:
			t.Fatalf("unknown rule %q", d.Rule)
		}
	})
}

// FuzzSuggest: whatever the job's claims hold, a suggested rule parses as
// one rule, allows those claims, and nothing else can ride in on a claim's
// value (a second rule, another key).
func FuzzSuggest(f *testing.F) {
	f.Add("acme/dags", "123456", "65", "refs/heads/main", "", "push")
	f.Add("a/b", "1", "2", "", "production", "workflow_dispatch")
	f.Add("x\n  - name: evil", "1\"", "2\\", "refs/heads/\u2028x", "env: {glob: '*'}", "#")
	f.Add("a/b", "1", "2", "", "x##[set-output name=token]FAKE", "::add-mask::x\u0085##\u200b[y")
	f.Fuzz(func(t *testing.T, repo, repoID, ownerID, ref, env, event string) {
		for _, s := range []string{repo, repoID, ownerID, ref, env, event} {
			if !utf8.ValidString(s) {
				return // claims come from JSON: always text
			}
		}
		c := policy.Claims{"repository": repo, "repository_id": repoID, "repository_owner_id": ownerID,
			"ref": ref, "environment": env, "event_name": event}
		s, err := policy.Suggest(c, policy.Request{})
		if err != nil {
			if !errors.Is(err, policy.ErrNoIdentity) || (repoID != "" && ownerID != "") {
				t.Fatalf("Suggest: %v", err)
			}
			return
		}
		// The job log shows the suggestion, line by line: none may read as
		// a workflow command.
		for _, line := range strings.Split(s, "\n") {
			if strings.Contains(line, "##[") || strings.HasPrefix(strings.TrimLeftFunc(line, unicode.IsSpace), "::") ||
				strings.ContainsAny(line, "\r\u0085\u2028\u2029") {
				t.Fatalf("a line of the suggestion is a workflow command: %q", line)
			}
		}
		p, err := policy.Parse([]byte("rules:\n" + s))
		if err != nil {
			if len(repoID) > policy.MaxPatternLen || len(ownerID) > policy.MaxPatternLen || len(ref) > policy.MaxPatternLen || len(env) > policy.MaxPatternLen || len(event) > policy.MaxPatternLen {
				return // too long for a policy: no rule can hold it
			}
			t.Fatalf("the suggestion does not parse: %v\n%s", err, s)
		}
		if p.Rules() != 1 {
			t.Fatalf("%d rules in\n%s", p.Rules(), s)
		}
		if _, err := p.Decide(c, policy.Request{}); err != nil {
			t.Fatalf("the suggestion refuses its own claims: %v\n%s", err, s)
		}
	})
}
