// Package policy is the broker's trust policy: which GitHub Actions
// identities may get which Astro tokens, and which may trigger which token
// rotation.
//
// A policy is YAML, parsed strictly (an unknown or misspelt key is an
// error, never silently ignored), validated (every problem reported at
// once) and compiled into an immutable [Policy] shared by all requests. It
// denies by default: a request is allowed only by a rule whose every match
// entry holds for the token's claims and whose grant covers what was asked.
// A request may narrow a grant (a lower role, a shorter TTL, one of the
// Workspaces), never widen it.
//
// [Reloader] holds the current policy for a running broker and swaps in a new
// one on SIGHUP or when the file changes, keeping the old one if the new
// file is bad. See docs/policy.md for the file format.
package policy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/astro-sts/astro-sts/internal/astro"
)

// Limits on a policy file, so that a mistaken or hostile file cannot make
// loading or matching expensive.
const (
	MaxFileSize  = 1 << 20
	MaxRules     = 1000
	MaxRotations = 1000
	// MaxGrantIDs bounds the Workspaces or Deployments of one grant.
	MaxGrantIDs = 100
	// MinTTL and MaxTTL bound max_ttl. Astro's own smallest expiry is one
	// day, which is the backstop if the broker fails to revoke; MaxTTL
	// keeps the broker's promise within it.
	MinTTL = time.Minute
	MaxTTL = 24 * time.Hour
)

var (
	// ErrNoMatchingRule: no rule matches the claims. Deny by default
	// (403).
	ErrNoMatchingRule = errors.New("policy: no rule matches")
	// ErrBadRequest: the request itself is malformed (unknown role,
	// negative TTL, both workspace_id and deployment_id, ...) or
	// incomplete for the matching grant (400). Its text is safe to return
	// to the caller.
	ErrBadRequest = errors.New("policy: bad request")
)

// WidenError is returned when a rule matches the claims but the request
// asks for more than its grant: a higher role, a longer TTL, a Workspace or
// Deployment it does not list (403). Its Error text names what was too wide
// and is safe to return to the caller, who has proven their identity.
type WidenError struct {
	Rule    string
	Field   string // "role", "ttl", "workspace_id" or "deployment_id"
	Asked   string
	Allowed string
}

func (e *WidenError) Error() string {
	switch e.Field {
	case "workspace_id", "deployment_id":
		return fmt.Sprintf("%s %q is not granted by rule %q", e.Field, e.Asked, e.Rule)
	case "role":
		_, askedWS := astro.WorkspaceRoleRank(e.Asked)
		_, allowedWS := astro.WorkspaceRoleRank(e.Allowed)
		if askedWS != allowedWS {
			return fmt.Sprintf("role %s is not granted by rule %q, which allows %s", e.Asked, e.Rule, e.Allowed)
		}
	}
	return fmt.Sprintf("%s %s exceeds %s allowed by rule %q", e.Field, e.Asked, e.Allowed, e.Rule)
}

// Claims are a verified token's string claims by JSON name (idtoken's
// Claims.Strings). A claim absent from the map never matches; an empty
// value matches only an explicit "".
type Claims map[string]string

// Request is what the caller asks for. A zero field is "not asked": the
// grant's maximum (or its only Workspace or Deployment) is used.
type Request struct {
	WorkspaceID  string
	DeploymentID string
	Role         string
	TTL          time.Duration
}

// Decision is an allowed request: what to mint.
type Decision struct {
	// Rule is the name of the deciding rule, for the audit log.
	Rule string
	// Scope is WORKSPACE (one Workspace), DEPLOYMENT, or ORGANIZATION:
	// several Workspaces, as an Organization token with
	// ORGANIZATION_MEMBER plus a role on each ("an Organization token
	// added to a Workspace").
	Scope astro.Scope
	// WorkspaceID is set for WORKSPACE scope.
	WorkspaceID string
	// DeploymentID is set for DEPLOYMENT scope.
	DeploymentID string
	// WorkspaceRoles is set for ORGANIZATION scope: Workspace id -> role.
	WorkspaceRoles map[string]string
	// Role is the Workspace role, or DEPLOYMENT_ADMIN.
	Role string
	// TTL is how long the broker keeps the token before revoking it.
	TTL time.Duration
	// RateLimit is the deciding rule's limit on tokens per repository
	// (the policy's default unless the rule sets its own); zero is none.
	RateLimit RateLimit
}

// Policy is a compiled, immutable trust policy. Its methods are safe for
// concurrent use.
type Policy struct {
	rules     []rule
	rotations []*Rotation
	digest    string
}

type rule struct {
	name  string
	match matchSet
	grant grant
	limit RateLimit
}

