package brokerapi

// The codes of the broker's error answers: the "error" of [ErrorBody].
// They are stable: a job (the action) acts on them without seeing the
// policy, and docs/policy.md lists them. The broker's classify is the one
// place that chooses them; a test there pins each.
const (
	// CodeBadRequest: the request is malformed whatever the policy (400).
	CodeBadRequest = "bad_request"
	// CodeTooLarge: the body is over the broker's limit (413).
	CodeTooLarge = "too_large"
	// CodeMethodNotAllowed: the API takes POST only (405).
	CodeMethodNotAllowed = "method_not_allowed"
	// CodeNotFound: no such endpoint, or, on revoke, no token of that id
	// that this run may revoke: another run's token and an unknown id
	// get the same answer (404).
	CodeNotFound = "not_found"
	// CodeTokenMissing: no OIDC ID token as a Bearer token (401).
	CodeTokenMissing = "token_missing"
	// CodeTokenInvalid: the OIDC ID token was refused; the body's reason
	// says why, one of the Reason* token reasons (401).
	CodeTokenInvalid = "token_invalid"
	// CodeDenied: no rule trusts this identity, or no rotation of that
	// name allows it (an unknown name and a forbidden one alike) (403).
	// The answer says nothing more: the policy is the platform team's,
	// and the broker's log explains the refusal under the request id.
	CodeDenied = "denied"
	// CodeTooWide: a rule trusts this identity, but the request is wider
	// than its grant; the body names the rule, the field and the most the
	// rule allows (403). The caller is trusted by that rule, so it may
	// know its grant.
	CodeTooWide = "too_wide"
	// CodeRateLimited: too many tokens for this identity from its rule,
	// or too many revokes from its repository; try after Retry-After
	// (429). The limits stop a runaway job, so the action does not wait
	// them out.
	CodeRateLimited = "rate_limited"
	// CodeStoreUnavailable: the broker cannot reach its shared state
	// (Redis), so it refuses rather than exchange without the replay
	// check; try again after Retry-After (503).
	CodeStoreUnavailable = "store_unavailable"
	// CodeNotConfigured: rotation is not configured on this broker (501).
	CodeNotConfigured = "not_configured"
	// CodeUpstreamUnavailable: the OIDC issuer or the Astro API could not
	// serve the request; the reason says which; try again, after
	// Retry-After if there is one (429, 502 or 503).
	CodeUpstreamUnavailable = "upstream_unavailable"
	// CodeUpstreamRefused: the Astro API refused the broker's own request:
	// the broker's configuration is wrong, which only its operators can
	// fix (502).
	CodeUpstreamRefused = "upstream_refused"
	// CodeBusy: the broker cannot take the request now; try again (503).
	CodeBusy = "busy"
	// CodeRestarted: the broker restarted after the OIDC token was issued
	// and, its replay memory being gone, cannot tell whether the token was
	// used before; try again with a fresh token after Retry-After (503).
	CodeRestarted = "restarted"
	// CodeRotationFailed: a rotation started and failed; its sinks must be
	// checked before it runs again (502).
	CodeRotationFailed = "rotation_failed"
	// CodeRotationIncomplete: a rotation failed in some sinks; the body
	// lists each (502).
	CodeRotationIncomplete = "rotation_incomplete"
	// CodeInternal: a bug; the log under the request id says what (500).
	CodeInternal = "internal"
)

// The reasons of a token_invalid answer: what the job can fix.
const (
	ReasonMalformed        = "malformed"          // not a JWT at all
	ReasonUnknownIssuer    = "unknown_issuer"     // iss is not one the broker trusts
	ReasonBadSignature     = "bad_signature"      // does not verify with the issuer's keys
	ReasonWrongAudience    = "wrong_audience"     // aud is not the broker's audience
	ReasonExpired          = "expired"            // exp has passed
	ReasonNotYetValid      = "not_yet_valid"      // nbf or iat in the future
	ReasonBadClaims        = "bad_claims"         // sub, jti, exp or iat missing or malformed
	ReasonMissingRunClaims = "missing_run_claims" // no repository_id or run_id
	ReasonReplayed         = "replayed"           // the token was already used
)

// The reasons of an upstream_unavailable answer: who could not serve.
const (
	ReasonIssuerUnavailable = "issuer_unavailable" // the OIDC issuer's keys could not be fetched
	ReasonAstroRateLimited  = "astro_rate_limited" // the Astro API throttles the broker
	ReasonAstroError        = "astro_error"        // the Astro API failed (5xx)
	ReasonAstroUnreachable  = "astro_unreachable"  // the Astro API could not be reached
	ReasonTimeout           = "timeout"            // the request ran out of time
)

// Codes lists every code of [ErrorBody.Error], so that a client can check
// it knows what to say about each (a test in brokerapi keeps it complete).
func Codes() []string {
	return []string{
		CodeBadRequest, CodeTooLarge, CodeMethodNotAllowed, CodeNotFound,
		CodeTokenMissing, CodeTokenInvalid, CodeDenied, CodeTooWide,
		CodeRateLimited, CodeStoreUnavailable, CodeNotConfigured,
		CodeUpstreamUnavailable, CodeUpstreamRefused, CodeBusy, CodeRestarted,
		CodeRotationFailed, CodeRotationIncomplete, CodeInternal,
	}
}

// Reasons lists every reason of [ErrorBody.Reason].
func Reasons() []string {
	return []string{
		ReasonMalformed, ReasonUnknownIssuer, ReasonBadSignature, ReasonWrongAudience,
		ReasonExpired, ReasonNotYetValid, ReasonBadClaims, ReasonMissingRunClaims, ReasonReplayed,
		ReasonIssuerUnavailable, ReasonAstroRateLimited, ReasonAstroError, ReasonAstroUnreachable, ReasonTimeout,
	}
}
