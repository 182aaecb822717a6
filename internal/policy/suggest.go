package policy

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/astro-sts/astro-sts/internal/astro"
)

// SuggestedWorkspace stands in for the Workspace id in a suggested rule
// when the job did not name one: the platform team fills it in.
const SuggestedWorkspace = "REPLACE-WITH-WORKSPACE-ID"

// suggestedRole and suggestedTTL are a suggested grant's defaults when the
// job asked for no role or ttl: WORKSPACE_AUTHOR deploys code, and 30
// minutes covers a deploy.
const (
	suggestedRole = astro.RoleWorkspaceAuthor
	suggestedTTL  = 30 * time.Minute
)

// ErrNoIdentity: the claims lack the numeric ids a suggested rule binds.
var ErrNoIdentity = errors.New("policy: the claims have no repository_id and repository_owner_id to bind")

// nameSepRE is what a suggested name turns into one '-': anything outside
// the name syntax, with the dashes around it.
var nameSepRE = regexp.MustCompile(`[^A-Za-z0-9._]+`)

// Suggest writes a rule, as an item of the policy's rules list ready to
// paste under `rules:`, that trusts exactly the identity of c with the
// narrowest bindings the token offers: the numeric repository_owner_id and
// repository_id (names can be freed and taken by someone else), the
// environment if the job has one, else the ref, and the event_name. Its
// grant is what r asked for, with SuggestedWorkspace, WORKSPACE_AUTHOR and
// 30m where it asked for nothing. Values are JSON-quoted, which YAML reads
// as the same strings, so a claim cannot break out of its line.
//
// A workflow author hands it to the platform team with a refusal: it
// needs no knowledge of the policy, only of the job's own token.
func Suggest(c Claims, r Request) (string, error) {
	repoID, owner := c["repository_id"], c["repository_owner_id"]
	if repoID == "" || owner == "" {
		return "", ErrNoIdentity
	}
	var b strings.Builder
	fmt.Fprintf(&b, "  - name: %s\n", jsonString(suggestName(c)))
	b.WriteString("    match:\n")
	entry := func(key, v string) { fmt.Fprintf(&b, "      %s: %s\n", key, jsonString(v)) }
	entry("repository_owner_id", owner)
	entry("repository_id", repoID)
	switch env, ref := c["environment"], c["ref"]; {
	case env != "":
		entry("environment", env)
	case ref != "":
		entry("ref", ref)
	}
	if ev := c["event_name"]; ev != "" {
		entry("event_name", ev)
	}

	b.WriteString("    grant:\n")
	ttl := suggestedTTL
	if r.TTL > 0 {
		ttl = min(max(r.TTL, MinTTL), MaxTTL)
	}
	if r.DeploymentID != "" && idRE.MatchString(r.DeploymentID) {
		fmt.Fprintf(&b, "      deployments: [%s]\n", jsonString(r.DeploymentID))
	} else {
		ws := SuggestedWorkspace
		if r.WorkspaceID != "" && idRE.MatchString(r.WorkspaceID) {
			ws = r.WorkspaceID
		}
		role := suggestedRole
		if astro.ValidRole(astro.EntityWorkspace, r.Role) {
			role = r.Role
		}
		fmt.Fprintf(&b, "      workspaces: [%s]\n", jsonString(ws))
		fmt.Fprintf(&b, "      max_role: %s\n", role)
	}
	fmt.Fprintf(&b, "      max_ttl: %s\n", ttl)
	return b.String(), nil
}

// suggestName names the rule after the repository and its environment or
// branch, e.g. "dags-main", within the rules' name syntax.
func suggestName(c Claims) string {
	repo := c["repository"]
	if i := strings.LastIndex(repo, "/"); i >= 0 {
		repo = repo[i+1:]
	}
	where := c["environment"]
	if where == "" {
		where = c["ref"]
		for _, p := range []string{"refs/heads/", "refs/tags/"} {
			where = strings.TrimPrefix(where, p)
		}
	}
	name := repo
	if where != "" {
		name += "-" + where
	}
	name = strings.Trim(nameSepRE.ReplaceAllString(name, "-"), "-._")
	if len(name) > 64 {
		name = strings.TrimRight(name[:64], "-._")
	}
	if !nameRE.MatchString(name) {
		return "new-rule"
	}
	return name
}
