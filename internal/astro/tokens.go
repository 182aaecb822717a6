package astro

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
)

// Route templates, as passed to [Config.Observe] and shown in errors.
const (
	RouteOrganizations = "/organizations"
	RouteWorkspaces    = "/organizations/{organizationId}/workspaces"
	RouteTokens        = "/organizations/{organizationId}/tokens"
	RouteToken         = "/organizations/{organizationId}/tokens/{tokenId}"
	RouteTokenRoles    = "/organizations/{organizationId}/tokens/{tokenId}/roles"
	RouteTokenRotate   = "/organizations/{organizationId}/tokens/{tokenId}/rotate"
)

// ListTokensOptions filters and orders a token listing. Astro has no scope
// filter: filter the result on [Token.Scope].
type ListTokensOptions struct {
	// WorkspaceID selects the Workspace tokens of that Workspace and the
	// Organization tokens holding a role in it.
	WorkspaceID string
	// DeploymentID selects the tokens of that Deployment.
	DeploymentID string
	// IncludeOnlyOrganizationTokens selects Organization tokens only.
	IncludeOnlyOrganizationTokens bool
	// Sorts are "field:asc" or "field:desc" with field one of name,
	// description, createdAt, updatedAt, tokenStartAt; Astro validates them.
	Sorts []string
	// PageSize is the limit of each page [Client.ListTokens] asks for:
	// 0 means [DefaultPageSize]; more than [MaxPageSize] is capped.
	PageSize int
}

func (o ListTokensOptions) query() url.Values {
	q := url.Values{}
	if o.WorkspaceID != "" {
		q.Set("workspaceId", o.WorkspaceID)
	}
	if o.DeploymentID != "" {
		q.Set("deploymentId", o.DeploymentID)
	}
	if o.IncludeOnlyOrganizationTokens {
		q.Set("includeOnlyOrganizationTokens", "true")
	}
	for _, s := range o.Sorts {
		q.Add("sorts", s)
	}
	return q
}

func (o ListTokensOptions) pageSize() (int, error) { return pageSize(o.PageSize) }

// pathID path-escapes id and refuses an empty one: an empty token id
// would turn DELETE /tokens/{id} into a request on the collection. "." and
// ".." are refused for the same reason: path escaping leaves them as they
// are, and a proxy or gateway that normalises dot segments would turn
// DELETE /tokens/.. into DELETE /organizations/{org}. name names id in an
// error.
func pathID(name, id string) (string, error) {
	if id == "" {
		return "", fmt.Errorf("%w: empty %s", ErrInvalidArgument, name)
	}
	if id == "." || id == ".." {
		return "", fmt.Errorf("%w: %s %q is a dot segment", ErrInvalidArgument, name, id)
	}
	return url.PathEscape(id), nil
}

// collectionPath is /organizations/{orgID}/{kind}, orgID checked and
// escaped.
func collectionPath(orgID, kind string) (string, error) {
	org, err := pathID("organization id", orgID)
	if err != nil {
		return "", err
	}
	return "/organizations/" + org + "/" + kind, nil
}

// itemPath is /organizations/{orgID}/{kind}/{id}, both ids checked and
// escaped; idName names id in an error.
func itemPath(orgID, kind, idName, id string) (string, error) {
	coll, err := collectionPath(orgID, kind)
	if err != nil {
		return "", err
	}
	item, err := pathID(idName, id)
	if err != nil {
		return "", err
	}
	return coll + "/" + item, nil
}

func tokensPath(orgID string) (string, error) { return collectionPath(orgID, "tokens") }

func tokenPath(orgID, tokenID string) (string, error) {
	return itemPath(orgID, "tokens", "token id", tokenID)
}

// ListTokens returns every token matching opts, asking for pages of
// opts.PageSize until totalCount is reached. Offset paging is not a
// snapshot: a token created or deleted during the walk can shift the pages,
// so the result is de-duplicated by id and may miss a token that changed
// meanwhile (the reaper runs again; that is enough for it).
func (c *Client) ListTokens(ctx context.Context, orgID string, opts ListTokensOptions) ([]Token, error) {
	size, err := opts.pageSize()
	if err != nil {
		return nil, err
	}
	return allPages(func(t Token) string { return t.ID }, func(offset int) ([]Token, int, error) {
		page, err := c.ListTokensPage(ctx, orgID, opts, offset, size)
		if err != nil {
			return nil, 0, err
		}
		return page.Tokens, page.TotalCount, nil
	})
}

