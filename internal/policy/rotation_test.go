package policy_test

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/astro-sts/astro-sts/internal/policy"
)

const rotationPolicy = `
rotations:
  - name: airflow-ci
    token_id: cltoken123
    strategy: replace
    allow:
      repository_id: "123456"
      event_name: [schedule, workflow_dispatch]
    vault: {mount: secret, path: astro/airflow-ci, field: token}
    github:
      - {repository: acme/dags, secret: ASTRO_API_TOKEN}
      - {repository: acme/dags, environment: production, secret: ASTRO_API_TOKEN}
      - {organization: acme, secret: ASTRO_API_TOKEN, visibility: private}
      - {organization: acme, secret: ASTRO_API_TOKEN_SELECTED, visibility: selected, selected_repository_ids: [123456, 7]}
  - name: vault-only
    token_id: cltoken456
    strategy: rotate
    allow: {repository_owner_id: "65", ref: refs/heads/main}
    vault: {mount: kv/astro, path: ci, field: value}
`

func TestRotationsParse(t *testing.T) {
	p := mustParse(t, rotationPolicy)
	want := []*policy.Rotation{
		{
			Name: "airflow-ci", TokenID: "cltoken123", Strategy: policy.StrategyReplace,
			Vault: &policy.VaultTarget{Mount: "secret", Path: "astro/airflow-ci", Field: "token"},
			GitHub: []policy.GitHubTarget{
				{Repository: "acme/dags", Secret: "ASTRO_API_TOKEN"},
				{Repository: "acme/dags", Environment: "production", Secret: "ASTRO_API_TOKEN"},
				{Organization: "acme", Secret: "ASTRO_API_TOKEN", Visibility: "private"},
				{Organization: "acme", Secret: "ASTRO_API_TOKEN_SELECTED", Visibility: "selected", SelectedRepositoryIDs: []int64{123456, 7}},
			},
		},
		{
			Name: "vault-only", TokenID: "cltoken456", Strategy: policy.StrategyRotate,
			Vault: &policy.VaultTarget{Mount: "kv/astro", Path: "ci", Field: "value"},
		},
	}
	if diff := cmp.Diff(want, p.Rotations(), cmpopts.IgnoreUnexported(policy.Rotation{})); diff != "" {
		t.Errorf("Rotations (-want +got):\n%s", diff)
	}
	if p.Rules() != 0 {
		t.Errorf("Rules() = %d", p.Rules())
	}
	if _, err := p.Decide(mainClaims(), policy.Request{}); err == nil {
		t.Error("a policy without rules allowed an exchange")
	}

	r, ok := p.Rotation("airflow-ci")
	if !ok || r.TokenID != "cltoken123" {
		t.Fatalf("Rotation(airflow-ci) = %v, %v", r, ok)
	}
	if _, ok := p.Rotation("nope"); ok {
		t.Error("Rotation(nope) found something")
	}
	// Rotations returns a copy of the list.
	p.Rotations()[0] = nil
	if p.Rotations()[0] == nil {
		t.Error("Rotations exposes the policy's slice")
	}

	tests := []struct {
		name   string
		claims policy.Claims
		want   bool
	}{
		{"scheduled run of the repository", policy.Claims{"repository_id": "123456", "event_name": "schedule"}, true},
		{"manual run", policy.Claims{"repository_id": "123456", "event_name": "workflow_dispatch"}, true},
		{"push is not allowed", policy.Claims{"repository_id": "123456", "event_name": "push"}, false},
		{"another repository", policy.Claims{"repository_id": "1", "event_name": "schedule"}, false},
		{"no claims", nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := r.Allows(tt.claims); got != tt.want {
				t.Errorf("Allows = %v, want %v", got, tt.want)
			}
		})
	}
	var nilRotation *policy.Rotation
	if nilRotation.Allows(policy.Claims{"repository_id": "123456", "event_name": "schedule"}) {
		t.Error("a nil rotation allowed something")
	}
}

