package action

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/sethvargo/go-githubactions"

	"github.com/astro-sts/astro-sts/internal/brokerapi"
	"github.com/astro-sts/astro-sts/internal/policy"
)

// A refused job cannot see the trust policy, and must not: any workflow on
// GitHub can ask the broker, and the policy is the platform team's. What
// the job can see is its own identity. So a refusal is explained with what
// the job has: the broker's request id and code, the claims of its own
// OIDC token that policies match on, and a rule that would trust exactly
// this job, for the workflow's author to hand to the platform team.

// IdentityClaims are the claims of the job's OIDC token that a refusal
// shows, in this order: those trust policies match on. Never the token.
func IdentityClaims() []string {
	return []string{
		"repository", "repository_id", "repository_owner_id", "ref", "ref_type", "event_name",
		"environment", "job_workflow_ref", "sub", "runner_environment",
	}
}

// absent is how a refusal shows a claim the token does not carry.
const absent = "(not in the token)"

// refusal is a refused exchange, with what the job can tell about itself.
type refusal struct {
	err    *BrokerError
	claims map[string]string // the last attempt's OIDC token's claims; nil if unknown
	rule   string            // a suggested rule, "" when a rule cannot help
}

// newRefusal explains err if it is the broker's refusal of an exchange (a
// 4xx: the broker decided against this job, rate_limited included: which
// repository ran out, and when to come back). Retryable failures, Astro's
// throttling of the broker (a 429 too) and malformed inputs are not
// explained: there is nothing about the job's identity to hand on.
func newRefusal(err error, claims map[string]string, in inputs) (refusal, bool) {
	var be *BrokerError
	if !errors.As(err, &be) || be.Op != opExchange || be.Status < 400 || be.Status >= 500 ||
		(be.Status == 429 && be.Code != brokerapi.CodeRateLimited) || be.Code == brokerapi.CodeBadRequest || be.Code == brokerapi.CodeTooLarge {
		return refusal{}, false
	}
	r := refusal{err: be, claims: claims}
	// A rule helps when the policy is what refused: no rule trusts the job,
	// or the one that does grants less than it asked.
	if claims != nil && (be.Code == brokerapi.CodeDenied || be.Code == brokerapi.CodeTooWide) {
		if rule, err := policy.Suggest(policy.Claims(claims), suggestRequest(in)); err == nil {
			r.rule = rule
		}
	}
	return r, true
}

// suggestRequest is the job's inputs as the request a suggested rule must
// cover.
func suggestRequest(in inputs) policy.Request {
	r := policy.Request{WorkspaceID: in.workspaceID, DeploymentID: in.deploymentID, Role: in.role}
	if d, err := time.ParseDuration(in.ttl); err == nil {
		r.TTL = d
	}
	return r
}

// claim is the value of claim name as a refusal shows it: cleaned for one
// log line, or [absent].
func (r refusal) claim(name string) string {
	v, ok := r.claims[name]
	if !ok {
		return absent
	}
	if v == "" {
		return `""`
	}
	return cleanText(v, 300)
}

// log writes the explanation to the job log, before the step's error.
func (r refusal) log(a *githubactions.Action) {
	be := r.err
	infof(a, "The broker refused this job's token exchange. Request id: %s (the broker's log explains the refusal under it).", orNone(be.RequestID))
	code := be.Code
	if be.Reason != "" {
		code += " (" + be.Reason + ")"
	}
	infof(a, "  code:    %s", orNone(code))
	infof(a, "  message: %s", orNone(be.Message))
	if be.Code == brokerapi.CodeTooWide && be.Field != "" {
		infof(a, "  rule %s trusts this job, and allows at most %s: %s", orNone(be.Rule), be.Field, orNone(be.Allowed))
	}
	if be.RetryAfter > 0 {
		infof(a, "  retry after: %s", be.RetryAfter)
	}
	if r.claims == nil {
		return
	}
	infof(a, "This job's identity: the claims of its own OIDC token that trust policies match on (the token itself is never shown):")
	for _, name := range IdentityClaims() {
		infof(a, "  %-20s %s", name+":", r.claim(name))
	}
	if r.rule == "" {
		return
	}
	infof(a, "A rule that trusts exactly this job, for your platform team to review and add under `rules:` in the trust policy:")
	for _, line := range strings.Split(strings.TrimSuffix(r.rule, "\n"), "\n") {
		infof(a, "%s", line)
	}
	infof(a, "Send them the request id %s with it.", orNone(be.RequestID))
}

