package broker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"time"

	"github.com/astro-sts/astro-sts/internal/astro"
	"github.com/astro-sts/astro-sts/internal/brokerapi"
	"github.com/astro-sts/astro-sts/internal/idtoken"
	"github.com/astro-sts/astro-sts/internal/policy"
	"github.com/astro-sts/astro-sts/internal/store"
)

// upstreamExpiryDays is the expiry Astro itself enforces on every minted
// token: its smallest unit. The broker's own deadline (the TTL) is enforced
// by the action's post step and, failing that, by the reaper.
const upstreamExpiryDays = 1

func (s *Server) handleExchange(w http.ResponseWriter, r *http.Request) error {
	ctx, cancel := context.WithTimeout(r.Context(), s.requestTimeout)
	defer cancel()
	var req brokerapi.ExchangeRequest
	raw, err := readRequest(r, &req, "dry_run")
	var dryRun bool
	if err == nil {
		dryRun, err = dryRunParam(r)
	}
	if err != nil {
		return s.refuse(ctx, opExchange, err)
	}
	if dryRun {
		resp, err := s.DryRun(ctx, raw, req)
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, resp)
		return nil
	}
	resp, m, err := s.exchange(ctx, raw, req)
	if err != nil {
		return err
	}
	return s.deliver(ctx, w, resp, m)
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

// Exchange is the heart of the broker: verify the OIDC token and decide
// with the policy (authorize), spend the token and take from the rule's
// rate limit, mint the Astro token, record the decision. It returns the
// minted token, or an error that [classify] maps to a status code; the
// handler delivers it ([Server.deliver]). This file reads in that order,
// with the dry run, which stops after the decision, at its end.
func (s *Server) Exchange(ctx context.Context, rawIDToken string, req brokerapi.ExchangeRequest) (*brokerapi.ExchangeResponse, error) {
	resp, _, err := s.exchange(ctx, rawIDToken, req)
	return resp, err
}

// exchange is [Server.Exchange], also returning the minted token's marker
// for the audit record of a token that cannot be delivered.
func (s *Server) exchange(ctx context.Context, rawIDToken string, req brokerapi.ExchangeRequest) (_ *brokerapi.ExchangeResponse, _ Marker, err error) {
	e := s.begin(opExchange)
	defer func() { s.record(ctx, e, err) }()

	claims, d, err := s.authorize(ctx, e, rawIDToken, req)
	if err != nil {
		return nil, Marker{}, err
	}
	// Replay read-only first, then the rate limit, then the spend: a
	// request refused by its rate limit spends nothing, so that a
	// repository held to its limit cannot fill the replay cache for
	// every other one, and a replay costs the repository no budget. The
	// spend still decides a race between two uses of one token; the
	// loser's budget is given back.
	if err := s.unspent(ctx, claims); err != nil {
		return nil, Marker{}, err
	}
	if err := s.limit(ctx, claims, d); err != nil {
		return nil, Marker{}, err
	}
	if err := s.spend(ctx, claims); err != nil {
		s.giveBack(ctx, claims, d)
		return nil, Marker{}, err
	}
	tok, m, err := s.mint(ctx, claims, d)
	if err != nil {
		return nil, Marker{}, err
	}
	e.token = tok
	return &brokerapi.ExchangeResponse{
		Token:          tok.Token,
		TokenID:        tok.ID,
		OrganizationID: s.org,
		WorkspaceID:    d.WorkspaceID,
		DeploymentID:   d.DeploymentID,
		Role:           d.Role,
		ExpiresAt:      m.Deadline,
		Rule:           d.Rule,
	}, m, nil
}