// ListTokensPage returns one page: offset >= 0, limit 1..[MaxPageSize]
// (0 means opts.PageSize, or [DefaultPageSize]).
func (c *Client) ListTokensPage(ctx context.Context, orgID string, opts ListTokensOptions, offset, limit int) (*TokensPage, error) {
	if limit == 0 {
		var err error
		if limit, err = opts.pageSize(); err != nil {
			return nil, err
		}
	}
	if offset < 0 || limit < 1 || limit > MaxPageSize {
		return nil, fmt.Errorf("%w: offset must be >= 0 and limit 1..%d", ErrInvalidArgument, MaxPageSize)
	}
	path, err := tokensPath(orgID)
	if err != nil {
		return nil, err
	}
	var page TokensPage
	err = c.do(ctx, call{method: http.MethodGet, route: RouteTokens, path: path, query: withPage(opts.query(), offset, limit), class: idempotent, out: &page})
	if err != nil {
		return nil, err
	}
	return &page, nil
}

// GetToken returns one token (never its value).
func (c *Client) GetToken(ctx context.Context, orgID, tokenID string) (*Token, error) {
	path, err := tokenPath(orgID, tokenID)
	return fetch[Token](ctx, c, err, call{method: http.MethodGet, route: RouteToken, path: path, class: idempotent})
}

// CreateToken creates a token and returns it with its value in
// [Token.Token], the only time Astro shows it.
//
// Create is not idempotent, so it is retried only after a 429 (Astro did
// not process it) or a connection that was never established. After a 5xx
// or a timeout the error is returned as is: the token may or may not
// exist, and a blind retry could mint a second one. Name the token so that
// the reaper can find and delete what a lost create left behind.
func (c *Client) CreateToken(ctx context.Context, orgID string, req CreateTokenRequest) (*Token, error) {
	path, err := tokensPath(orgID)
	return fetch[Token](ctx, c, err, call{method: http.MethodPost, route: RouteTokens, path: path, body: req, class: unsafe})
}

// UpdateToken sets a token's name and description. Both are sent, so an
// empty Description clears it. It is idempotent and retried.
func (c *Client) UpdateToken(ctx context.Context, orgID, tokenID string, req UpdateTokenRequest) (*Token, error) {
	path, err := tokenPath(orgID, tokenID)
	return fetch[Token](ctx, c, err, call{method: http.MethodPost, route: RouteToken, path: path, body: req, class: idempotent})
}

// SetTokenRoles replaces the token's whole role set with roles (at least
// one). Setting the same set twice has the same effect, so it is retried.
func (c *Client) SetTokenRoles(ctx context.Context, orgID, tokenID string, roles []TokenRole) (*SubjectRoles, error) {
	path, err := tokenPath(orgID, tokenID)
	if err != nil {
		return nil, err
	}
	if roles == nil {
		roles = []TokenRole{}
	}
	return fetch[SubjectRoles](ctx, c, nil, call{method: http.MethodPost, route: RouteTokenRoles, path: path + "/roles",
		body: SetRolesRequest{Roles: roles}, class: idempotent})
}

// AddTokenToWorkspace gives an Organization token role in a Workspace, the
// way the Astro docs describe: read the token's roles, then POST them back
// with the Workspace role added (replacing a role it already held there).
//
// The read-modify-write is not atomic: Astro offers no version check, so
// two concurrent changes to the roles of the same token can undo each
// other. Callers serialise role changes per token.
func (c *Client) AddTokenToWorkspace(ctx context.Context, orgID, tokenID, workspaceID, role string) (*SubjectRoles, error) {
	if workspaceID == "" {
		return nil, fmt.Errorf("%w: empty workspace id", ErrInvalidArgument)
	}
	if !ValidRole(EntityWorkspace, role) {
		return nil, fmt.Errorf("%w: %q is not a Workspace role", ErrInvalidArgument, role)
	}
	t, err := c.getOrganizationToken(ctx, orgID, tokenID)
	if err != nil {
		return nil, err
	}
	roles := withoutWorkspace(t.Roles, workspaceID)
	roles = append(roles, TokenRole{EntityID: workspaceID, EntityType: EntityWorkspace, Role: role})
	return c.SetTokenRoles(ctx, orgID, tokenID, roles)
}

// RemoveTokenFromWorkspace takes away the token's role in a Workspace (read
// the roles, POST them back without it). When the token holds no role there
// it sends nothing and returns the roles it read. The same caveat about
// concurrent changes as for [Client.AddTokenToWorkspace] applies.
func (c *Client) RemoveTokenFromWorkspace(ctx context.Context, orgID, tokenID, workspaceID string) (*SubjectRoles, error) {
	if workspaceID == "" {
		return nil, fmt.Errorf("%w: empty workspace id", ErrInvalidArgument)
	}
	t, err := c.getOrganizationToken(ctx, orgID, tokenID)
	if err != nil {
		return nil, err
	}
	roles := withoutWorkspace(t.Roles, workspaceID)
	if len(roles) == len(t.Roles) {
		return SubjectRolesOf(t.Roles), nil
	}
	return c.SetTokenRoles(ctx, orgID, tokenID, roles)
}