// summary is the explanation as the step summary shows it.
func (r refusal) summary() string {
	be := r.err
	var b strings.Builder
	b.WriteString("### Astro API token refused\n\n")
	b.WriteString("| | |\n|---|---|\n")
	row := func(k, v string) { fmt.Fprintf(&b, "| %s | %s |\n", k, v) }
	row("Request id", md(be.RequestID)+" (the broker's log explains the refusal under it)")
	code := md(be.Code)
	if be.Reason != "" {
		code += " (" + md(be.Reason) + ")"
	}
	row("Code", code)
	row("Message", md(be.Message))
	if be.Code == brokerapi.CodeTooWide && be.Field != "" {
		row("Rule", md(be.Rule)+": allows at most "+md(be.Allowed)+" for "+md(be.Field))
	}
	if be.RetryAfter > 0 {
		row("Retry after", md(be.RetryAfter.String()))
	}
	if r.claims == nil {
		return b.String()
	}
	b.WriteString("\n**This job's identity**: the claims of its own OIDC token that trust policies match on.\n\n")
	b.WriteString("| Claim | Value |\n|---|---|\n")
	for _, name := range IdentityClaims() {
		row(md(name), md(r.claim(name)))
	}
	if r.rule != "" {
		b.WriteString("\n**A rule that trusts exactly this job**: numeric ids, its environment or ref, its event. " +
			"Hand it to your platform team with the request id, to review and add under `rules:` in the trust policy.\n\n")
		// An HTML block, not a fenced one: its text is the rule as the
		// reader copies it, but written as [md] writes a value, so the
		// claims in it hold nothing a reader of the file could link.
		b.WriteString("<pre lang=\"yaml\">\n" + htmlText(r.rule) + "</pre>\n")
	}
	return b.String()
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

// dryRunText says what an exchange would have minted.
func dryRunText(d dryRunReply) string {
	var scope string
	switch {
	case d.DeploymentID != "":
		scope = "a Deployment token for " + d.DeploymentID
	case d.WorkspaceID != "":
		scope = "a Workspace token for " + d.WorkspaceID
	default:
		ids := slices.Sorted(maps.Keys(d.WorkspaceRoles))
		scope = "an Organization token for Workspaces " + strings.Join(ids, ", ")
	}
	return fmt.Sprintf("%s, role %s, for %s, under rule %q", scope, d.Role, d.TTL, d.Rule)
}

// dryRunSummary is the step summary of an allowed dry run.
func dryRunSummary(d dryRunReply) string {
	var b strings.Builder
	b.WriteString("### Astro API token exchange: dry run, allowed\n\n")
	b.WriteString("Nothing was minted and nothing exported; the job's OIDC token was not spent.\n\n")
	b.WriteString("| | |\n|---|---|\n")
	row := func(k, v string) { fmt.Fprintf(&b, "| %s | %s |\n", k, v) }
	row("Rule", md(d.Rule))
	row("Scope", md(d.Scope))
	if d.WorkspaceID != "" {
		row("Workspace", md(d.WorkspaceID))
	}
	if d.DeploymentID != "" {
		row("Deployment", md(d.DeploymentID))
	}
	for _, id := range slices.Sorted(maps.Keys(d.WorkspaceRoles)) {
		row("Workspace", md(id))
	}
	row("Role", md(d.Role))
	row("TTL", md(d.TTL))
	row("Request id", md(d.RequestID))
	return b.String()
}