func TestRotationErrors(t *testing.T) {
	rot := func(body string) string {
		return "rotations:\n  - name: r\n" + body
	}
	const base = "    token_id: t1\n    strategy: rotate\n    allow: {repository_id: '1'}\n"
	const vault = "    vault: {mount: secret, path: a/b, field: token}\n"
	gh := func(targets ...string) string {
		return "    github:\n      - " + strings.Join(targets, "\n      - ") + "\n"
	}
	tests := []struct {
		name string
		src  string
		want []string
	}{
		{"no sink", rot(base), []string{`rotations[0] "r": needs at least one sink`}},
		{"missing fields", "rotations:\n  - {name: r}\n", []string{"token_id is required", "strategy is required", "allow is required", "needs at least one sink"}},
		{"unknown key", rot(base + vault + "    valt: {}\n"), []string{`rotations[0] "r": unknown key "valt"`}},
		{"bad strategy", rot(strings.Replace(base, "rotate", "swap", 1) + vault), []string{`"swap" must be replace or rotate`}},
		{"bad token id", rot(strings.Replace(base, "t1", "'../t1'", 1) + vault), []string{`"../t1" is not an Astro token id`}},
		{"unconstrained allow", rot(strings.Replace(base, "{repository_id: '1'}", "{event_name: schedule}", 1) + vault), []string{`rotations[0] "r".allow: needs at least one identity constraint`}},
		{"duplicate names", rot(base+vault) + "  - name: r\n" + base + vault, []string{`"r" is also the name of rotations[0]`}},
		{"vault path with ..", rot(base + "    vault: {mount: secret, path: a/../b, field: token}\n"), []string{`"a/../b" is not a valid Vault path`}},
		{"vault path with a leading /", rot(base + "    vault: {mount: secret, path: /a, field: token}\n"), []string{`"/a" is not a valid Vault path`}},
		{"vault field missing", rot(base + "    vault: {mount: secret, path: a}\n"), []string{"vault: field is required"}},
		{"empty github", rot(base + "    github: []\n"), []string{"github: must not be empty"}},
		{"GITHUB_ prefix", rot(base + gh("{repository: acme/dags, secret: github_token}")), []string{"must not start with GITHUB_"}},
		{"secret starting with a digit", rot(base + gh("{repository: acme/dags, secret: 1TOKEN}")), []string{`"1TOKEN" is not a secret name`}},
		{"secret with a dash", rot(base + gh("{repository: acme/dags, secret: ASTRO-TOKEN}")), []string{`"ASTRO-TOKEN" is not a secret name`}},
		{"no secret", rot(base + gh("{repository: acme/dags}")), []string{"secret is required"}},
		{"repository and organization", rot(base + gh("{repository: acme/dags, organization: acme, secret: S, visibility: all}")), []string{"both repository and organization"}},
		{"neither repository nor organization", rot(base + gh("{secret: S}")), []string{"needs repository or organization"}},
		{"bad repository", rot(base + gh("{repository: acme, secret: S}")), []string{`"acme" is not owner/name`}},
		{"environment of an organization", rot(base + gh("{organization: acme, environment: prod, secret: S, visibility: all}")), []string{"only a repository has environments"}},
		{"organization without visibility", rot(base + gh("{organization: acme, secret: S}")), []string{"needs visibility"}},
		{"bad visibility", rot(base + gh("{organization: acme, secret: S, visibility: public}")), []string{`"public" must be all, private or selected`}},
		{"selected without ids", rot(base + gh("{organization: acme, secret: S, visibility: selected}")), []string{"needs selected_repository_ids"}},
		{"ids without selected", rot(base + gh("{organization: acme, secret: S, visibility: all, selected_repository_ids: [1]}")), []string{"only for visibility: selected"}},
		{"ids not integers", rot(base + gh("{organization: acme, secret: S, visibility: selected, selected_repository_ids: [abc, -1]}")), []string{"[0]: must be a repository id", `[1]: "-1" is not a positive repository id`}},
		{"duplicate target (names are case-insensitive)", rot(base + gh("{repository: acme/dags, secret: TOKEN}", "{repository: Acme/Dags, secret: token}")), []string{"is the same secret as"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := policy.Parse([]byte(tt.src))
			if err == nil {
				t.Fatal("Parse accepted it")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
		})
	}
}

// TestRotationTargetNames: the policy applies the sink's naming rules
// (internal/sink), which are GitHub's and Vault's own. These are the cases
// on which the policy's former copy of the rules disagreed with the sink's.
func TestRotationTargetNames(t *testing.T) {
	rot := func(target string) string {
		return "rotations:\n  - name: r\n    token_id: t1\n    strategy: rotate\n    allow: {repository_id: '1'}\n" + target
	}
	tests := []struct {
		name string
		src  string
		want string // "" when it parses
	}{
		{"Vault path with a space and a plus", rot("    vault: {mount: team kv, path: 'ci+prod/a b', field: 'token:v2'}\n"), ""},
		{"Vault path with a control character", rot("    vault: {mount: secret, path: \"a\\tb\", field: token}\n"), `"a\tb" is not a valid Vault path`},
		{"repository of a managed user", rot("    github: [{repository: mona_acme/dags, secret: S}]\n"), ""},
		{"repository named ..", rot("    github: [{repository: acme/.., secret: S}]\n"), `"acme/.." is not owner/name`},
		{"environment with a trailing space", rot("    github: [{repository: acme/dags, environment: 'prod ', secret: S}]\n"), `"prod " is not an environment name`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := policy.Parse([]byte(tt.src))
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("Parse: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("Parse = %v, want an error containing %q", err, tt.want)
			case tt.want == "":
				r, _ := p.Rotation("r")
				if r.Vault != nil {
					if err := r.Vault.Validate(); err != nil {
						t.Errorf("the sink refuses what the policy accepted: %v", err)
					}
				}
				for _, g := range r.GitHub {
					if err := g.Validate(); err != nil {
						t.Errorf("the sink refuses what the policy accepted: %v", err)
					}
				}
			}
		})
	}
}