// grant is what a rule allows: Workspaces with a maximum Workspace role,
// or Deployments (DEPLOYMENT_ADMIN), for at most maxTTL.
type grant struct {
	workspaces  []string
	deployments []string
	maxRole     string
	maxTTL      time.Duration
}

// idRE is what Astro ids (cuid) and token ids look like, with room to
// spare; it keeps path separators and the like out of URLs built from them.
var idRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$`)

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// Load reads and parses the policy file at path.
func Load(path string) (*Policy, error) {
	data, err := readFile(path)
	if err != nil {
		return nil, err
	}
	p, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return p, nil
}

// readFile reads at most MaxFileSize bytes of path, and fails if there is
// more.
func readFile(path string) ([]byte, error) {
	data, more, err := ReadLimited(path, MaxFileSize)
	if more {
		return nil, fmt.Errorf("%s: policy file is larger than %d bytes", path, MaxFileSize)
	}
	return data, err
}

// ReadLimited reads path, at most limit bytes of it: more reports that the
// file is larger (and data is then nil), so that a huge or endless file
// (a FIFO, /dev/zero) costs no more than limit.
func ReadLimited(path string, limit int) (data []byte, more bool, err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, false, err
	}
	defer f.Close()
	data, err = io.ReadAll(io.LimitReader(f, int64(limit)+1))
	if err != nil {
		return nil, false, err
	}
	if len(data) > limit {
		return nil, true, nil
	}
	return data, false, nil
}

// Parse decodes, validates and compiles a policy. It accepts exactly one
// YAML document. All problems found are returned at once (errors.Join),
// each naming the rule or rotation and the key.
func Parse(data []byte) (*Policy, error) {
	if len(data) > MaxFileSize {
		return nil, fmt.Errorf("policy is %d bytes, more than %d", len(data), MaxFileSize)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("policy is empty")
		}
		return nil, fmt.Errorf("policy is not valid YAML: %w", err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, errors.New("policy must be a single YAML document")
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 {
		return nil, errors.New("policy is empty")
	}

	w := &walker{}
	p := &Policy{}
	top := w.fields("policy", doc.Content[0], "rate_limit", "rules", "rotations")
	rulesNode, hasRules := top["rules"]
	rotNode, hasRot := top["rotations"]
	if !hasRules && !hasRot && len(w.errs) == 0 {
		w.fail("policy", doc.Content[0], "has neither rules nor rotations")
	}
	var defaultLimit RateLimit
	if ln, ok := top["rate_limit"]; ok {
		defaultLimit = w.rateLimit("rate_limit", ln, false)
	}
	if hasRules {
		p.rules = w.rules(rulesNode, defaultLimit)
	}
	if hasRot {
		p.rotations = w.rotations(rotNode)
	}
	if err := errors.Join(w.errs...); err != nil {
		return nil, err
	}
	p.digest = digest(data)
	return p, nil
}

func (w *walker) rules(n *yaml.Node, defaultLimit RateLimit) []rule {
	items, ok := w.topList("rules", n, MaxRules)
	if !ok {
		return nil
	}
	out := make([]rule, 0, len(items))
	names := make(map[string]int, len(items))
	for i, it := range items {
		where := fmt.Sprintf("rules[%d]", i)
		var r rule
		r.name, where = w.name(where, it, names, i)
		f := w.fields(where, it, "name", "match", "grant", "rate_limit")
		if mn, ok := f["match"]; ok {
			r.match = w.matchBlock(where+".match", mn)
		} else if it.Kind == yaml.MappingNode {
			w.fail(where, it, "match is required")
		}
		if gn, ok := f["grant"]; ok {
			r.grant = w.grant(where+".grant", gn)
		} else if it.Kind == yaml.MappingNode {
			w.fail(where, it, "grant is required")
		}
		r.limit = defaultLimit
		if ln, ok := f["rate_limit"]; ok {
			r.limit = w.rateLimit(where+".rate_limit", ln, true)
		}
		out = append(out, r)
	}
	return out
}

// name reads and checks the name of list item it (a rule or a rotation),
// and returns it with the label later messages use: `rules[2] "deploy"`.
// names maps the names seen so far to their index.
func (w *walker) name(where string, it *yaml.Node, names map[string]int, i int) (string, string) {
	if it.Kind != yaml.MappingNode {
		return "", where // fields reports it
	}
	var nn *yaml.Node
	for j := 0; j+1 < len(it.Content); j += 2 {
		if it.Content[j].Value == "name" {
			nn = it.Content[j+1]
			break
		}
	}
	if nn == nil {
		w.fail(where, it, "name is required")
		return "", where
	}
	name, ok := w.str(where+".name", nn)
	switch {
	case !ok:
	case !nameRE.MatchString(name):
		w.fail(where+".name", nn, "%q must be 1-64 letters, digits, '.', '_' or '-'", name)
	default:
		if j, dup := names[name]; dup {
			w.fail(where+".name", nn, "%q is also the name of %s[%d]", name, strings.SplitN(where, "[", 2)[0], j)
			return "", where
		}
		names[name] = i
		return name, fmt.Sprintf("%s %q", where, name)
	}
	return "", where
}

func (w *walker) grant(where string, n *yaml.Node) grant {
	f := w.fields(where, n, "workspaces", "deployments", "max_role", "max_ttl")
	var g grant
	wsNode, hasWS := f["workspaces"]
	depNode, hasDep := f["deployments"]
	switch {
	case hasWS && hasDep:
		w.fail(where, n, "has both workspaces and deployments: a token is scoped to one kind (write two rules)")
	case hasWS:
		g.workspaces = w.ids(where+".workspaces", wsNode)
	case hasDep:
		g.deployments = w.ids(where+".deployments", depNode)
	case n.Kind == yaml.MappingNode:
		w.fail(where, n, "needs workspaces or deployments")
	}

	if rn, ok := f["max_role"]; ok {
		if role, ok := w.str(where+".max_role", rn); ok {
			switch {
			case hasDep && role != astro.RoleDeploymentAdmin:
				w.fail(where+".max_role", rn, "%q: a Deployment grant's role can only be %s", role, astro.RoleDeploymentAdmin)
			case !hasDep && !astro.ValidRole(astro.EntityWorkspace, role):
				w.fail(where+".max_role", rn, "%q is not a Workspace role (%s)", role, strings.Join(workspaceRoles(), ", "))
			default:
				g.maxRole = role
			}
		}
	} else if hasDep {
		g.maxRole = astro.RoleDeploymentAdmin
	} else if hasWS {
		w.fail(where, n, "max_role is required for a Workspace grant")
	}

	if tn, ok := f["max_ttl"]; ok {
		if s, ok := w.str(where+".max_ttl", tn); ok {
			d, err := time.ParseDuration(s)
			switch {
			case err != nil:
				w.fail(where+".max_ttl", tn, "%q is not a duration like 30m or 2h", s)
			case d < MinTTL || d > MaxTTL:
				w.fail(where+".max_ttl", tn, "%v is not within %v..%v", d, MinTTL, MaxTTL)
			default:
				g.maxTTL = d
			}
		}
	} else if n.Kind == yaml.MappingNode {
		w.fail(where, n, "max_ttl is required")
	}
	return g
}

// ids reads a grant's list of Workspace or Deployment ids.
func (w *walker) ids(where string, n *yaml.Node) []string {
	ids, ok := w.strList(where, n)
	if !ok {
		return nil
	}
	if len(ids) > MaxGrantIDs {
		w.fail(where, n, "has %d entries, more than %d", len(ids), MaxGrantIDs)
		return nil
	}
	for i, id := range ids {
		if !idRE.MatchString(id) {
			w.fail(fmt.Sprintf("%s[%d]", where, i), n.Content[i], "%q is not an Astro id", id)
			ok = false
		}
	}
	if !ok {
		return nil
	}
	return ids
}

func workspaceRoles() []string {
	return []string{astro.RoleWorkspaceAccessor, astro.RoleWorkspaceMember, astro.RoleWorkspaceAuthor, astro.RoleWorkspaceOperator, astro.RoleWorkspaceOwner}
}

// Rules is the number of rules.
func (p *Policy) Rules() int { return len(p.rules) }

// RuleNames lists the rules' names in order.
func (p *Policy) RuleNames() []string {
	out := make([]string, len(p.rules))
	for i, r := range p.rules {
		out[i] = r.name
	}
	return out
}

// Digest is the hex SHA-256 of the policy's source bytes, to say in logs
// and readiness checks which policy is in force.
func (p *Policy) Digest() string { return p.digest }

// Decide applies the policy to a verified token's claims and a request.
// Rules are tried in order; the first that matches the claims and covers
// the request decides. If rules matched but none covered the request, the
// refusal of the first of them is returned (a [*WidenError], or an
// [ErrBadRequest] when the request is incomplete for its grant); if none
// matched, [ErrNoMatchingRule]. A malformed request is [ErrBadRequest]
// before any rule is tried.
func (p *Policy) Decide(c Claims, r Request) (Decision, error) {
	if p == nil {
		return Decision{}, ErrNoMatchingRule
	}
	if err := r.Validate(); err != nil {
		return Decision{}, err
	}
	var refusal error
	for i := range p.rules {
		ru := &p.rules[i]
		if !ru.match.match(c) {
			continue
		}
		d, err := ru.cover(r)
		if err == nil {
			return d, nil
		}
		if refusal == nil {
			refusal = err
		}
	}
	if refusal != nil {
		return Decision{}, refusal
	}
	return Decision{}, ErrNoMatchingRule
}

// Validate refuses requests that no grant could cover ([ErrBadRequest]),
// whatever the policy: [Policy.Decide] calls it first. Its messages quote
// the caller's input only after checking it is short and plain.
func (r Request) Validate() error {
	var errs []string
	if r.Role != "" && !astro.ValidRole(astro.EntityWorkspace, r.Role) && r.Role != astro.RoleDeploymentAdmin {
		errs = append(errs, fmt.Sprintf("unknown role %s (want a Workspace role or %s)", quote(r.Role), astro.RoleDeploymentAdmin))
	}
	if r.TTL < 0 {
		errs = append(errs, "ttl is negative")
	}
	if r.WorkspaceID != "" && r.DeploymentID != "" {
		errs = append(errs, "ask for workspace_id or deployment_id, not both")
	}
	if r.WorkspaceID != "" && !idRE.MatchString(r.WorkspaceID) {
		errs = append(errs, "workspace_id is not an Astro id")
	}
	if r.DeploymentID != "" && !idRE.MatchString(r.DeploymentID) {
		errs = append(errs, "deployment_id is not an Astro id")
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: %s", ErrBadRequest, strings.Join(errs, "; "))
	}
	return nil
}

// quote returns s quoted if it is a plausible role name, or a placeholder,
// so that the caller's garbage is not reflected in an answer.
func quote(s string) string {
	if len(s) <= 64 && nameRE.MatchString(s) {
		return fmt.Sprintf("%q", s)
	}
	return "(malformed)"
}

// cover decides whether the rule's grant covers r, narrowing it to r.
func (ru *rule) cover(r Request) (Decision, error) {
	g := ru.grant
	d := Decision{Rule: ru.name, Role: g.maxRole, TTL: g.maxTTL, RateLimit: ru.limit}
	if r.TTL > 0 {
		if r.TTL > g.maxTTL {
			return Decision{}, &WidenError{Rule: ru.name, Field: "ttl", Asked: r.TTL.String(), Allowed: g.maxTTL.String()}
		}
		d.TTL = r.TTL
	}

	if len(g.deployments) > 0 {
		if r.WorkspaceID != "" {
			return Decision{}, &WidenError{Rule: ru.name, Field: "workspace_id", Asked: r.WorkspaceID, Allowed: "(Deployments only)"}
		}
		if r.Role != "" && r.Role != astro.RoleDeploymentAdmin {
			return Decision{}, &WidenError{Rule: ru.name, Field: "role", Asked: r.Role, Allowed: astro.RoleDeploymentAdmin}
		}
		id, err := ru.pick("deployment_id", r.DeploymentID, g.deployments)
		if err != nil {
			return Decision{}, err
		}
		if id == "" {
			return Decision{}, fmt.Errorf("%w: rule %q grants several Deployments: ask for one with deployment_id", ErrBadRequest, ru.name)
		}
		d.Scope, d.DeploymentID = astro.ScopeDeployment, id
		return d, nil
	}

	if r.DeploymentID != "" {
		return Decision{}, &WidenError{Rule: ru.name, Field: "deployment_id", Asked: r.DeploymentID, Allowed: "(Workspaces only)"}
	}
	if r.Role != "" {
		asked, ok := astro.WorkspaceRoleRank(r.Role)
		max, _ := astro.WorkspaceRoleRank(g.maxRole)
		if !ok || asked > max {
			return Decision{}, &WidenError{Rule: ru.name, Field: "role", Asked: r.Role, Allowed: g.maxRole}
		}
		d.Role = r.Role
	}
	ws, err := ru.pick("workspace_id", r.WorkspaceID, g.workspaces)
	if err != nil {
		return Decision{}, err
	}
	if ws != "" {
		d.Scope, d.WorkspaceID = astro.ScopeWorkspace, ws
		return d, nil
	}
	d.Scope = astro.ScopeOrganization
	d.WorkspaceRoles = make(map[string]string, len(g.workspaces))
	for _, id := range g.workspaces {
		d.WorkspaceRoles[id] = d.Role
	}
	return d, nil
}

// pick chooses, among the ids the rule grants, the one a token is minted
// for: the one the request asks for, which must be granted, or else the
// only one granted. It returns "" when the request asks for none and the
// rule grants several; field names the request's key in a [WidenError].
func (ru *rule) pick(field, asked string, granted []string) (string, error) {
	switch {
	case asked != "":
		if !slices.Contains(granted, asked) {
			return "", &WidenError{Rule: ru.name, Field: field, Asked: asked, Allowed: strings.Join(granted, ",")}
		}
		return asked, nil
	case len(granted) == 1:
		return granted[0], nil
	}
	return "", nil
}
