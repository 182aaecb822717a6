// Package astro is a typed client for the token endpoints of the Astro API v1
// (https://api.astronomer.io/v1) and for the Deployment endpoints the astro
// CLI calls for preview Deployments, and the shared vocabulary (scopes,
// roles, token and Deployment shapes) that the emulator, the broker, the
// rotation code and the demo speak.
//
// The shapes follow Astronomer's published v1 API specification and the
// astro CLI's generated client; where the public material is silent, the
// comment on the field says which behaviour we chose.
package astro

import (
	"fmt"
	"log/slog"
	"time"
)

// Scope is the scope of an API token: the kind of entity it belongs to.
// v1 calls this field `scope`; the deprecated v1beta1 API called it `type`.
type Scope string

// The three token scopes.
const (
	ScopeOrganization Scope = "ORGANIZATION"
	ScopeWorkspace    Scope = "WORKSPACE"
	ScopeDeployment   Scope = "DEPLOYMENT"
)

// EntityType is the kind of entity a role is held on.
type EntityType string

// The entity types of [TokenRole].
const (
	EntityOrganization EntityType = "ORGANIZATION"
	EntityWorkspace    EntityType = "WORKSPACE"
	EntityDeployment   EntityType = "DEPLOYMENT"
)

// Role names, as Astro spells them.
const (
	RoleWorkspaceAccessor = "WORKSPACE_ACCESSOR"
	RoleWorkspaceMember   = "WORKSPACE_MEMBER"
	RoleWorkspaceAuthor   = "WORKSPACE_AUTHOR"
	RoleWorkspaceOperator = "WORKSPACE_OPERATOR"
	RoleWorkspaceOwner    = "WORKSPACE_OWNER"

	RoleOrganizationMember       = "ORGANIZATION_MEMBER"
	RoleOrganizationBillingAdmin = "ORGANIZATION_BILLING_ADMIN"
	RoleOrganizationOwner        = "ORGANIZATION_OWNER"

	RoleDeploymentAdmin = "DEPLOYMENT_ADMIN"
)

// workspaceRoleRank orders the Workspace roles from least to most powerful.
var workspaceRoleRank = map[string]int{
	RoleWorkspaceAccessor: 1,
	RoleWorkspaceMember:   2,
	RoleWorkspaceAuthor:   3,
	RoleWorkspaceOperator: 4,
	RoleWorkspaceOwner:    5,
}

// WorkspaceRoleRank returns the rank of a Workspace role (ACCESSOR=1 ..
// OWNER=5) and whether role is a Workspace role at all.
func WorkspaceRoleRank(role string) (int, bool) {
	r, ok := workspaceRoleRank[role]
	return r, ok
}

// ValidRole reports whether role may be held on an entity of type t.
func ValidRole(t EntityType, role string) bool {
	switch t {
	case EntityWorkspace:
		_, ok := workspaceRoleRank[role]
		return ok
	case EntityOrganization:
		return role == RoleOrganizationMember || role == RoleOrganizationBillingAdmin || role == RoleOrganizationOwner
	case EntityDeployment:
		return role == RoleDeploymentAdmin
	}
	return false
}

// MinExpiryDays and MaxExpiryDays bound tokenExpiryPeriodInDays.
const (
	MinExpiryDays = 1
	MaxExpiryDays = 3650
)

// Token is Astro's ApiToken. Token (the value) is set only in the answers to
// create and rotate: Astro never shows a value again.
type Token struct {
	ID          string    `json:"id"`
	Name        string    `json:"name"`
	Description string    `json:"description"`
	ShortToken  string    `json:"shortToken"`
	Scope       Scope     `json:"scope"`
	StartAt     time.Time `json:"startAt"`
	Stamps
	Token              string      `json:"token,omitempty"`
	EndAt              *time.Time  `json:"endAt,omitempty"`
	ExpiryPeriodInDays *int        `json:"expiryPeriodInDays,omitempty"`
	LastUsedAt         *time.Time  `json:"lastUsedAt,omitempty"`
	LastRotatedAt      *time.Time  `json:"lastRotatedAt,omitempty"`
	Roles              []TokenRole `json:"roles,omitempty"`
	CreatedBy          *Subject    `json:"createdBy,omitempty"`
	UpdatedBy          *Subject    `json:"updatedBy,omitempty"`
}

// String never includes the value, so a Token can be logged or printed with
// %v safely.
func (t Token) String() string {
	return fmt.Sprintf("token %s (%s, %q)", t.ID, t.Scope, t.Name)
}

// GoString keeps %#v from printing the value field by field.
func (t Token) GoString() string { return "astro.Token{" + t.String() + "}" }

// LogValue keeps log/slog from printing the value: its JSON handler ignores
// String and marshals the struct with its json tags, value included.
func (t Token) LogValue() slog.Value {
	return slog.GroupValue(slog.String("id", t.ID), slog.String("scope", string(t.Scope)), slog.String("name", t.Name))
}

