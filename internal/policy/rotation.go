package policy

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/astro-sts/astro-sts/internal/sink"
)

// Rotation strategies. The policy only validates the name; the rotation
// job (internal/rotation) carries them out.
const (
	// StrategyRotate: Astro's rotate endpoint (same token, new value, the
	// old value invalid at once).
	StrategyRotate = "rotate"
	// StrategyReplace: a new token takes the old one's place.
	StrategyReplace = "replace"
)

// Rotation is a managed token that workflows matching Allow may rotate,
// and where its new value is published. Treat its fields as read-only: the
// value is shared by every caller of the [Policy].
type Rotation struct {
	Name     string
	TokenID  string
	Strategy string // StrategyRotate or StrategyReplace
	Vault    *VaultTarget
	GitHub   []GitHubTarget

	allow matchSet
}

// VaultTarget is a KV secret field the new value is written to. The
// policy parses straight into the sink's own type, by the sink's naming
// rules, so that what the policy accepts the sink can write.
type VaultTarget = sink.VaultTarget

// GitHubTarget is an Actions secret the new value is written to: a
// repository secret (Repository), an environment secret (Repository and
// Environment) or an organisation secret (Organization, with Visibility
// and, for "selected", SelectedRepositoryIDs). Like [VaultTarget], it is
// the sink's own type.
type GitHubTarget = sink.GitHubTarget

// Allows reports whether a token with claims c may trigger the rotation.
// A nil Rotation allows nothing.
func (r *Rotation) Allows(c Claims) bool {
	return r != nil && r.allow.match(c)
}

// Rotation returns the rotation called name.
func (p *Policy) Rotation(name string) (*Rotation, bool) {
	if p == nil {
		return nil, false
	}
	for _, r := range p.rotations {
		if r.Name == name {
			return r, true
		}
	}
	return nil, false
}

// Rotations lists the rotations in file order. The slice is a copy.
func (p *Policy) Rotations() []*Rotation {
	if p == nil {
		return nil
	}
	return append([]*Rotation(nil), p.rotations...)
}

func (w *walker) rotations(n *yaml.Node) []*Rotation {
	items, ok := w.topList("rotations", n, MaxRotations)
	if !ok {
		return nil
	}
	out := make([]*Rotation, 0, len(items))
	names := make(map[string]int, len(items))
	for i, it := range items {
		where := fmt.Sprintf("rotations[%d]", i)
		r := &Rotation{}
		r.Name, where = w.name(where, it, names, i)
		f := w.fields(where, it, "name", "token_id", "strategy", "allow", "vault", "github")
		isMap := it.Kind == yaml.MappingNode
		if tn, ok := f["token_id"]; ok {
			if id, ok := w.str(where+".token_id", tn); ok {
				if idRE.MatchString(id) {
					r.TokenID = id
				} else {
					w.fail(where+".token_id", tn, "%q is not an Astro token id", id)
				}
			}
		} else if isMap {
			w.fail(where, it, "token_id is required")
		}
		if sn, ok := f["strategy"]; ok {
			if s, ok := w.str(where+".strategy", sn); ok {
				if s == StrategyRotate || s == StrategyReplace {
					r.Strategy = s
				} else {
					w.fail(where+".strategy", sn, "%q must be %s or %s", s, StrategyReplace, StrategyRotate)
				}
			}
		} else if isMap {
			w.fail(where, it, "strategy is required (%s or %s)", StrategyReplace, StrategyRotate)
		}
		if an, ok := f["allow"]; ok {
			r.allow = w.matchBlock(where+".allow", an)
		} else if isMap {
			w.fail(where, it, "allow is required")
		}
		if vn, ok := f["vault"]; ok {
			r.Vault = w.vault(where+".vault", vn)
		}
		if gn, ok := f["github"]; ok {
			r.GitHub = w.githubTargets(where+".github", gn)
		}
		_, hasVault := f["vault"]
		_, hasGitHub := f["github"]
		if isMap && !hasVault && !hasGitHub {
			w.fail(where, it, "needs at least one sink: vault or github")
		}
		out = append(out, r)
	}
	return out
}

func (w *walker) vault(where string, n *yaml.Node) *VaultTarget {
	before := len(w.errs)
	f := w.fields(where, n, "mount", "path", "field")
	v := &VaultTarget{}
	for _, k := range []struct {
		key   string
		dst   *string
		check func(string) error
	}{{"mount", &v.Mount, sink.CheckVaultPath}, {"path", &v.Path, sink.CheckVaultPath}, {"field", &v.Field, sink.CheckVaultField}} {
		node, ok := f[k.key]
		if !ok {
			if n.Kind == yaml.MappingNode {
				w.fail(where, n, "%s is required", k.key)
			}
			continue
		}
		s, ok := w.str(where+"."+k.key, node)
		if !ok {
			continue
		}
		if err := k.check(s); err != nil {
			w.fail(where+"."+k.key, node, "%q is not a valid Vault %s: %v", s, k.key, err)
			continue
		}
		*k.dst = s
	}
	if len(w.errs) == before {
		w.targetValid(where, n, v.Validate())
	}
	return v
}

