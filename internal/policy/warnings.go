package policy

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
)

// Warning is something a valid policy allows that is likely wider than its
// author meant, as far as the file alone can tell: the rule still loads
// and decides. `astro-sts policy validate` prints them; with --strict they
// fail the check.
type Warning struct {
	// Where names the rule or rotation: `rules[2] "deploy-main"` or
	// `rotations[0] "airflow-ci".allow`.
	Where   string
	Message string
}

func (w Warning) String() string { return w.Where + ": " + w.Message }

// riskyEvents carry the identity of the base repository although the code
// that runs may come from elsewhere: pull_request_target runs in the base
// repository for a fork's pull request, workflow_run after another
// workflow, possibly a fork's.
var riskyEvents = []string{"pull_request_target", "workflow_run"}

// Warnings lists, rule by rule and then rotation by rotation, what the
// docs' security advice (docs/policy.md) warns against:
//   - a rule that binds neither ref nor environment (nor, for pull
//     requests, base_ref): any branch of the repository, a pull request's
//     included, gets the grant;
//   - events that include pull_request_target or workflow_run, or no
//     event_name at all, which includes them;
//   - job_workflow_ref as the identity without repository_owner_id (or
//     repository_id): a reusable workflow in a public repository can be
//     called from any repository on GitHub;
//   - names (repository, repository_owner, sub) without the numeric ids,
//     which survive renames: a freed name can be registered by someone else;
//   - a sub that names an owner or repository without their ids, which
//     stops matching when the repository moves to GitHub's immutable sub;
//   - a sub in the immutable sub's "-" form (repo:acme-65/...) without the
//     id claims: it is also the classic sub of an owner named "acme-65".
func (p *Policy) Warnings() []Warning {
	if p == nil {
		return nil
	}
	var out []Warning
	for i, r := range p.rules {
		out = append(out, r.match.warnings(fmt.Sprintf("rules[%d] %q", i, r.name))...)
	}
	for i, r := range p.rotations {
		out = append(out, r.allow.warnings(fmt.Sprintf("rotations[%d] %q.allow", i, r.Name))...)
	}
	return out
}

func (ms matchSet) warnings(where string) []Warning {
	var out []Warning
	warn := func(format string, a ...any) {
		out = append(out, Warning{Where: where, Message: fmt.Sprintf(format, a...)})
	}
	has := func(claim string) bool {
		return slices.ContainsFunc(ms, func(m matcher) bool { return m.claim == claim })
	}

	// A pull_request run's ref is refs/pull/<n>/merge, which no rule can
	// name in advance; base_ref, the branch it merges into, is its "where".
	if !has("ref") && !has("environment") && !has("base_ref") {
		warn("binds neither ref nor environment: every branch of the repository gets the grant, a pull request's included")
	}
	if i := slices.IndexFunc(ms, func(m matcher) bool { return m.claim == "event_name" }); i < 0 {
		warn("binds no event_name: pull_request_target and workflow_run runs, which carry the repository's identity for code it may not have reviewed, match too")
	} else {
		for _, ev := range riskyEvents {
			if ms[i].match(Claims{"event_name": ev}) {
				warn("its events include %s, which runs with the repository's identity for code it may not have reviewed", ev)
			}
		}
	}
	ownerID := has("repository_owner_id") || has("repository_id")
	if has("job_workflow_ref") && !ownerID {
		warn("job_workflow_ref without repository_owner_id: a reusable workflow in a public repository can be called from any repository on GitHub")
	}
	if has("repository") && !has("repository_id") {
		warn("repository without repository_id: a name can be freed by a rename or a deletion and registered by someone else; the id never changes")
	}
	if has("repository_owner") && !has("repository_owner_id") {
		warn("repository_owner without repository_owner_id: an owner's name can be freed and registered by someone else; the id never changes")
	}
	switch i := slices.IndexFunc(ms, func(m matcher) bool { return m.claim == "sub" }); {
	case i >= 0 && slices.ContainsFunc(ms[i].alts, alt.subNamesWithoutIDs):
		squat := ""
		if !ownerID {
			squat = ", and a name can be freed and registered by someone else"
		}
		warn("sub names an owner or repository without their ids: it stops matching once the repository uses GitHub's immutable sub (repo:OWNER@OWNER_ID/REPO@REPO_ID:..., the default for repositories created, renamed or transferred since 2026-06-18)%s; match repository_owner_id and repository_id instead, which carry the ids whatever the format", squat)
	case i >= 0 && !ownerID && !allCarryOwnerID(ms[i].alts):
		dash := ""
		if j := slices.IndexFunc(ms[i].alts, alt.subDashOwner); j >= 0 {
			owner := ms[i].alts[j].subOwner()
			dash = fmt.Sprintf("; %q is owner %q with id %s only in the immutable sub's \"-\" form: it is also the classic sub of an owner named %q",
				owner, owner[:strings.LastIndexByte(owner, '-')], owner[strings.LastIndexByte(owner, '-')+1:], owner)
		}
		warn("sub without repository_id or repository_owner_id: sub holds the repository's name, which can be freed and registered by someone else%s; match repository_owner_id and repository_id too, which carry the ids whatever the format", dash)
	}
	return out
}

