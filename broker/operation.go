package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/astro-sts/astro-sts/internal/astro"
	"github.com/astro-sts/astro-sts/internal/idtoken"
)

// What exchange, revoke and rotate have in common: each reads a bearer
// token and a strict JSON body, verifies the ID token, spends it only once
// the request is authorized, and marks a failure to reach Astro as
// upstream's.

// readRequest reads what every endpoint takes: a query of at most the
// parameters params (see [checkQuery]), the caller's ID token, as a Bearer
// token, and a strict JSON body into v.
func readRequest(r *http.Request, v any, params ...string) (rawIDToken string, err error) {
	if err := checkQuery(r.URL.RawQuery, params...); err != nil {
		return "", err
	}
	raw, err := bearer(r)
	if err != nil {
		return "", err
	}
	return raw, decodeOptional(r.Body, v)
}

// bearer extracts the Bearer token from the Authorization header. More
// than one Authorization header is refused: which one counts differs from
// one proxy or log to the next, so that the identity the broker judged
// could be another than the one they record.
func bearer(r *http.Request) (string, error) {
	if n := len(r.Header.Values("Authorization")); n > 1 {
		return "", badRequest("%d Authorization headers; send exactly one", n)
	}
	h := r.Header.Get("Authorization")
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(tok) == "" {
		return "", errMissingToken
	}
	return strings.TrimSpace(tok), nil
}

// decodeOptional decodes a strict JSON body into v (exact, case-sensitive
// keys, each once: see [decodeStrict]); an empty body leaves v as it is.
func decodeOptional(body io.Reader, v any) error {
	return decodeStrict(body, v)
}

// jsonProblem describes a JSON decoding error without echoing the body.
func jsonProblem(err error) string {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return fmt.Sprintf("syntax error at byte %d", syn.Offset)
	case errors.As(err, &typ):
		return fmt.Sprintf("field %q has the wrong type", typ.Field)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return strings.TrimPrefix(err.Error(), "json: ")
	}
	return "malformed"
}

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
		return fmt.Errorf("%w: dry run: used before", idtoken.ErrReplayed)
	}
	return nil
}

// upstream marks a transport failure (anything but an [astro.APIError]) so
// that classify answers 502, not 500.
func upstream(err error) error {
	var apiErr *astro.APIError
	if errors.As(err, &apiErr) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return &upstreamError{err: err}
}
