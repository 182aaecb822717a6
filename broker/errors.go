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
	errNotOwner         = errors.New("token was not minted for this run")
	errNoRotator        = errors.New("rotation is not configured on this broker")
	errNoSuchRotation   = errors.New("no such rotation")
	errRotationDenied   = errors.New("identity may not trigger this rotation")
	// errNoRunClaims refuses (401) a verified token without repository_id
	// or run_id: the marker of a token minted for it would not parse, so
	// neither revoke nor the reaper could ever remove that token.
	errNoRunClaims = fmt.Errorf("%w: no repository_id or run_id claim, so a token minted for it could be neither revoked nor reaped", idtoken.ErrInvalidToken)
)

// badRequestError is a malformed request; its message is safe to return.
type badRequestError struct{ msg string }

func (e *badRequestError) Error() string { return e.msg }

func badRequest(format string, a ...any) error {
	return &badRequestError{msg: fmt.Sprintf(format, a...)}
}

// errorBody is the broker's error answer.
type errorBody struct {
	Error   string `json:"error"`
	Message string `json:"message"`
}

// codeRotationFailed is the code of a rotation that started and failed.
const codeRotationFailed = "rotation_failed"

// codeRateLimited refuses an exchange over its rule's rate limit.
const codeRateLimited = "rate_limited"

// apiError is what classify decides for an error: the status, a stable
// code, a message safe for an unauthenticated caller, and how loudly to log.
type apiError struct {
	status     int
	code       string
	message    string
	retryAfter time.Duration
}

// classify is the one place that maps the broker's and its packages' errors
// to HTTP. Messages are constant or built only from values the caller sent
// or the policy names; verification details stay in the log.
func classify(err error) apiError {
	var (
		rotErr *rotationFailedError
		bad    *badRequestError
		widen  *policy.WidenError
		apiErr *astro.APIError
		maxErr *http.MaxBytesError
		rate   *rateLimitedError
	)
	switch {
	case errors.As(err, &rotErr):
		return apiError{http.StatusBadGateway, codeRotationFailed, "the rotation did not complete; the broker's log says why; check the sinks before running it again", 0}
	case errors.As(err, &maxErr):
		return apiError{http.StatusRequestEntityTooLarge, "too_large", "request body too large", 0}
	case errors.As(err, &bad):
		return apiError{http.StatusBadRequest, "bad_request", bad.msg, 0}
	case errors.Is(err, astro.ErrInvalidArgument):
		return apiError{http.StatusBadRequest, "bad_request", "the request names an invalid id", 0}
	case errors.Is(err, policy.ErrBadRequest):
		return apiError{http.StatusBadRequest, "bad_request", "the request is malformed: " + err.Error(), 0}
	case errors.Is(err, errMethodNotAllowed):
		return apiError{http.StatusMethodNotAllowed, "method_not_allowed", "use POST", 0}
	case errors.Is(err, errNotFound):
		return apiError{http.StatusNotFound, "not_found", "no such endpoint", 0}
	case errors.Is(err, errMissingToken):
		return apiError{http.StatusUnauthorized, "unauthorized", "an OIDC ID token is required as a Bearer token", 0}
	case errors.Is(err, idtoken.ErrIssuerUnavailable):
		return apiError{http.StatusServiceUnavailable, "issuer_unavailable", "the OIDC issuer's keys could not be fetched; try again", 5 * time.Second}
	case errors.Is(err, store.ErrUnavailable):
		return apiError{http.StatusServiceUnavailable, "store_unavailable", "the broker cannot reach its shared state; try again", 5 * time.Second}
	case errors.As(err, &rate):
		return apiError{http.StatusTooManyRequests, codeRateLimited, fmt.Sprintf("this repository has had its share of tokens from rule %q (%d per %s, burst %d); try again later", rate.rule, rate.limit.Rate, rate.limit.Period, rate.limit.Burst), max(rate.retryAfter, time.Second)}
	case errors.Is(err, idtoken.ErrReplayCacheFull):
		return apiError{http.StatusServiceUnavailable, "busy", "the broker is busy; try again", 5 * time.Second}
	case errors.Is(err, idtoken.ErrMalformed), errors.Is(err, idtoken.ErrUntrustedIssuer),
		errors.Is(err, idtoken.ErrInvalidToken), errors.Is(err, idtoken.ErrReplayed):
		return apiError{http.StatusUnauthorized, "unauthorized", "the OIDC token was not accepted", 0}
	case errors.As(err, &widen):
		return apiError{http.StatusForbidden, "too_wide", widen.Error(), 0}
	case errors.Is(err, policy.ErrNoMatchingRule):
		return apiError{http.StatusForbidden, "denied", "no policy rule allows this identity", 0}
	case errors.Is(err, errNotOwner):
		return apiError{http.StatusForbidden, "forbidden", "the token was not minted for this run", 0}
	case errors.Is(err, errRotationDenied):
		return apiError{http.StatusForbidden, "denied", "this identity may not trigger that rotation", 0}
	case errors.Is(err, errNoSuchRotation):
		return apiError{http.StatusNotFound, "not_found", "no rotation of that name in the policy", 0}
	case errors.Is(err, errNoRotator):
		return apiError{http.StatusNotImplemented, "not_configured", "rotation is not configured on this broker", 0}
	case errors.As(err, &apiErr):
		switch {
		case apiErr.StatusCode == http.StatusTooManyRequests:
			return apiError{http.StatusTooManyRequests, "upstream_throttled", "the Astro API is rate limiting; try again later", apiErr.RetryAfter}
		case apiErr.StatusCode >= 500:
			return apiError{http.StatusBadGateway, "upstream_error", "the Astro API failed; try again", apiErr.RetryAfter}
		default:
			// A 4xx from Astro on our own call means the broker's
			// configuration (organization token, ids in the policy) is
			// wrong: the caller can do nothing about it.
			return apiError{http.StatusBadGateway, "upstream_refused", "the Astro API refused the broker's request; tell the broker's operators", 0}
		}
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return apiError{http.StatusServiceUnavailable, "timeout", "the request timed out; try again", 0}
	}
	if isUpstream(err) {
		return apiError{http.StatusBadGateway, "upstream_unreachable", "the Astro API could not be reached; try again", 0}
	}
	return apiError{http.StatusInternalServerError, "internal", "internal error", 0}
}

