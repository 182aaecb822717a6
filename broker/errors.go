package broker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/astro-sts/astro-sts/internal/astro"
	"github.com/astro-sts/astro-sts/internal/brokerapi"
	"github.com/astro-sts/astro-sts/internal/idtoken"
	"github.com/astro-sts/astro-sts/internal/policy"
	"github.com/astro-sts/astro-sts/internal/store"
)

// Errors of the broker's own making. Errors from the packages it calls
// (idtoken, policy, astro) are mapped as they are, in [classify].
var (
	errNotFound         = errors.New("not found")
	errMethodNotAllowed = errors.New("method not allowed")
	errMissingToken     = errors.New("missing bearer token")
	errNoRotator        = errors.New("rotation is not configured on this broker")

	// errNotOwner and errNoSuchToken are one answer to the caller (see
	// [Server.Revoke]): a run that did not mint a token must not learn
	// whether it exists. The log tells them apart.
	errNotOwner    = errors.New("the token was not minted by the broker for this run")
	errNoSuchToken = errors.New("no token of this id in Astro, and none revoked by this run")

	// errNoSuchRotation and errRotationDenied are one answer to the
	// caller, for the same reason: a workflow must not learn the names
	// of rotations it may not run.
	errNoSuchRotation = errors.New("no such rotation")
	errRotationDenied = errors.New("identity may not trigger this rotation")
)

// badRequestError is a malformed request; its message is safe to return.
type badRequestError struct{ msg string }

func (e *badRequestError) Error() string { return e.msg }

func badRequest(format string, a ...any) error {
	return &badRequestError{msg: fmt.Sprintf(format, a...)}
}

// apiError is what classify decides for an error: the status, a stable
// code and reason, a message safe for an unauthenticated caller, and how
// long to wait before trying again.
type apiError struct {
	status     int
	code       string
	reason     string
	message    string
	retryAfter time.Duration
	widen      *policy.WidenError // too_wide: what the rule allows
}

// tokenReasons map idtoken's errors, and the replay store's, to a
// token_invalid reason and message, most specific first. A message tells the job what to fix and nothing of
// the broker's configuration (not even the audience it expects: the job
// knows which one it asked for).
var tokenReasons = []struct {
	errs    []error
	reason  string
	message string
}{
	{[]error{store.ErrReplayed}, brokerapi.ReasonReplayed, "this OIDC token was already used: each request needs a fresh one"},
	{[]error{idtoken.ErrMissingRunClaims}, brokerapi.ReasonMissingRunClaims, "the OIDC token has no repository_id or run_id: only a GitHub Actions job can exchange its token"},
	{[]error{idtoken.ErrWrongAudience}, brokerapi.ReasonWrongAudience, "the OIDC token is for another audience: the action's audience input (by default broker-url) must be the broker's configured audience"},
	{[]error{idtoken.ErrExpired, store.ErrTokenExpired}, brokerapi.ReasonExpired, "the OIDC token has expired: request it just before the call, and check the runner's clock"},
	{[]error{idtoken.ErrNotYetValid}, brokerapi.ReasonNotYetValid, "the OIDC token is not valid yet: check the clocks of the runner and of the broker"},
	{[]error{idtoken.ErrBadSignature}, brokerapi.ReasonBadSignature, "the OIDC token's signature does not verify with its issuer's keys"},
	{[]error{idtoken.ErrBadClaims, store.ErrNoJTI}, brokerapi.ReasonBadClaims, "the OIDC token lacks a required claim (sub, jti, exp, iat) or has a malformed one"},
	{[]error{idtoken.ErrUntrustedIssuer}, brokerapi.ReasonUnknownIssuer, "the OIDC token's issuer is not one this broker trusts"},
	{[]error{idtoken.ErrMalformed}, brokerapi.ReasonMalformed, "the Bearer token is not an OIDC ID token (a JWT), or its payload repeats a claim name or has two that differ only by case"},
}

