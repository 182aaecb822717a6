package issuer

import (
	"strings"
	"time"
)

// Claims is the content of a GitHub Actions OIDC ID token, one field per
// claim GitHub documents. [Issuer.Mint] fills every zero field from
// [DefaultClaims], so a test states only what it cares about.
//
// A zero field cannot express "this claim is an empty string" or "this claim
// is absent": use Extra for that (a nil value removes a claim, a "" value
// sets it empty).
type Claims struct {
	// Issuer overrides iss; empty means the issuer's own URL. Tests use it to
	// mint tokens that claim to come from somewhere else.
	Issuer string

	Audience string // aud; empty means the default https://github.com/<owner>
	Subject  string // sub

	Actor                string
	ActorID              string
	BaseRef              string
	HeadRef              string
	CheckRunID           string
	Enterprise           string
	EnterpriseID         string
	Environment          string
	EventName            string
	JobWorkflowRef       string
	JobWorkflowSHA       string
	Ref                  string
	RefType              string
	RefProtected         string // "true" or "false", a string as GitHub sends it
	Repository           string
	RepositoryID         string
	RepositoryOwner      string
	RepositoryOwnerID    string
	RepositoryVisibility string
	RunID                string
	RunNumber            string
	RunAttempt           string
	RunnerEnvironment    string // github-hosted or self-hosted
	SHA                  string
	Workflow             string
	WorkflowRef          string
	WorkflowSHA          string

	// JTI is the token id; empty means a fresh random UUID.
	JTI string

	// IssuedAt defaults to now, NotBefore to now-60s, Expiry to
	// IssuedAt+Lifetime.
	IssuedAt, NotBefore, Expiry time.Time

	// Extra claims are applied last and override the fields above: a nil
	// value removes a claim (for example {"environment": nil}), anything
	// else is set as given (repo_property_*, or a number where a string
	// belongs, for negative tests).
	Extra map[string]any
}

// DefaultClaims returns a complete, consistent GitHub-shaped claim set: a
// push to main of acme/dags (repository id "123456", owner acme id "65") in
// a job bound to the production environment, on a GitHub-hosted runner.
// Times and jti are left zero so that [Issuer.Mint] sets them.
func DefaultClaims() Claims {
	const sha = "5e4c7d1a9b2f3e8d6c0a1b2c3d4e5f60718293a4"
	return Claims{
		Audience:             "https://github.com/acme",
		Subject:              "repo:acme/dags:environment:production",
		Actor:                "octocat",
		ActorID:              "583231",
		BaseRef:              "",
		HeadRef:              "",
		CheckRunID:           "31337000001",
		Enterprise:           "acme-enterprise",
		EnterpriseID:         "4242",
		Environment:          "production",
		EventName:            "push",
		JobWorkflowRef:       "acme/dags/.github/workflows/deploy.yml@refs/heads/main",
		JobWorkflowSHA:       sha,
		Ref:                  "refs/heads/main",
		RefType:              "branch",
		RefProtected:         "true",
		Repository:           "acme/dags",
		RepositoryID:         "123456",
		RepositoryOwner:      "acme",
		RepositoryOwnerID:    "65",
		RepositoryVisibility: "private",
		RunID:                "9876543210",
		RunNumber:            "42",
		RunAttempt:           "1",
		RunnerEnvironment:    "github-hosted",
		SHA:                  sha,
		Workflow:             "deploy",
		WorkflowRef:          "acme/dags/.github/workflows/deploy.yml@refs/heads/main",
		WorkflowSHA:          sha,
	}
}

// ImmutableSubject is sub in GitHub's immutable format for c's repository:
// the owner's and the repository's names each followed by sep and their id,
// e.g. repo:acme@65/dags@123456:environment:production. GitHub's changelog
// shows sep "-"; "@" was reported to replace it after a name-squatting
// report; tests try both. The context after the repository is c's
// environment, or else its ref.
func ImmutableSubject(c Claims, sep string) string {
	c = c.withDefaults()
	where := "ref:" + c.Ref
	if c.Environment != "" {
		where = "environment:" + c.Environment
	}
	repo := c.Repository
	if i := strings.LastIndex(repo, "/"); i >= 0 {
		repo = repo[i+1:]
	}
	return "repo:" + c.RepositoryOwner + sep + c.RepositoryOwnerID + "/" + repo + sep + c.RepositoryID + ":" + where
}

// ImmutableClaims returns [DefaultClaims] as GitHub sends them for a
// repository on the immutable sub (opt-in since 2026-04-23, the default for
// repositories created, renamed or transferred on github.com since
// 2026-06-18), with sep between names and ids, and with the claims newer
// tokens carry: check_run_id (in [DefaultClaims] too) and a repository
// custom property, repo_property_astro-team "data".
func ImmutableClaims(sep string) Claims {
	c := DefaultClaims()
	c.Subject = ImmutableSubject(c, sep)
	c.Extra = map[string]any{"repo_property_astro-team": "data"}
	return c
}

// stringClaims lists the string claims of c by their JSON names, in the
// order GitHub documents them. Empty values are included: callers decide
// what empty means.
func (c *Claims) stringClaims() []stringClaim {
	return []stringClaim{
		{"iss", &c.Issuer},
		{"aud", &c.Audience},
		{"sub", &c.Subject},
		{"actor", &c.Actor},
		{"actor_id", &c.ActorID},
		{"base_ref", &c.BaseRef},
		{"head_ref", &c.HeadRef},
		{"check_run_id", &c.CheckRunID},
		{"enterprise", &c.Enterprise},
		{"enterprise_id", &c.EnterpriseID},
		{"environment", &c.Environment},
		{"event_name", &c.EventName},
		{"job_workflow_ref", &c.JobWorkflowRef},
		{"job_workflow_sha", &c.JobWorkflowSHA},
		{"ref", &c.Ref},
		{"ref_type", &c.RefType},
		{"ref_protected", &c.RefProtected},
		{"repository", &c.Repository},
		{"repository_id", &c.RepositoryID},
		{"repository_owner", &c.RepositoryOwner},
		{"repository_owner_id", &c.RepositoryOwnerID},
		{"repository_visibility", &c.RepositoryVisibility},
		{"run_id", &c.RunID},
		{"run_number", &c.RunNumber},
		{"run_attempt", &c.RunAttempt},
		{"runner_environment", &c.RunnerEnvironment},
		{"sha", &c.SHA},
		{"workflow", &c.Workflow},
		{"workflow_ref", &c.WorkflowRef},
		{"workflow_sha", &c.WorkflowSHA},
		{"jti", &c.JTI},
	}
}

type stringClaim struct {
	name string
	v    *string
}

// withDefaults returns c with every zero string field taken from
// [DefaultClaims], and a zero Audience set to the owner's URL as GitHub
// does. Issuer, JTI, times and Extra are left alone.
func (c Claims) withDefaults() Claims {
	d := DefaultClaims()
	dst, src := c.stringClaims(), d.stringClaims()
	for i := range dst {
		switch dst[i].name {
		case "iss", "jti", "aud":
			continue
		}
		if *dst[i].v == "" {
			*dst[i].v = *src[i].v
		}
	}
	if c.Audience == "" {
		c.Audience = defaultAudience(c.RepositoryOwner)
	}
	return c
}

// defaultAudience is the audience GitHub puts in a token when the job asks
// for none: the owner's URL.
func defaultAudience(owner string) string {
	return "https://github.com/" + owner
}
