package broker

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"time"

	"github.com/astro-sts/astro-sts/internal/astro"
	"github.com/astro-sts/astro-sts/internal/idtoken"
	"github.com/astro-sts/astro-sts/internal/policy"
)

// ExchangeRequest is the optional body of POST /v1/exchange: it may only
// narrow what the policy grants.
type ExchangeRequest struct {
	WorkspaceID  string `json:"workspace_id,omitempty"`
	DeploymentID string `json:"deployment_id,omitempty"`
	Role         string `json:"role,omitempty"`
	TTL          string `json:"ttl,omitempty"` // a Go duration, e.g. "15m"
}

// ExchangeResponse is the answer to a successful exchange.
type ExchangeResponse struct {
	Token          string    `json:"token"`
	TokenID        string    `json:"token_id"`
	OrganizationID string    `json:"organization_id"`
	WorkspaceID    string    `json:"workspace_id,omitempty"`
	DeploymentID   string    `json:"deployment_id,omitempty"`
	Role           string    `json:"role"`
	ExpiresAt      time.Time `json:"expires_at"`
	Rule           string    `json:"rule"`
}

// upstreamExpiryDays is the expiry Astro itself enforces on every minted
// token: its smallest unit. The broker's own deadline (the TTL) is enforced
// by the action's post step and, failing that, by the reaper.
const upstreamExpiryDays = 1

// DryRunResponse is the answer to POST /v1/exchange?dry_run=true: what an
// exchange would mint, and under which rule. Nothing was minted and the ID
// token was not spent, so the same token can still be exchanged.
type DryRunResponse struct {
	DryRun         bool              `json:"dry_run"`  // always true
	Decision       string            `json:"decision"` // always "allow": a refusal is an error answer, as for an exchange
	Rule           string            `json:"rule"`
	Scope          astro.Scope       `json:"scope"`
	OrganizationID string            `json:"organization_id"`
	WorkspaceID    string            `json:"workspace_id,omitempty"`
	DeploymentID   string            `json:"deployment_id,omitempty"`
	WorkspaceRoles map[string]string `json:"workspace_roles,omitempty"`
	Role           string            `json:"role"`
	TTL            string            `json:"ttl"`
}

func (s *Server) handleExchange(w http.ResponseWriter, r *http.Request) error {
	var req ExchangeRequest
	raw, err := readRequest(r, &req)
	var dryRun bool
	if err == nil {
		dryRun, err = dryRunParam(r)
	}
	if err != nil {
		return s.refuse(r.Context(), opExchange, err)
	}
	if dryRun {
		resp, err := s.DryRun(r.Context(), raw, req)
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, resp)
		return nil
	}
	resp, err := s.Exchange(r.Context(), raw, req)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, resp)
	return nil
}

// dryRunParam reads the dry_run query parameter: absent, "true" or
// "false", given once. Anything else is refused rather than guessed: a
// dry run taken for an exchange would mint a token the caller did not
// want, an exchange taken for a dry run would fail a deploy.
func dryRunParam(r *http.Request) (bool, error) {
	vs, ok := r.URL.Query()["dry_run"]
	switch {
	case !ok:
		return false, nil
	case len(vs) == 1 && vs[0] == "true":
		return true, nil
	case len(vs) == 1 && vs[0] == "false":
		return false, nil
	}
	return false, badRequest("dry_run must be true or false, given once")
}

// Exchange is the heart of the broker: verify the OIDC token, decide with
// the policy, mint the Astro token, record the decision. It returns the
// minted token, or an error that [classify] maps to a status code.
func (s *Server) Exchange(ctx context.Context, rawIDToken string, req ExchangeRequest) (_ *ExchangeResponse, err error) {
	e := s.begin(opExchange)
	defer func() { s.record(ctx, e, err) }()

	claims, d, err := s.authorize(ctx, e, rawIDToken, req)
	if err != nil {
		return nil, err
	}
	if err := s.spend(ctx, claims); err != nil {
		return nil, err
	}
	if err := s.limit(ctx, claims, d); err != nil {
		return nil, err
	}
	tok, deadline, err := s.mint(ctx, claims, d)
	if err != nil {
		return nil, err
	}
	e.token = tok
	return &ExchangeResponse{
		Token:          tok.Token,
		TokenID:        tok.ID,
		OrganizationID: s.org,
		WorkspaceID:    d.WorkspaceID,
		DeploymentID:   d.DeploymentID,
		Role:           d.Role,
		ExpiresAt:      deadline,
		Rule:           d.Rule,
	}, nil
}

// DryRun decides an exchange as [Server.Exchange] would, and stops there:
// nothing is minted and the ID token's jti is not spent, so that a new
// workflow can be tried before the policy changes, and the same token then
// exchanged for real. A token already spent is refused as replayed, as its
// exchange would be (see [Server.unspent]). The rule's rate limit is
// neither taken from nor consulted: trying a workflow must not cost it a
// deploy, so an allowed dry run does not promise that the exchange will
// not be rate limited. Its record says dry_run, and its metric's outcome
// is "dry_run" when allowed.
func (s *Server) DryRun(ctx context.Context, rawIDToken string, req ExchangeRequest) (_ *DryRunResponse, err error) {
	e := s.begin(opExchange)
	e.dryRun, e.success = true, "dry_run"
	defer func() { s.record(ctx, e, err) }()

	claims, d, err := s.authorize(ctx, e, rawIDToken, req)
	if err != nil {
		return nil, err
	}
	if err := s.unspent(ctx, claims); err != nil {
		return nil, err
	}
	return &DryRunResponse{
		DryRun:         true,
		Decision:       "allow",
		Rule:           d.Rule,
		Scope:          d.Scope,
		OrganizationID: s.org,
		WorkspaceID:    d.WorkspaceID,
		DeploymentID:   d.DeploymentID,
		WorkspaceRoles: d.WorkspaceRoles,
		Role:           d.Role,
		TTL:            d.TTL.String(),
	}, nil
}

