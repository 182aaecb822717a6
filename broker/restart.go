package broker

import (
	"errors"
	"fmt"
	"time"

	"github.com/astro-sts/astro-sts/internal/idtoken"
)

// A restart must not reopen replay. The memory replay store forgets every
// jti when the process ends, so an ID token exchanged just before a
// restart could be exchanged again just after it. The broker therefore
// refuses, with an answer the action retries (503, Retry-After: 1), every
// ID token issued before it started: each of the action's attempts fetches
// a fresh ID token, so a job caught by a restart loses a second, and a
// token lifted from a log before the restart is worth nothing after it.
//
// The other way to close the gap, rebuilding the cache from the markers
// of live tokens, was not chosen: it would put a hash of every jti in
// every token's description, cover the exchange only (a revoke or a
// rotation mints nothing to carry the marker), and make every start list
// the whole organization before the broker may serve. The rule here costs
// nothing to run and covers all three endpoints.
//
// A store that survives restarts (shared: Redis) applies the same rule
// itself, and this one does not apply then (the store says so: Shared).
// Redis can lose data as a process does (a flush, a restart without
// persistence, a failover to a replica that lagged): the Redis store
// keeps an epoch beside the replay entries, recreates it when it finds it
// gone or written by another server, and refuses every ID token issued
// before it with [store.ErrIssuedBeforeEpoch], which answers as this
// rule's error does (503 restarted).
//
// "Issued before" counts from iat minus [idtoken.FutureLeeway]: the
// verifier accepts an iat that far ahead of the broker's clock (the
// issuer's clock may be ahead), so a token may have been spent just
// before a restart that its iat dates after it. After a start, fresh
// tokens are therefore refused for FutureLeeway (5 s), within the
// action's retries (1+2+4 s).

// errIssuedBeforeStart refuses an ID token issued before this broker
// started, while the replay store forgets on restart.
var errIssuedBeforeStart = errors.New("the OIDC token was issued before this broker started; fetch a fresh one and try again")

// issuedAfterStart applies the restart rule to verified claims.
func (s *Server) issuedAfterStart(c *idtoken.Claims) error {
	if from, ok := s.servesIssuedFrom(); ok && c.IssuedAt.Before(from) {
		return fmt.Errorf("%w (issued %s, started %s)", errIssuedBeforeStart,
			c.IssuedAt.UTC().Format(time.RFC3339), s.started.UTC().Format(time.RFC3339))
	}
	return nil
}

// servesIssuedFrom is the restart rule's bound: ID tokens issued before it
// are refused; ok is false when the rule does not apply (no start time, or
// a shared store, which applies its own).
func (s *Server) servesIssuedFrom() (from time.Time, ok bool) {
	if s.started.IsZero() || s.store.Shared() {
		return time.Time{}, false
	}
	return s.started.Add(idtoken.FutureLeeway), true
}