// idSuffixRE is how GitHub's immutable sub ends an owner or a repository:
// its name, then "@" and its id. GitHub's changelog shows "-" as the
// separator (repo:octocat-123456/my-repo-456789:...) and "@" was reported
// to replace it: both count as the immutable format, so a rule written
// in either is not told it will stop matching.
var idSuffixRE = regexp.MustCompile(`[@-][0-9]+$`)

// atIDSuffixRE is the "@" form alone, the only one that fixes an id: GitHub
// names cannot hold "@", but "acme-65" is a valid owner name, whose classic
// sub repo:acme-65/... reads the same as owner "acme" with id 65 in the
// "-" form. Only "@" ids make a sub safe from squatting.
var atIDSuffixRE = regexp.MustCompile(`@[0-9]+$`)

func allCarryOwnerID(alts []alt) bool {
	return !slices.ContainsFunc(alts, func(a alt) bool { return !a.subCarriesOwnerID() })
}

// subOwner is the owner a, as a matcher of sub, names in full
// (repo:OWNER/...), or "" when its fixed text does not reach the "/".
func (a alt) subOwner() string {
	prefix, _ := a.literalPrefix()
	rest, ok := strings.CutPrefix(prefix, "repo:")
	owner, _, complete := strings.Cut(rest, "/")
	if !ok || !complete {
		return ""
	}
	return owner
}

// subCarriesOwnerID reports whether a, as a matcher of sub, fixes the
// owner's id as the immutable sub writes it with "@": such a sub cannot be
// squatted, as an owner_id binding cannot.
func (a alt) subCarriesOwnerID() bool {
	return atIDSuffixRE.MatchString(a.subOwner())
}

// subDashOwner reports whether a names its owner in the ambiguous "-"
// form, repo:NAME-DIGITS/...
func (a alt) subDashOwner() bool {
	owner := a.subOwner()
	return idSuffixRE.MatchString(owner) && !atIDSuffixRE.MatchString(owner)
}

// subNamesWithoutIDs reports whether a, as a matcher of sub, names an
// owner or a repository in the classic form repo:OWNER/REPO:..., without
// the ids the immutable form adds. Only the fixed text of a pattern is
// read: in {regex: "repo:acme/.*"} the owner is named, the repository not.
func (a alt) subNamesWithoutIDs() bool {
	prefix, _ := a.literalPrefix()
	rest, ok := strings.CutPrefix(prefix, "repo:")
	if !ok {
		return false // a customised sub (include_claim_keys): nothing to read
	}
	owner, repo, complete := strings.Cut(rest, "/")
	switch {
	case owner == "":
		return false
	case !complete:
		// The owner's name, but not its end: a pattern that goes on to
		// an "@" ({regex: "repo:acme[@-]65/.*"}) may well carry the id.
		return !strings.Contains(a.value, "@")
	case !idSuffixRE.MatchString(owner):
		return true
	}
	name, _, complete := strings.Cut(repo, ":")
	return complete && name != "" && !idSuffixRE.MatchString(name)
}
