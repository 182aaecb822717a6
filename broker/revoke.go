package broker

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/astro-sts/astro-sts/internal/astro"
)

// RevokeRequest is the body of POST /v1/revoke.
type RevokeRequest struct {
	TokenID string `json:"token_id"`
}

func (s *Server) handleRevoke(w http.ResponseWriter, r *http.Request) error {
	ctx, cancel := context.WithTimeout(r.Context(), s.requestTimeout)
	defer cancel()
	var req RevokeRequest
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
// OIDC token). A token that is already gone counts as revoked.
func (s *Server) Revoke(ctx context.Context, rawIDToken, tokenID string) (err error) {
	e := s.begin(opRevoke)
	e.tokenID = tokenID
	defer func() { s.record(ctx, e, err) }()

	claims, err := s.verify(ctx, e, rawIDToken)
	if err != nil {
		return err
	}
	tok, err := s.astro.GetToken(ctx, s.org, tokenID)
	var apiErr *astro.APIError
	if errors.As(err, &apiErr) && apiErr.StatusCode == http.StatusNotFound {
		e.success, e.note = "gone", "already gone"
		return nil
	}
	if err != nil {
		return upstream(fmt.Errorf("get token: %w", err))
	}
	m, ok := ParseMarker(tok.Description)
	if !ok || !m.sameRun(claims.RepositoryID, claims.RunID, claims.RunAttempt) {
		return errNotOwner
	}
	if err := s.spend(ctx, claims); err != nil {
		return err
	}
	if err := s.astro.DeleteToken(ctx, s.org, tokenID); err != nil {
		return upstream(fmt.Errorf("delete token: %w", err))
	}
	return nil
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