// targetValid reports, at the target's node, what the sink's own Validate
// still finds in a target the walker accepted key by key: the policy never
// accepts a target its sink would refuse.
func (w *walker) targetValid(where string, n *yaml.Node, err error) {
	if err == nil {
		return
	}
	j, ok := err.(interface{ Unwrap() []error })
	if !ok {
		w.fail(where, n, "%v", err)
		return
	}
	for _, e := range j.Unwrap() {
		w.fail(where, n, "%v", e)
	}
}

func (w *walker) githubTargets(where string, n *yaml.Node) []GitHubTarget {
	items, ok := w.nonEmptyList(where, n)
	if !ok {
		return nil
	}
	out := make([]GitHubTarget, 0, len(items))
	seen := make(map[string]int, len(items))
	for i, it := range items {
		at := fmt.Sprintf("%s[%d]", where, i)
		before := len(w.errs)
		f := w.fields(at, it, "repository", "environment", "organization", "secret", "visibility", "selected_repository_ids")
		var t GitHubTarget
		get := func(key string) (string, *yaml.Node, bool) {
			node, ok := f[key]
			if !ok {
				return "", nil, false
			}
			s, ok := w.str(at+"."+key, node)
			return s, node, ok
		}
		repo, repoNode, hasRepo := get("repository")
		org, orgNode, hasOrg := get("organization")
		env, envNode, hasEnv := get("environment")
		secret, secretNode, hasSecret := get("secret")
		vis, visNode, hasVis := get("visibility")
		idsNode, hasIDs := f["selected_repository_ids"]

		switch {
		case hasRepo && hasOrg:
			w.fail(at, it, "has both repository and organization: write one target each")
		case hasRepo:
			if sink.ValidRepository(repo) {
				t.Repository = repo
			} else {
				w.fail(at+".repository", repoNode, "%q is not owner/name", repo)
			}
		case hasOrg:
			if sink.ValidOrganization(org) {
				t.Organization = org
			} else {
				w.fail(at+".organization", orgNode, "%q is not an organization login", org)
			}
		case it.Kind == yaml.MappingNode:
			w.fail(at, it, "needs repository or organization")
		}
		if hasEnv {
			switch {
			case !hasRepo:
				w.fail(at+".environment", envNode, "only a repository has environments")
			case !sink.ValidEnvironment(env):
				w.fail(at+".environment", envNode, "%q is not an environment name", env)
			default:
				t.Environment = env
			}
		}
		if hasSecret {
			switch err := sink.CheckSecretName(secret); {
			case err == nil:
				t.Secret = secret
			case errors.Is(err, sink.ErrReservedSecretName):
				w.fail(at+".secret", secretNode, "%q: secret names must not start with GITHUB_", secret)
			default:
				w.fail(at+".secret", secretNode, "%q is not a secret name: %v", secret, err)
			}
		} else if it.Kind == yaml.MappingNode {
			w.fail(at, it, "secret is required")
		}
		switch {
		case hasVis && !hasOrg:
			w.fail(at+".visibility", visNode, "only an organization secret has a visibility")
		case hasVis && vis != "all" && vis != "private" && vis != "selected":
			w.fail(at+".visibility", visNode, "%q must be all, private or selected", vis)
		case hasVis:
			t.Visibility = vis
		case hasOrg:
			w.fail(at, it, "an organization secret needs visibility: all, private or selected")
		}
		switch {
		case hasIDs && vis != "selected":
			w.fail(at+".selected_repository_ids", idsNode, "is only for visibility: selected")
		case hasIDs:
			t.SelectedRepositoryIDs = w.repoIDs(at+".selected_repository_ids", idsNode)
		case hasVis && vis == "selected":
			w.fail(at, it, "visibility selected needs selected_repository_ids")
		}
		if len(w.errs) == before {
			w.targetValid(at, it, t.Validate())
		}
		if t.Secret != "" && (t.Repository != "" || t.Organization != "") {
			key := strings.ToLower(t.Repository + "|" + t.Environment + "|" + t.Organization + "|" + t.Secret)
			if j, dup := seen[key]; dup {
				w.fail(at, it, "is the same secret as %s[%d]", where, j)
			}
			seen[key] = i
		}
		out = append(out, t)
	}
	return out
}

func (w *walker) repoIDs(where string, n *yaml.Node) []int64 {
	ids, _ := uniqueList(w, where, n, "%d", func(at string, it *yaml.Node) (int64, bool) {
		if it.Kind != yaml.ScalarNode || it.ShortTag() != "!!int" {
			w.fail(at, it, "must be a repository id (an integer)")
			return 0, false
		}
		id, err := strconv.ParseInt(it.Value, 10, 64)
		if err != nil || id <= 0 {
			w.fail(at, it, "%q is not a positive repository id", it.Value)
			return 0, false
		}
		return id, true
	})
	return ids
}