// tokenRefusal reports whether err refuses the caller's ID token and, if
// so, sets *ae to the token_invalid answer with the reason of the first of
// [tokenReasons] that err is. The table is the one list of those errors:
// classify asks this, not a list of its own beside it.
func tokenRefusal(err error, ae *apiError) bool {
	for _, r := range tokenReasons {
		for _, re := range r.errs {
			if errors.Is(err, re) {
				*ae = apiError{status: http.StatusUnauthorized, code: brokerapi.CodeTokenInvalid, reason: r.reason, message: r.message}
				return true
			}
		}
	}
	if errors.Is(err, idtoken.ErrInvalidToken) {
		// An ErrInvalidToken without a reason is a bug in idtoken; the
		// caller still learns that its token was refused.
		*ae = apiError{status: http.StatusUnauthorized, code: brokerapi.CodeTokenInvalid, message: "the OIDC token was not accepted"}
		return true
	}
	return false
}

// classify is the one place that maps the broker's and its packages' errors
// to HTTP. Messages are constant or built only from values the caller sent
// or the one rule that trusts the caller; verification details and the
// policy stay in the log.
func classify(err error) apiError {
	var (
		rotErr *rotationFailedError
		bad    *badRequestError
		widen  *policy.WidenError
		apiErr *astro.APIError
		maxErr *http.MaxBytesError
		rate   *rateLimitedError
		tok    apiError
	)
	switch {
	case errors.As(err, &rotErr):
		return apiError{status: http.StatusBadGateway, code: brokerapi.CodeRotationFailed, message: "the rotation did not complete; the broker's log says why; check the sinks before running it again"}
	case errors.As(err, &maxErr):
		return apiError{status: http.StatusRequestEntityTooLarge, code: brokerapi.CodeTooLarge, message: "request body too large"}
	case errors.As(err, &bad):
		return apiError{status: http.StatusBadRequest, code: brokerapi.CodeBadRequest, message: bad.msg}
	case errors.Is(err, astro.ErrInvalidArgument):
		return apiError{status: http.StatusBadRequest, code: brokerapi.CodeBadRequest, message: "the request names an invalid id"}
	case errors.Is(err, policy.ErrBadRequest):
		return apiError{status: http.StatusBadRequest, code: brokerapi.CodeBadRequest, message: "the request is malformed: " + err.Error()}
	case errors.Is(err, errMethodNotAllowed):
		return apiError{status: http.StatusMethodNotAllowed, code: brokerapi.CodeMethodNotAllowed, message: "use POST"}
	case errors.Is(err, errNotFound):
		return apiError{status: http.StatusNotFound, code: brokerapi.CodeNotFound, message: "no such endpoint"}
	case errors.Is(err, errMissingToken):
		return apiError{status: http.StatusUnauthorized, code: brokerapi.CodeTokenMissing, message: "an OIDC ID token is required as a Bearer token"}
	case errors.Is(err, idtoken.ErrIssuerUnavailable):
		return apiError{status: http.StatusServiceUnavailable, code: brokerapi.CodeUpstreamUnavailable, reason: brokerapi.ReasonIssuerUnavailable, message: "the OIDC issuer's keys could not be fetched; try again", retryAfter: 5 * time.Second}
	case errors.Is(err, store.ErrUnavailable):
		return apiError{status: http.StatusServiceUnavailable, code: brokerapi.CodeStoreUnavailable, message: "the broker cannot reach its shared state; try again", retryAfter: 5 * time.Second}
	case errors.As(err, &rate) && rate.op == opRevoke:
		return apiError{status: http.StatusTooManyRequests, code: brokerapi.CodeRateLimited, message: fmt.Sprintf("this repository has had its share of revokes (%d per %s, burst %d); try again later", rate.limit.Rate, rate.limit.Period, rate.limit.Burst), retryAfter: max(rate.retryAfter, time.Second)}
	case errors.As(err, &rate):
		return apiError{status: http.StatusTooManyRequests, code: brokerapi.CodeRateLimited, message: fmt.Sprintf("this repository has had its share of tokens from rule %q (%d per %s, burst %d); try again later", rate.rule, rate.limit.Rate, rate.limit.Period, rate.limit.Burst), retryAfter: max(rate.retryAfter, time.Second)}
	case errors.Is(err, errIssuedBeforeStart):
		return apiError{status: http.StatusServiceUnavailable, code: brokerapi.CodeRestarted, message: "the broker restarted after this OIDC token was issued; fetch a fresh one and try again", retryAfter: time.Second}
	case errors.Is(err, store.ErrIssuedBeforeEpoch):
		return apiError{status: http.StatusServiceUnavailable, code: brokerapi.CodeRestarted, message: "the broker's shared store lost its record of used tokens after this OIDC token was issued; fetch a fresh one and try again", retryAfter: time.Second}
	case errors.Is(err, store.ErrReplayCacheFull):
		return apiError{status: http.StatusServiceUnavailable, code: brokerapi.CodeBusy, message: "the broker is busy; try again", retryAfter: 5 * time.Second}
	case tokenRefusal(err, &tok):
		return tok
	case errors.As(err, &widen):
		return apiError{status: http.StatusForbidden, code: brokerapi.CodeTooWide, message: widen.Error(), widen: widen}
	case errors.Is(err, policy.ErrNoMatchingRule):
		return apiError{status: http.StatusForbidden, code: brokerapi.CodeDenied, message: "no policy rule allows this identity"}
	case errors.Is(err, errNotOwner), errors.Is(err, errNoSuchToken):
		return apiError{status: http.StatusNotFound, code: brokerapi.CodeNotFound, message: "this run has no token of that id to revoke"}
	case errors.Is(err, errRotationDenied), errors.Is(err, errNoSuchRotation):
		return apiError{status: http.StatusForbidden, code: brokerapi.CodeDenied, message: "no rotation of that name allows this identity"}
	case errors.Is(err, errNoRotator):
		return apiError{status: http.StatusNotImplemented, code: brokerapi.CodeNotConfigured, message: "rotation is not configured on this broker"}
	case errors.As(err, &apiErr):
		switch {
		case apiErr.StatusCode == http.StatusTooManyRequests:
			return apiError{status: http.StatusTooManyRequests, code: brokerapi.CodeUpstreamUnavailable, reason: brokerapi.ReasonAstroRateLimited, message: "the Astro API is rate limiting; try again later", retryAfter: apiErr.RetryAfter}
		case apiErr.StatusCode >= 500:
			return apiError{status: http.StatusBadGateway, code: brokerapi.CodeUpstreamUnavailable, reason: brokerapi.ReasonAstroError, message: "the Astro API failed; try again", retryAfter: apiErr.RetryAfter}
		default:
			// A 4xx from Astro on our own call means the broker's
			// configuration (organization token, ids in the policy) is
			// wrong: the caller can do nothing about it.
			return apiError{status: http.StatusBadGateway, code: brokerapi.CodeUpstreamRefused, message: "the Astro API refused the broker's request; tell the broker's operators"}
		}
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return apiError{status: http.StatusServiceUnavailable, code: brokerapi.CodeUpstreamUnavailable, reason: brokerapi.ReasonTimeout, message: "the request timed out; try again"}
	}
	if isUpstream(err) {
		return apiError{status: http.StatusBadGateway, code: brokerapi.CodeUpstreamUnavailable, reason: brokerapi.ReasonAstroUnreachable, message: "the Astro API could not be reached; try again"}
	}
	return apiError{status: http.StatusInternalServerError, code: brokerapi.CodeInternal, message: "internal error"}
}

