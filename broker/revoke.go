package broker

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/astro-sts/astro-sts/internal/astro"
	"github.com/astro-sts/astro-sts/internal/brokerapi"
	"github.com/astro-sts/astro-sts/internal/idtoken"
	"github.com/astro-sts/astro-sts/internal/policy"
	"github.com/astro-sts/astro-sts/internal/store"
)

// DefaultRevokeRateLimit is a repository's budget of revokes when
// [Config.RevokeRateLimit] is zero: far more than a repository's runs
// mint, since each minted token is revoked once.
var DefaultRevokeRateLimit = policy.RateLimit{Rate: 120, Period: time.Hour, Burst: 120}

// revokedTTL is how long the broker remembers that a run revoked a token,
// so that the same run asking again (the action's post step retrying an
// answer it lost) hears 204 rather than the refusal of a token it does not
// own. It outlasts the post step's 2 minutes.
const revokedTTL = 15 * time.Minute

// revokedIssuer is the namespace of those memories in the store's replay
// set: not a URL, so no ID token's issuer can collide with it.
const revokedIssuer = "astro-sts:revoked"

func (s *Server) handleRevoke(w http.ResponseWriter, r *http.Request) error {
	ctx, cancel := context.WithTimeout(r.Context(), s.requestTimeout)
	defer cancel()
	var req brokerapi.RevokeRequest
	raw, err := readRequest(r, &req)
	if err == nil && !validID(req.TokenID) {
		err = badRequest("token_id must be an Astro token id (letters, digits, - and _)")
	}
	if err != nil {
		return s.refuse(ctx, opRevoke, err)
	}
	if err := s.Revoke(ctx, raw, req.TokenID); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// Revoke deletes a token the broker minted, on request of the run it was
// minted for (same repository id, run id and attempt, proven by a fresh
// OIDC token).
//
// A revoke costs a caller what an exchange costs: an identity no policy
// rule trusts (so that could have minted nothing) is refused before its ID
// token is spent and before any Astro call, as its exchange would be; a
// trusted one spends its ID token and one of its repository's revokes
// ([Config.RevokeRateLimit]) before the broker asks Astro anything, and
// then makes at most two Astro calls (get, delete).
//
// A caller cannot learn whether a token it does not own exists: another
// run's token, a token the broker did not mint and an id Astro does not
// know all get the same refusal ([errNoSuchToken], 404 not_found). The one
// exception is the owner's own token: a run that revoked it within
// [revokedTTL] hears 204 again, so that the post step's retry of a lost
// answer succeeds. A token deleted by other hands (the reaper after its
// deadline, someone in the Astro UI) is, to the broker, an unknown id.
func (s *Server) Revoke(ctx context.Context, rawIDToken, tokenID string) (err error) {
	e := s.begin(opRevoke)
	e.tokenID = tokenID
	defer func() { s.record(ctx, e, err) }()

	claims, err := s.verify(ctx, e, rawIDToken)
	if err == nil {
		err = claims.RequireRun()
	}
	if err != nil {
		return err
	}
	if err := s.trusted(claims); err != nil {
		return err
	}
	if err := s.spend(ctx, claims); err != nil {
		return err
	}
	if err := s.limitRevokes(ctx, claims); err != nil {
		return err
	}
	tok, err := s.astro.GetToken(ctx, s.org, tokenID)
	if isNotFound(err) {
		revoked, err := s.revokedBy(ctx, claims, tokenID)
		if err != nil {
			return err
		}
		if !revoked {
			return errNoSuchToken
		}
		e.success, e.note = "gone", "already revoked by this run"
		return nil
	}
	if err != nil {
		return upstream(fmt.Errorf("get token: %w", err))
	}
	m, ok := ParseMarker(tok.Description)
	if !ok || !m.sameRun(claims.RepositoryID, claims.RunID, claims.RunAttempt) {
		return errNotOwner
	}
	err = s.astro.DeleteToken(ctx, s.org, tokenID)
	if isNotFound(err) {
		// Deleted between the two calls (the reaper, or this run's
		// other attempt): it was this run's, and it is gone.
		e.success, e.note, err = "gone", "already gone", nil
	}
	if err != nil {
		return upstream(fmt.Errorf("delete token: %w", err))
	}
	s.rememberRevoked(ctx, claims, tokenID)
	return nil
}

// trusted refuses, as an exchange would (403 denied), an identity that no
// rule of the policy matches: it cannot own a token, and must not spend a
// place in the replay cache nor an Astro call. A rule that matches but
// whose grant a request could not use still trusts the identity.
func (s *Server) trusted(claims *idtoken.Claims) error {
	_, err := s.policies.Current().Decide(policy.Claims(claims.Strings), policy.Request{})
	if errors.Is(err, policy.ErrNoMatchingRule) {
		return err
	}
	return nil
}

// limitRevokes takes one revoke from the budget of the caller's
// repository (repository_id of its issuer), a budget of its own beside
// its exchanges'.
func (s *Server) limitRevokes(ctx context.Context, c *idtoken.Claims) error {
	return s.take(ctx, store.Key("revoke", c.Issuer, c.RepositoryID), rateLimitedError{op: opRevoke, limit: s.revokeLimit})
}

// revokedKey names the memory that the run of c revoked tokenID: only the
// same run can find it. The attempt is written as a number when it is one,
// as [Marker.sameRun] compares it.
func revokedKey(c *idtoken.Claims, tokenID string) string {
	return store.Key(tokenID, c.Issuer, c.RepositoryID, c.RunID, canonicalAttempt(c.RunAttempt))
}

// rememberRevoked records that the run of c revoked tokenID. The token is
// gone whatever happens here: a failure only costs a later retry its 204,
// so it is logged, not returned.
func (s *Server) rememberRevoked(ctx context.Context, c *idtoken.Claims, tokenID string) {
	if err := s.store.Use(ctx, revokedIssuer, revokedKey(c, tokenID), c.IssuedAt, s.now().Add(revokedTTL)); err != nil {
		s.storeErr("replay", err)
		s.log.Warn("revoke: could not remember the revoke; a retry of it will be refused", "request_id", requestID(ctx), "token_id", tokenID, "error", err)
	}
}

// revokedBy reports whether the run of c revoked tokenID within
// [revokedTTL].
func (s *Server) revokedBy(ctx context.Context, c *idtoken.Claims, tokenID string) (bool, error) {
	used, err := s.store.Used(ctx, revokedIssuer, revokedKey(c, tokenID), c.IssuedAt)
	return used, s.storeErr("replay", err)
}

func isNotFound(err error) bool {
	var apiErr *astro.APIError
	return errors.As(err, &apiErr) && apiErr.StatusCode == http.StatusNotFound
}

// validID reports whether id looks like an Astro id. It goes into a URL
// path, so nothing that a proxy could normalise (".", "..", "/", "%") gets
// that far.
func validID(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	for _, r := range id {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
			return false
		}
	}
	return true
}