// authorize is what an exchange and its dry run share: verify the token,
// require the run claims, decide. A refusal by the policy is explained in
// the operator's log (see [Server.explain]); the caller learns only its
// code.
func (s *Server) authorize(ctx context.Context, e *event, rawIDToken string, req brokerapi.ExchangeRequest) (*idtoken.Claims, policy.Decision, error) {
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

func (s *Server) decide(p *policy.Policy, claims *idtoken.Claims, req brokerapi.ExchangeRequest) (policy.Decision, error) {
	pr, err := policyRequest(req)
	if err != nil {
		return policy.Decision{}, err
	}
	if p == nil {
		return policy.Decision{}, policy.ErrNoMatchingRule
	}
	return p.Decide(policy.Claims(claims.Strings), pr)
}

// policyRequest checks req as the broker does before any rule is tried,
// and returns what the policy decides on. A ttl must be a Go duration of
// at least [policy.MinTTL]; the rest is [policy.Request.Validate]. The
// error, a refusal whatever the policy, is one [Classify] answers with
// 400 and a message safe to show.
func policyRequest(req brokerapi.ExchangeRequest) (policy.Request, error) {
	pr := policy.Request{WorkspaceID: req.WorkspaceID, DeploymentID: req.DeploymentID, Role: req.Role}
	if req.TTL != "" {
		ttl, err := time.ParseDuration(req.TTL)
		if err != nil || ttl <= 0 {
			return policy.Request{}, badRequest("ttl %s is not a positive duration such as 15m", quoteShort(req.TTL))
		}
		if ttl < policy.MinTTL {
			// A token that expires before the job can use it is no
			// token: 1ns would be accepted and dead on arrival.
			return policy.Request{}, badRequest("ttl %s is below the minimum of %v", quoteShort(req.TTL), policy.MinTTL)
		}
		pr.TTL = ttl
	}
	if err := pr.Validate(); err != nil {
		return policy.Request{}, err
	}
	return pr, nil
}

// ParseExchangeRequest decodes and checks the body of POST /v1/exchange
// with the broker's own code: the size limit, [decodeStrict]'s exact keys
// (each once, one object) and [policyRequest]. An empty
// body is the zero request: the grant's defaults. `astro-sts policy check
// --request` calls it, so that the command refuses exactly what the broker
// refuses, with the message [Classify] gives the broker's answer (400, or
// 413 for a body over the limit).
func ParseExchangeRequest(body io.Reader) (policy.Request, error) {
	var req brokerapi.ExchangeRequest
	// As the broker's handler bounds every body; a nil ResponseWriter
	// only means there is no connection to close.
	if err := decodeStrict(http.MaxBytesReader(nil, io.NopCloser(body), maxBody), &req); err != nil {
		return policy.Request{}, err
	}
	return policyRequest(req)
}

// unspent is spend's read-only twin, for a dry run: it refuses a token
// whose jti was already spent, as spend would, and spends nothing. Without
// it a token lifted from a log would dry-run as allowed, an answer its
// exchange can never give. If the store cannot answer, neither can the dry
// run (503).
func (s *Server) unspent(ctx context.Context, claims *idtoken.Claims) error {
	used, err := s.store.Used(ctx, claims.Issuer, claims.JTI, claims.IssuedAt)
	if err != nil {
		return s.storeErr("replay", err)
	}
	if used {
		return fmt.Errorf("%w: dry run: used before", store.ErrReplayed)
	}
	return nil
}

// limit takes one token from the budget of the repository (repository_id
// of the issuer) under the deciding rule, if the rule has a limit. It runs
// after the read-only replay check and before the spend (see
// [Server.exchange]).
func (s *Server) limit(ctx context.Context, c *idtoken.Claims, d policy.Decision) error {
	if d.RateLimit.IsZero() {
		return nil
	}
	err := s.take(ctx, rateKey(c, d), rateLimitedError{op: opExchange, rule: d.Rule, limit: d.RateLimit})
	var refused *rateLimitedError
	if errors.As(err, &refused) {
		s.metrics.rateLimited.WithLabelValues(d.Rule).Inc()
	}
	return err
}

// take takes one event from key's budget under refused.limit, for an
// exchange ([Server.limit]) or a revoke ([Server.limitRevokes]); when the
// budget is spent it returns refused, with the wait for the next event.
func (s *Server) take(ctx context.Context, key string, refused rateLimitedError) error {
	v, err := s.store.Allow(ctx, key, refused.limit)
	if err != nil {
		return s.storeErr("rate_limit", err)
	}
	if !v.Allowed {
		refused.retryAfter = v.RetryAfter
		return &refused
	}
	return nil
}

// rateKey is the budget of the repository (repository_id of the issuer)
// under the deciding rule.
func rateKey(c *idtoken.Claims, d policy.Decision) string {
	return store.Key("rate", c.Issuer, c.RepositoryID, d.Rule)
}

// giveBack returns to the repository's budget what [Server.limit] took
// for an exchange that did nothing (its spend failed, or its create
// provably did nothing: see [Server.mint]). A failed give-back only
// leaves the budget spent.
func (s *Server) giveBack(ctx context.Context, c *idtoken.Claims, d policy.Decision) {
	l := d.RateLimit
	if l.IsZero() {
		return
	}
	// The request's context may be what ended the mint.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), storeTimeout)
	defer cancel()
	err := s.store.Refund(ctx, rateKey(c, d), l)
	if err != nil {
		s.storeErr("rate_limit", err)
		s.log.Warn("rate limit: could not give back the budget of an exchange that did nothing", "rule", d.Rule, "error", err)
	}
}

// mint creates the token the decision describes. For several Workspaces it
// creates an Organization token with ORGANIZATION_MEMBER and then adds the
// Workspace roles, as the Astro docs describe; if that second call fails the
// half-made token is deleted at once rather than left for the reaper.
//
// A create whose outcome is unknown (a timeout, a reset, a 5xx: Astro may
// have made the token) starts a search for it by the marker's nonce, which
// deletes it ([Server.recoverCreate]); the caller gets an error it may
// retry, with a fresh ID token.
func (s *Server) mint(ctx context.Context, c *idtoken.Claims, d policy.Decision) (*astro.Token, Marker, error) {
	marker := Marker{
		Deadline:     s.now().Add(d.TTL).UTC().Truncate(time.Second),
		RepositoryID: c.RepositoryID,
		RunID:        c.RunID,
		RunAttempt:   c.RunAttempt,
		Rule:         d.Rule,
		CheckRunID:   c.Strings["check_run_id"],
		Nonce:        newNonce(),
	}
	human := fmt.Sprintf("Short-lived token minted by astro-sts for %s (%s, run %s attempt %s); revoked after the run.",
		c.Repository, c.JobWorkflowRef, c.RunID, c.RunAttempt)
	days := upstreamExpiryDays
	req := astro.CreateTokenRequest{
		Name:                    tokenName(c.Repository, c.RunID, c.RunAttempt, marker.CheckRunID),
		Description:             marker.Description(human),
		TokenExpiryPeriodInDays: &days,
	}
	if !marker.complete(req.Description) {
		// Claims too long for Astro's description: the token could be
		// neither revoked nor reaped, so it is not made.
		return nil, Marker{}, fmt.Errorf("%w: run claims too long for the token's marker (%d bytes at most)", idtoken.ErrBadClaims, maxDescription)
	}
	switch d.Scope {
	case astro.ScopeWorkspace:
		req.Scope, req.EntityID, req.Role = astro.ScopeWorkspace, d.WorkspaceID, d.Role
	case astro.ScopeDeployment:
		req.Scope, req.EntityID, req.Role = astro.ScopeDeployment, d.DeploymentID, d.Role
	case astro.ScopeOrganization:
		req.Scope, req.Role = astro.ScopeOrganization, astro.RoleOrganizationMember
	default:
		return nil, Marker{}, fmt.Errorf("decision has unknown scope %q", d.Scope)
	}
	sent, sentMono := s.now(), time.Now()
	tok, err := s.astro.CreateToken(ctx, s.org, req)
	if err != nil {
		if errors.Is(err, errNoAstroSlot) || astro.NotProcessed(err) {
			// The create provably did nothing (never sent, or refused by
			// Astro): the job has had no token, so its budget goes back.
			s.giveBack(ctx, c, d)
		} else {
			// A token may exist: it keeps the budget spent and is searched
			// for.
			s.recoverCreate(pendingCreate{marker: marker, since: sent, sent: sentMono, cause: err, requestID: requestID(ctx)})
		}
		return nil, Marker{}, upstream(fmt.Errorf("create token: %w", err))
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
			err = upstream(fmt.Errorf("set roles: %w", err))
			s.deleteUndelivered(ctx, tok.ID, marker, undeliveredHalfMade, err)
			return nil, Marker{}, err
		}
	}
	if tok.Token == "" {
		// Nobody can ever use it: delete it now rather than leave it to
		// the reaper.
		err := errors.New("astro api: create answered without a token value")
		s.deleteUndelivered(ctx, tok.ID, marker, undeliveredHalfMade, err)
		return nil, Marker{}, err
	}
	return tok, marker, nil
}