// Classify returns what the broker answers for err: the status and the
// error body, without a request id. `astro-sts policy check` prints its
// decisions' codes with it, so that the command and the broker cannot
// disagree.
func Classify(err error) (status int, body brokerapi.ErrorBody) {
	ae := classify(err)
	return ae.status, ae.body("")
}

// body is the error answer for e, under the request's id.
func (e apiError) body(requestID string) brokerapi.ErrorBody {
	b := brokerapi.ErrorBody{Error: e.code, Reason: e.reason, Message: e.message, RequestID: requestID}
	if w := e.widen; w != nil {
		b.Rule, b.Field, b.Allowed = w.Rule, w.Field, w.Allowed
	}
	return b
}

// outcome is the metrics label of a failed operation, derived from the
// answer classify gave the caller, so the two can never disagree.
func (e apiError) outcome() string {
	switch st := e.status; {
	case e.code == brokerapi.CodeRotationFailed:
		// A 502, but not upstream trouble to wait out: the rotation ran
		// and failed, and must not be run again blindly.
		return "error"
	case e.code == brokerapi.CodeRateLimited:
		return brokerapi.CodeRateLimited
	case st == http.StatusUnauthorized:
		return "unauthorized"
	case st == http.StatusForbidden:
		return "deny"
	case st == http.StatusNotFound:
		return "not_found"
	case st == http.StatusNotImplemented:
		return "not_configured"
	case st == http.StatusTooManyRequests || st == http.StatusBadGateway || st == http.StatusServiceUnavailable:
		return "unavailable"
	case st >= 400 && st < 500:
		return "bad_request"
	}
	return "error"
}

