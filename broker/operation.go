package broker

import (
	"context"

	"github.com/astro-sts/astro-sts/internal/idtoken"
)

// What exchange, revoke and rotate have in common: each verifies the ID
// token and spends it only once the request is authorized. Reading the
// request is body.go's, marking a failure to reach Astro errors.go's.

// verify checks the caller's ID token; from then on the event's record
// says who asked.
func (s *Server) verify(ctx context.Context, e *event, rawIDToken string) (*idtoken.Claims, error) {
	claims, err := s.verifier.Verify(ctx, rawIDToken)
	if err != nil {
		return nil, err
	}
	e.claims = claims
	if err := s.issuedAfterStart(claims); err != nil {
		return nil, err
	}
	return claims, nil
}

// spend uses up the verified token's jti, so that a token lifted from a log
// cannot be replayed. Every endpoint calls it only once the request is
// authorized, just before it acts: any workflow on GitHub can get a token
// for the broker's audience, and if a token no rule trusts took a place in
// the bounded replay cache, anyone could fill it and make the broker refuse
// every workflow (it fails closed when full).
//
// With a shared store the check holds across replicas and restarts, and
// a store that lost its data refuses tokens issued before it noticed (see
// restart.go); if the store cannot answer, the request fails (503):
// nothing is minted without the check.
func (s *Server) spend(ctx context.Context, claims *idtoken.Claims) error {
	return s.storeErr("replay", s.store.Use(ctx, claims.Issuer, claims.JTI, claims.IssuedAt, claims.Expiry))
}