// deliver writes the answer, unless nobody is left to read it: a caller
// that hung up, or an answer past the request's deadline (the action has
// given up on that attempt, or is about to, and will try again with a
// fresh ID token). Then, and when the answer cannot be flushed, the token
// is deleted: nobody will ever revoke it.
func (s *Server) deliver(ctx context.Context, w http.ResponseWriter, resp *brokerapi.ExchangeResponse, m Marker) error {
	if err := ctx.Err(); err != nil {
		s.deleteUndelivered(ctx, resp.TokenID, m, undeliveredGone, fmt.Errorf("%w: %w", errCallerGone, err))
		return err
	}
	writeJSON(w, http.StatusOK, resp)
	if err := http.NewResponseController(w).Flush(); err != nil {
		s.deleteUndelivered(ctx, resp.TokenID, m, undeliveredGone, fmt.Errorf("the answer could not be sent: %w", err))
	}
	return nil
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
func (s *Server) DryRun(ctx context.Context, rawIDToken string, req brokerapi.ExchangeRequest) (_ *brokerapi.DryRunResponse, err error) {
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
	return &brokerapi.DryRunResponse{
		DryRun:         true,
		Decision:       "allow",
		Rule:           d.Rule,
		Scope:          string(d.Scope),
		OrganizationID: s.org,
		WorkspaceID:    d.WorkspaceID,
		DeploymentID:   d.DeploymentID,
		WorkspaceRoles: d.WorkspaceRoles,
		Role:           d.Role,
		TTL:            d.TTL.String(),
	}, nil
}