// refused reports whether the answer refuses the caller's request (a 4xx,
// except the 429 that passes on Astro's throttling) rather than failing to
// serve it: the audit record says "deny" for the one, "error" for the
// other.
func (e apiError) refused() bool {
	return e.status >= 400 && e.status < 500 && (e.status != http.StatusTooManyRequests || e.code == brokerapi.CodeRateLimited)
}

// rateLimitedError refuses an exchange over its rule's rate limit, or a
// revoke over its repository's (429).
type rateLimitedError struct {
	op         op // opExchange (rule is set) or opRevoke
	rule       string
	limit      policy.RateLimit
	retryAfter time.Duration
}

func (e *rateLimitedError) Error() string {
	if e.op == opRevoke {
		return fmt.Sprintf("rate limited: a repository may revoke %d tokens per %s (burst %d); next in %s",
			e.limit.Rate, e.limit.Period, e.limit.Burst, e.retryAfter.Round(time.Millisecond))
	}
	return fmt.Sprintf("rate limited: rule %q allows a repository %d tokens per %s (burst %d); next in %s",
		e.rule, e.limit.Rate, e.limit.Period, e.limit.Burst, e.retryAfter.Round(time.Millisecond))
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

// upstreamError marks a transport failure talking to Astro.
type upstreamError struct{ err error }

func (e *upstreamError) Error() string { return "astro api: " + e.err.Error() }
func (e *upstreamError) Unwrap() error { return e.err }

func isUpstream(err error) bool {
	var u *upstreamError
	return errors.As(err, &u)
}

// writeError writes the error answer, under the request's id; 4xx log at
// Warn, 5xx at Error.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, endpoint string, err error) {
	ae := classify(err)
	level := slog.LevelWarn
	if ae.status >= 500 {
		level = slog.LevelError
	}
	id := requestID(r.Context())
	s.log.Log(r.Context(), level, "request failed", "request_id", id,
		"endpoint", endpoint, "status", ae.status, "code", ae.code, "reason", ae.reason, "error", logText(err.Error()))
	if ae.retryAfter > 0 {
		secs := int((ae.retryAfter + time.Second - 1) / time.Second)
		w.Header().Set("Retry-After", strconv.Itoa(secs))
	}
	writeJSON(w, ae.status, ae.body(id))
}

// maxLogText bounds an error's text in a log line. Every input the broker
// echoes is cut where it is quoted (see [quoteShort]); this is the backstop
// for text the broker does not build itself, so that no request can make
// a log line of tens of kilobytes.
const maxLogText = 2048

// logText is s cut to [maxLogText] bytes.
func logText(s string) string { return logCut(s, maxLogText) }

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