// outcome is the metrics label of a failed operation, derived from the
// answer classify gave the caller, so the two can never disagree.
func (e apiError) outcome() string {
	switch st := e.status; {
	case e.code == codeRotationFailed:
		// A 502, but not upstream trouble to wait out: the rotation ran
		// and failed, and must not be run again blindly.
		return "error"
	case e.code == codeRateLimited:
		return codeRateLimited
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
	return e.status >= 400 && e.status < 500 && (e.status != http.StatusTooManyRequests || e.code == codeRateLimited)
}

// upstreamError marks a transport failure talking to Astro.
type upstreamError struct{ err error }

func (e *upstreamError) Error() string { return "astro api: " + e.err.Error() }
func (e *upstreamError) Unwrap() error { return e.err }

func isUpstream(err error) bool {
	var u *upstreamError
	return errors.As(err, &u)
}

// writeError writes the error answer; 4xx log at Warn, 5xx at Error.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, endpoint string, err error) {
	ae := classify(err)
	level := slog.LevelWarn
	if ae.status >= 500 {
		level = slog.LevelError
	}
	s.log.Log(r.Context(), level, "request failed",
		"endpoint", endpoint, "status", ae.status, "code", ae.code, "error", err.Error())
	if ae.retryAfter > 0 {
		secs := int((ae.retryAfter + time.Second - 1) / time.Second)
		w.Header().Set("Retry-After", strconv.Itoa(secs))
	}
	writeJSON(w, ae.status, errorBody{Error: ae.code, Message: ae.message})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
