// Package sink writes a freshly rotated Astro API token to the places that
// consume it: a field of a Vault KV v2 secret ([VaultSink]) or a GitHub
// Actions secret of a repository, an environment or an organization
// ([GitHubSink]).
//
// A sink only writes. Deciding when to rotate, and what to do when a write
// fails, is the rotation's job; to let it decide, every failure is an
// [*Error] whose Kind is one of [ErrDenied], [ErrUnavailable], [ErrConflict]
// or [ErrNotFound], matched with errors.Is. No error, log line or String
// output of this package ever contains a secret value, a token or a key.
package sink

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Sink is one destination of a rotated token.
type Sink interface {
	// Kind is "vault" or "github".
	Kind() string
	// Target names the destination for logs and audit records. It never
	// contains a secret: "secret/astro/airflow-ci#token",
	// "repo acme/dags secret ASTRO_API_TOKEN".
	Target() string
	// Write stores value at the target. It is idempotent: repeating a Write
	// that already landed leaves the destination as it is. version is what
	// the destination calls the written state: the KV v2 version number for
	// Vault, the key_id the value was sealed with for GitHub.
	Write(ctx context.Context, value string, m Metadata) (version string, err error)
}

// Metadata describes a write for the destinations that can record it next to
// the value (Vault's custom_metadata). GitHub secrets have no place for it.
type Metadata struct {
	// TokenID is the Astro token's id (never its value).
	TokenID string
	// Strategy is the rotation strategy that produced the value.
	Strategy string
	// RotatedAt is when the value was minted.
	RotatedAt time.Time
}

// Kinds of failure. An [*Error] wraps exactly one of them when the cause is
// known, so the rotation can retry [ErrUnavailable] and [ErrConflict], and
// alert on [ErrDenied] and [ErrNotFound] without parsing messages.
var (
	// ErrDenied: the destination refused the credentials (HTTP 401/403).
	ErrDenied = errors.New("denied")
	// ErrUnavailable: the destination could not be reached, answered 5xx or
	// 429, or asked to slow down (GitHub's secondary rate limit). Retrying
	// later may succeed; [Error.RetryAfter] says when, if the destination did.
	ErrUnavailable = errors.New("unavailable")
	// ErrConflict: another writer changed the Vault secret between our read
	// and our check-and-set write, again on every retry.
	ErrConflict = errors.New("conflict")
	// ErrNotFound: the target does not exist, or (GitHub) the credentials
	// cannot see it: GitHub answers 404 rather than 403 for private
	// repositories the caller has no access to.
	ErrNotFound = errors.New("not found")
	// ErrInvalidConfig: the configuration or the target is unusable; found at
	// load time by [Config.Validate] and the targets' Validate methods.
	ErrInvalidConfig = errors.New("invalid sink configuration")
)

// Error is the error every sink operation returns.
type Error struct {
	// Sink is "vault" or "github".
	Sink string
	// Target is the [Sink.Target] of the failed write.
	Target string
	// Op is the step that failed: "login", "read", "write", "metadata",
	// "public key", "repository", "installation token".
	Op string
	// Kind is one of [ErrDenied], [ErrUnavailable], [ErrConflict],
	// [ErrNotFound] or [ErrInvalidConfig], or nil when the failure fits
	// none of them (a malformed answer, a rejected request).
	Kind error
	// RetryAfter is the delay the destination asked for, zero when it did
	// not say.
	RetryAfter time.Duration
	// Err is the underlying error. Errors from the Vault and GitHub clients
	// carry the request URL and the server's message, never the credentials.
	Err error
}

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s sink %s: %s", e.Sink, e.Target, e.Op)
	if e.Kind != nil {
		fmt.Fprintf(&b, ": %v", e.Kind)
	}
	if e.RetryAfter > 0 {
		fmt.Fprintf(&b, " (retry after %s)", e.RetryAfter)
	}
	if e.Err != nil {
		fmt.Fprintf(&b, ": %v", e.Err)
	}
	return b.String()
}

// Unwrap lets errors.Is match both the Kind and the underlying error.
func (e *Error) Unwrap() []error {
	var errs []error
	if e.Kind != nil {
		errs = append(errs, e.Kind)
	}
	if e.Err != nil {
		errs = append(errs, e.Err)
	}
	return errs
}

// The names under which a Vault write records its [Metadata] in the
// secret's custom_metadata.
const (
	MetaTokenID   = "astro_sts_token_id"
	MetaRotatedAt = "astro_sts_rotated_at"
	MetaStrategy  = "astro_sts_strategy"
)