// TokenRole is Astro's ApiTokenRole: one role held on one entity.
type TokenRole struct {
	EntityID   string     `json:"entityId"`
	EntityType EntityType `json:"entityType"`
	Role       string     `json:"role"`
}

// Stamps are when Astro made and last changed an object: the createdAt and
// updatedAt of every object the client reads (a token, an organization, a
// workspace, a Deployment, a cluster, a node pool). Embedded where the
// pair stood, it keeps the JSON as it is, in the same order.
type Stamps struct {
	CreatedAt time.Time `json:"createdAt"`
	UpdatedAt time.Time `json:"updatedAt"`
}

// Subject is Astro's BasicSubjectProfile (createdBy, updatedBy).
type Subject struct {
	ID           string `json:"id"`
	SubjectType  string `json:"subjectType"` // USER or SERVICEKEY
	APITokenName string `json:"apiTokenName,omitempty"`
	FullName     string `json:"fullName,omitempty"`
	Username     string `json:"username,omitempty"`
}

// TokensPage is one page of GET /organizations/{org}/tokens.
type TokensPage struct {
	Tokens []Token `json:"tokens"`
	PageInfo
}

// CreateTokenRequest is Astro's CreateApiTokenRequest.
type CreateTokenRequest struct {
	Name        string `json:"name"`
	Description string `json:"description,omitempty"`
	Role        string `json:"role"`
	Scope       Scope  `json:"scope"`
	// EntityID is the Workspace id for WORKSPACE scope and the Deployment id
	// for DEPLOYMENT scope; empty for ORGANIZATION scope.
	EntityID string `json:"entityId,omitempty"`
	// TokenExpiryPeriodInDays is 1..3650; nil means the token never expires.
	// It cannot be changed after creation.
	TokenExpiryPeriodInDays *int   `json:"tokenExpiryPeriodInDays,omitempty"`
	Kind                    string `json:"kind,omitempty"`
}

// UpdateTokenRequest is the body of POST /tokens/{id}. Name is required
// (1..256 characters), description at most 500.
type UpdateTokenRequest struct {
	Name        string `json:"name"`
	Description string `json:"description"`
}

// SetRolesRequest is the body of POST /tokens/{id}/roles: the whole set.
type SetRolesRequest struct {
	Roles []TokenRole `json:"roles"`
}

// SubjectRoles is the answer to a set-roles call.
type SubjectRoles struct {
	OrganizationRole string           `json:"organizationRole,omitempty"`
	WorkspaceRoles   []WorkspaceRole  `json:"workspaceRoles"`
	DeploymentRoles  []DeploymentRole `json:"deploymentRoles"`
}

// WorkspaceRole is one entry of [SubjectRoles.WorkspaceRoles].
type WorkspaceRole struct {
	WorkspaceID string `json:"workspaceId"`
	Role        string `json:"role"`
}

// DeploymentRole is one entry of [SubjectRoles.DeploymentRoles].
type DeploymentRole struct {
	DeploymentID string `json:"deploymentId"`
	Role         string `json:"role"`
}

// Organization is the part of Astro's Organization the CLI and we read.
type Organization struct {
	ID      string `json:"id"`
	Name    string `json:"name"`
	Product string `json:"product"` // HOSTED or HYBRID; never null
	Stamps
}

// OrganizationsPage is one page of GET /organizations.
type OrganizationsPage struct {
	Organizations []Organization `json:"organizations"`
	PageInfo
}

// Workspace is the part of Astro's Workspace we read.
type Workspace struct {
	ID             string `json:"id"`
	Name           string `json:"name"`
	OrganizationID string `json:"organizationId"`
	Stamps
}

// WorkspacesPage is one page of GET /organizations/{org}/workspaces.
type WorkspacesPage struct {
	Workspaces []Workspace `json:"workspaces"`
	PageInfo
}

// ErrorBody is the JSON error body of every non-2xx Astro answer.
type ErrorBody struct {
	StatusCode  int          `json:"statusCode"`
	Message     string       `json:"message"`
	RequestID   string       `json:"requestId"`
	FieldErrors []FieldError `json:"fieldErrors,omitempty"`
}

// FieldError is one entry of [ErrorBody.FieldErrors] (400 validation errors).
type FieldError struct {
	Code    string `json:"code"`
	Field   string `json:"field"`
	Message string `json:"message"`
}

// APIError is a non-2xx answer from the Astro API. Match it with errors.As.
type APIError struct {
	StatusCode  int
	Message     string
	RequestID   string
	FieldErrors []FieldError
	// RetryAfter is the server's Retry-After, zero when absent.
	RetryAfter time.Duration
}

func (e *APIError) Error() string {
	if e.RequestID != "" {
		return fmt.Sprintf("astro api: %d %s (request %s)", e.StatusCode, e.Message, e.RequestID)
	}
	return fmt.Sprintf("astro api: %d %s", e.StatusCode, e.Message)
}