// authorize is what an exchange and its dry run share: verify the token,
// require the run claims, decide. A refusal by the policy is explained in
// the operator's log (see [Server.explain]); the caller learns only its
// code.
func (s *Server) authorize(ctx context.Context, e *event, rawIDToken string, req ExchangeRequest) (*idtoken.Claims, policy.Decision, error) {
	claims, err := s.verify(ctx, e, rawIDToken)
	if err == nil {
		err = claims.RequireRun()
	}
	if err != nil {
		return nil, policy.Decision{}, err
	}
	p := s.policies.Current()
	d, err := s.decide(p, claims, req)
	if err != nil {
		s.explain(ctx, p, claims, err)
		return nil, policy.Decision{}, err
	}
	e.decision = &d
	return claims, d, nil
}

func (s *Server) decide(p *policy.Policy, claims *idtoken.Claims, req ExchangeRequest) (policy.Decision, error) {
	pr := policy.Request{WorkspaceID: req.WorkspaceID, DeploymentID: req.DeploymentID, Role: req.Role}
	if req.TTL != "" {
		ttl, err := time.ParseDuration(req.TTL)
		if err != nil || ttl <= 0 {
			return policy.Decision{}, badRequest("ttl %q is not a positive duration such as 15m", req.TTL)
		}
		pr.TTL = ttl
	}
	if p == nil {
		return policy.Decision{}, policy.ErrNoMatchingRule
	}
	return p.Decide(policy.Claims(claims.Strings), pr)
}

// mint creates the token the decision describes. For several Workspaces it
// creates an Organization token with ORGANIZATION_MEMBER and then adds the
// Workspace roles, as the Astro docs describe; if that second call fails the
// half-made token is deleted at once rather than left for the reaper.
func (s *Server) mint(ctx context.Context, c *idtoken.Claims, d policy.Decision) (*astro.Token, time.Time, error) {
	deadline := s.now().Add(d.TTL).UTC().Truncate(time.Second)
	marker := Marker{
		Deadline:     deadline,
		RepositoryID: c.RepositoryID,
		RunID:        c.RunID,
		RunAttempt:   c.RunAttempt,
		Rule:         d.Rule,
	}
	human := fmt.Sprintf("Short-lived token minted by astro-sts for %s (%s, run %s attempt %s); revoked after the run.",
		c.Repository, c.JobWorkflowRef, c.RunID, c.RunAttempt)
	days := upstreamExpiryDays
	req := astro.CreateTokenRequest{
		Name:                    tokenName(c.Repository, c.RunID, c.RunAttempt),
		Description:             marker.Description(human),
		TokenExpiryPeriodInDays: &days,
	}
	switch d.Scope {
	case astro.ScopeWorkspace:
		req.Scope, req.EntityID, req.Role = astro.ScopeWorkspace, d.WorkspaceID, d.Role
	case astro.ScopeDeployment:
		req.Scope, req.EntityID, req.Role = astro.ScopeDeployment, d.DeploymentID, d.Role
	case astro.ScopeOrganization:
		req.Scope, req.Role = astro.ScopeOrganization, astro.RoleOrganizationMember
	default:
		return nil, time.Time{}, fmt.Errorf("decision has unknown scope %q", d.Scope)
	}
	tok, err := s.astro.CreateToken(ctx, s.org, req)
	if err != nil {
		return nil, time.Time{}, upstream(fmt.Errorf("create token: %w", err))
	}
	if d.Scope == astro.ScopeOrganization {
		roles := []astro.TokenRole{{EntityID: s.org, EntityType: astro.EntityOrganization, Role: astro.RoleOrganizationMember}}
		ids := make([]string, 0, len(d.WorkspaceRoles))
		for id := range d.WorkspaceRoles {
			ids = append(ids, id)
		}
		sort.Strings(ids)
		for _, id := range ids {
			roles = append(roles, astro.TokenRole{EntityID: id, EntityType: astro.EntityWorkspace, Role: d.WorkspaceRoles[id]})
		}
		if _, err := s.astro.SetTokenRoles(ctx, s.org, tok.ID, roles); err != nil {
			s.discard(ctx, tok.ID)
			return nil, time.Time{}, upstream(fmt.Errorf("set roles: %w", err))
		}
	}
	if tok.Token == "" {
		// Nobody can ever use it: delete it now rather than leave it to
		// the reaper.
		s.discard(ctx, tok.ID)
		return nil, time.Time{}, errors.New("astro api: create answered without a token value")
	}
	return tok, deadline, nil
}

// discard deletes a token that must not be handed out (half-made, or
// without a value), with a fresh context: the caller's may be what failed.
// If that fails too, the marker in its description lets the reaper find it.
func (s *Server) discard(ctx context.Context, tokenID string) {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := s.astro.DeleteToken(cctx, s.org, tokenID); err != nil {
		s.log.Error("could not delete a half-made token; the reaper will", "request_id", requestID(ctx), "token_id", tokenID, "error", err)
	}
}