// getOrganizationToken reads the token and refuses any other scope before
// a role change is sent: only Organization tokens hold roles in several
// Workspaces.
func (c *Client) getOrganizationToken(ctx context.Context, orgID, tokenID string) (*Token, error) {
	t, err := c.GetToken(ctx, orgID, tokenID)
	if err != nil {
		return nil, err
	}
	if t.Scope != ScopeOrganization {
		return nil, fmt.Errorf("%w: token %s has scope %s, not ORGANIZATION", ErrInvalidArgument, t.ID, t.Scope)
	}
	return t, nil
}

func withoutWorkspace(roles []TokenRole, workspaceID string) []TokenRole {
	out := make([]TokenRole, 0, len(roles)+1)
	for _, r := range roles {
		if r.EntityType == EntityWorkspace && r.EntityID == workspaceID {
			continue
		}
		out = append(out, r)
	}
	return out
}

// SubjectRolesOf groups a token's roles the way a set-roles answer does.
func SubjectRolesOf(roles []TokenRole) *SubjectRoles {
	sr := &SubjectRoles{WorkspaceRoles: []WorkspaceRole{}, DeploymentRoles: []DeploymentRole{}}
	for _, r := range roles {
		switch r.EntityType {
		case EntityOrganization:
			sr.OrganizationRole = r.Role
		case EntityWorkspace:
			sr.WorkspaceRoles = append(sr.WorkspaceRoles, WorkspaceRole{WorkspaceID: r.EntityID, Role: r.Role})
		case EntityDeployment:
			sr.DeploymentRoles = append(sr.DeploymentRoles, DeploymentRole{DeploymentID: r.EntityID, Role: r.Role})
		}
	}
	return sr
}

// RotateToken gives the token a new value, returned in [Token.Token]; the
// old value stops working at once. The id, name, roles and expiry stay.
//
// Rotate is not idempotent: if its answer is lost, the new value is lost
// with it and the old one no longer works. It is therefore retried only
// after a 429 or a connection that was never established, never after a
// 5xx or a timeout; the caller then has to rotate again deliberately.
func (c *Client) RotateToken(ctx context.Context, orgID, tokenID string) (*Token, error) {
	path, err := tokenPath(orgID, tokenID)
	return fetch[Token](ctx, c, err, call{method: http.MethodPost, route: RouteTokenRotate, path: path + "/rotate", class: unsafe})
}

// DeleteToken deletes a token. A 404 counts as success: the token is gone,
// which is what the caller wanted (a retry after a lost 204 sees a 404).
func (c *Client) DeleteToken(ctx context.Context, orgID, tokenID string) error {
	_, err := c.DeleteTokenFound(ctx, orgID, tokenID)
	return err
}

// DeleteTokenFound is [Client.DeleteToken] that also says whether the
// token was there: found is false when Astro answered 404 (someone else
// deleted it first, or, rarely, this call's own first attempt did and its
// answer was lost before the retry).
func (c *Client) DeleteTokenFound(ctx context.Context, orgID, tokenID string) (found bool, err error) {
	path, err := tokenPath(orgID, tokenID)
	if err != nil {
		return false, err
	}
	err = c.do(ctx, call{method: http.MethodDelete, route: RouteToken, path: path, class: idempotent})
	var ae *APIError
	if errors.As(err, &ae) && ae.StatusCode == http.StatusNotFound {
		return false, nil
	}
	return err == nil, err
}

// ListOrganizations returns the organizations the token can see (for an
// API token: its own), all pages.
func (c *Client) ListOrganizations(ctx context.Context) ([]Organization, error) {
	return allPages(func(o Organization) string { return o.ID }, func(offset int) ([]Organization, int, error) {
		var page OrganizationsPage
		err := c.do(ctx, call{method: http.MethodGet, route: RouteOrganizations, path: "/organizations", query: withPage(nil, offset, DefaultPageSize), class: idempotent, out: &page})
		return page.Organizations, page.TotalCount, err
	})
}

// ListWorkspaces returns the Workspaces of an organization the token can
// see, all pages.
func (c *Client) ListWorkspaces(ctx context.Context, orgID string) ([]Workspace, error) {
	path, err := collectionPath(orgID, "workspaces")
	if err != nil {
		return nil, err
	}
	return allPages(func(w Workspace) string { return w.ID }, func(offset int) ([]Workspace, int, error) {
		var page WorkspacesPage
		err := c.do(ctx, call{method: http.MethodGet, route: RouteWorkspaces, path: path, query: withPage(nil, offset, DefaultPageSize), class: idempotent, out: &page})
		return page.Workspaces, page.TotalCount, err
	})
}
