// Package store holds the little state the broker keeps: which OIDC ID
// tokens were already used (replay), how fast each repository mints tokens
// (rate limits), and which replica sweeps expired tokens (the reaper
// lease).
//
// Two implementations:
//
//   - [Memory], the default: one process, nothing to install. Exactly the
//     broker's behaviour before the store existed (a bounded replay cache,
//     see [ReplayGuard]); rate limits hold per replica; every
//     replica reaps.
//   - [Redis]: every replica shares the state through Redis (or Valkey). A
//     token used on one replica, or before a restart, is refused on all;
//     a rate limit holds across replicas; one replica reaps per interval.
//     Nothing secret is stored: replay entries are keyed by a hash of
//     issuer and jti.
//
// Every failure to reach the shared state is [ErrUnavailable], which the
// broker answers with 503: it never mints without a replay check.
package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/astro-sts/astro-sts/internal/rate"
)

// ErrUnavailable: the store could not answer (Redis unreachable, refusing
// the login, out of memory). The broker fails closed on it (503 with
// Retry-After) and its readiness check says not ready.
var ErrUnavailable = errors.New("store unavailable")

// ErrIssuedBeforeEpoch refuses an ID token issued before the store's
// memory of spent tokens begins: the [Redis] store lost its data (a
// flush, a restart without persistence, a failover), and the token may
// have been spent before. The broker answers it as it answers a token
// issued before a memory broker started: 503 "restarted", which the
// action retries with a fresh token.
var ErrIssuedBeforeEpoch = errors.New("the OIDC token was issued before the shared store's memory of spent tokens begins")

// ErrUnsafe: the store answers, but is configured so that it may forget
// spent tokens while the broker runs (Redis evicting keys under memory
// pressure). The broker is not ready while it says so.
var ErrUnsafe = errors.New("store unsafe")

// The replay check's answers ([Store.Use], [ReplayGuard.Use]). The broker
// answers ErrReplayed, ErrNoJTI and ErrTokenExpired as it answers the
// verifier's refusals (401), and ErrReplayCacheFull with 503.
var (
	// ErrReplayed: the jti was already used for an exchange. 401.
	ErrReplayed = errors.New("store: token already used")
	// ErrReplayCacheFull: the replay cache holds only live entries and is
	// full; the token is refused rather than forgetting a live jti. 503.
	ErrReplayCacheFull = errors.New("store: replay cache full")
	// ErrNoJTI: the token has no jti to remember (the verifier refuses
	// such a token first).
	ErrNoJTI = errors.New("store: token has no jti")
	// ErrTokenExpired: the token can no longer verify (exp plus
	// [skew.Max] has passed), so it is not worth remembering.
	ErrTokenExpired = errors.New("store: token expired")
)

// Store is what the broker needs of its state. [Memory] and [Redis]
// implement it; both are safe for concurrent use.
type Store interface {
	// Use records that the ID token (issuer, jti), issued at iat and
	// valid until exp, is being used. A second Use of the same token,
	// until exp plus [skew.Max], is [ErrReplayed]. An empty jti is
	// [ErrNoJTI] and an expired token [ErrTokenExpired], whichever store
	// refused, so that the caller's answer names the same reason. A
	// shared store that lost its data refuses a token issued before the
	// loss was noticed with [ErrIssuedBeforeEpoch].
	Use(ctx context.Context, issuer, jti string, iat, exp time.Time) error
	// Used reports whether the ID token (issuer, jti), issued at iat,
	// was used and is still remembered, without using it: what
	// [Store.Use] would call a replay (or [ErrIssuedBeforeEpoch]). A dry
	// run asks it, so that a spent token dry-runs as the exchange would
	// answer it, and an unspent one stays unspent.
	Used(ctx context.Context, issuer, jti string, iat time.Time) (bool, error)
	// Allow takes one event from key's budget under limit l, which must
	// not be zero.
	Allow(ctx context.Context, key string, l Limit) (Verdict, error)
	// Refund gives back one event that [Store.Allow] took from key's
	// budget under l, for an action that provably did nothing. The budget
	// never grows past its burst.
	Refund(ctx context.Context, key string, l Limit) error
	// Lease takes or renews the lease name for ttl and reports whether
	// this store's owner holds it. A lease is released only by its owner
	// ([Store.ReleaseLease]) or by its expiry.
	Lease(ctx context.Context, name string, ttl time.Duration) (bool, error)
	// ReleaseLease gives the lease up if this store's owner holds it.
	ReleaseLease(ctx context.Context, name string) error
	// Ping reports whether the store can answer now and keep what it is
	// told: for Redis, a write goes through ([ErrUnavailable] if not) and
	// keys cannot be evicted ([ErrUnsafe] if they can).
	Ping(ctx context.Context) error
	// Shared reports whether the state outlives this process and is seen
	// by every replica (Redis), rather than lost at exit (memory): a rule
	// that makes up for a lost replay cache at start need only apply when
	// it is false.
	Shared() bool
	// Close releases the store's connections.
	Close() error
}

// Limit is a rate limit: on average Rate events per Period, and up to
// Burst at once after a quiet spell (the generic cell rate algorithm:
// one event's worth of budget comes back every Period/Rate). It is the
// limit the policy writes, as it is.
type Limit = rate.Limit

// Verdict is what [Store.Allow] decided.
type Verdict struct {
	Allowed bool
	// Remaining is how many more events would be allowed now.
	Remaining int
	// RetryAfter, when not allowed, is how long until one event is.
	RetryAfter time.Duration
}

// Key derives a store key from parts (an issuer and a jti, or an issuer,
// a repository id and a rule): the hex SHA-256 of the parts joined by NUL,
// so that keys have a fixed size, no part can run into the next, and
// nothing a key is made of can be read back from it.
func Key(parts ...string) string {
	sum := keySum(parts...)
	return hex.EncodeToString(sum[:])
}

// keySum is the SHA-256 of parts joined by NUL: [Key] in hex for Redis,
// and the memory replay guard's key as it is.
func keySum(parts ...string) [sha256.Size]byte {
	h := sha256.New()
	for i, p := range parts {
		if i > 0 {
			h.Write([]byte{0})
		}
		h.Write([]byte(p))
	}
	var sum [sha256.Size]byte
	h.Sum(sum[:0])
	return sum
}

// unavailable wraps an error reaching the store.
func unavailable(op string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.Canceled) {
		// The caller hung up: not the store's failure.
		return err
	}
	return fmt.Errorf("%w: %s: %v", ErrUnavailable, op, err)
}
