package broker

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/astro-sts/astro-sts/internal/astro"
	"github.com/astro-sts/astro-sts/internal/brokerapi"
	"github.com/astro-sts/astro-sts/internal/idtoken"
	"github.com/astro-sts/astro-sts/internal/policy"
	"github.com/astro-sts/astro-sts/internal/store"
)

// classifyCases pin what the caller gets for each error the broker can meet:
// the status, the code and reason a job acts on, and the outcome label of
// the metrics. TestEveryCodeIsPinned makes sure every Code* and Reason*
// constant appears here.
var classifyCases = []struct {
	name    string
	err     error
	status  int
	code    string
	reason  string
	outcome string
}{
	{"malformed body", badRequest("the body is not valid JSON"), 400, brokerapi.CodeBadRequest, "", "bad_request"},
	{"malformed request", fmt.Errorf("%w: ttl is negative", policy.ErrBadRequest), 400, brokerapi.CodeBadRequest, "", "bad_request"},
	{"invalid Astro id", fmt.Errorf("get: %w", astro.ErrInvalidArgument), 400, brokerapi.CodeBadRequest, "", "bad_request"},
	{"body too large", &http.MaxBytesError{Limit: maxBody}, 413, brokerapi.CodeTooLarge, "", "bad_request"},
	{"GET", errMethodNotAllowed, 405, brokerapi.CodeMethodNotAllowed, "", "bad_request"},
	{"no such endpoint", errNotFound, 404, brokerapi.CodeNotFound, "", "not_found"},
	{"no such rotation", errNoSuchRotation, 403, brokerapi.CodeDenied, "", "deny"},
	{"no bearer token", errMissingToken, 401, brokerapi.CodeTokenMissing, "", "unauthorized"},
	{"not a JWT", fmt.Errorf("%w: 3 parts", idtoken.ErrMalformed), 401, brokerapi.CodeTokenInvalid, brokerapi.ReasonMalformed, "unauthorized"},
	{"untrusted issuer", fmt.Errorf("%w: x", idtoken.ErrUntrustedIssuer), 401, brokerapi.CodeTokenInvalid, brokerapi.ReasonUnknownIssuer, "unauthorized"},
	{"bad signature", fmt.Errorf("%w: x", idtoken.ErrBadSignature), 401, brokerapi.CodeTokenInvalid, brokerapi.ReasonBadSignature, "unauthorized"},
	{"wrong audience", fmt.Errorf("%w: x", idtoken.ErrWrongAudience), 401, brokerapi.CodeTokenInvalid, brokerapi.ReasonWrongAudience, "unauthorized"},
	{"expired", fmt.Errorf("%w: x", idtoken.ErrExpired), 401, brokerapi.CodeTokenInvalid, brokerapi.ReasonExpired, "unauthorized"},
	{"not yet valid", fmt.Errorf("%w: x", idtoken.ErrNotYetValid), 401, brokerapi.CodeTokenInvalid, brokerapi.ReasonNotYetValid, "unauthorized"},
	{"bad claims", fmt.Errorf("%w: no jti", idtoken.ErrBadClaims), 401, brokerapi.CodeTokenInvalid, brokerapi.ReasonBadClaims, "unauthorized"},
	{"no run claims", (&idtoken.Claims{}).RequireRun(), 401, brokerapi.CodeTokenInvalid, brokerapi.ReasonMissingRunClaims, "unauthorized"},
	{"replayed", fmt.Errorf("%w: jti", store.ErrReplayed), 401, brokerapi.CodeTokenInvalid, brokerapi.ReasonReplayed, "unauthorized"},
	{"expired, says the store", fmt.Errorf("%w: expired", store.ErrTokenExpired), 401, brokerapi.CodeTokenInvalid, brokerapi.ReasonExpired, "unauthorized"},
	{"no jti, says the store", fmt.Errorf("%w: no jti", store.ErrNoJTI), 401, brokerapi.CodeTokenInvalid, brokerapi.ReasonBadClaims, "unauthorized"},
	{"invalid without a reason", fmt.Errorf("%w: ?", idtoken.ErrInvalidToken), 401, brokerapi.CodeTokenInvalid, "", "unauthorized"},
	{"no rule", policy.ErrNoMatchingRule, 403, brokerapi.CodeDenied, "", "deny"},
	{"too wide", &policy.WidenError{Rule: "r", Field: "role", Asked: "WORKSPACE_OWNER", Allowed: "WORKSPACE_AUTHOR"}, 403, brokerapi.CodeTooWide, "", "deny"},
	{"rotation not allowed", errRotationDenied, 403, brokerapi.CodeDenied, "", "deny"},
	{"another run's token", errNotOwner, 404, brokerapi.CodeNotFound, "", "not_found"},
	{"no such token", errNoSuchToken, 404, brokerapi.CodeNotFound, "", "not_found"},
	{"no rotator", errNoRotator, 501, brokerapi.CodeNotConfigured, "", "not_configured"},
	{"issuer down", fmt.Errorf("%w: discovery", idtoken.ErrIssuerUnavailable), 503, brokerapi.CodeUpstreamUnavailable, brokerapi.ReasonIssuerUnavailable, "unavailable"},
	{"Astro throttles", &astro.APIError{StatusCode: 429}, 429, brokerapi.CodeUpstreamUnavailable, brokerapi.ReasonAstroRateLimited, "unavailable"},
	{"Astro fails", &astro.APIError{StatusCode: 503}, 502, brokerapi.CodeUpstreamUnavailable, brokerapi.ReasonAstroError, "unavailable"},
	{"Astro unreachable", upstream(errors.New("dial tcp: refused")), 502, brokerapi.CodeUpstreamUnavailable, brokerapi.ReasonAstroUnreachable, "unavailable"},
	{"timeout", fmt.Errorf("create: %w", context.DeadlineExceeded), 503, brokerapi.CodeUpstreamUnavailable, brokerapi.ReasonTimeout, "unavailable"},
	{"Astro refuses the broker", &astro.APIError{StatusCode: 403}, 502, brokerapi.CodeUpstreamRefused, "", "unavailable"},
	{"store unreachable", fmt.Errorf("%w: replay: dial tcp: refused", store.ErrUnavailable), 503, brokerapi.CodeStoreUnavailable, "", "unavailable"},
	{"revokes rate limited", &rateLimitedError{op: opRevoke, limit: policy.RateLimit{Rate: 5, Period: time.Minute, Burst: 5}, retryAfter: 12 * time.Second}, 429, brokerapi.CodeRateLimited, "", brokerapi.CodeRateLimited},
	{"rate limited", &rateLimitedError{op: opExchange, rule: "deploy", limit: policy.RateLimit{Rate: 5, Period: time.Minute, Burst: 5}, retryAfter: 12 * time.Second}, 429, brokerapi.CodeRateLimited, "", brokerapi.CodeRateLimited},
	{"replay cache full", fmt.Errorf("%w: 10 live entries", store.ErrReplayCacheFull), 503, brokerapi.CodeBusy, "", "unavailable"},
	{"issued before a restart", fmt.Errorf("%w (issued 12:00:00)", errIssuedBeforeStart), 503, brokerapi.CodeRestarted, "", "unavailable"},
	{"rotation failed", &rotationFailedError{err: errors.New("vault")}, 502, brokerapi.CodeRotationFailed, "", "error"},
	{"a bug", errors.New("nil map"), 500, brokerapi.CodeInternal, "", "error"},
}

func TestClassify(t *testing.T) {
	for _, tc := range classifyCases {
		t.Run(tc.name, func(t *testing.T) {
			ae := classify(tc.err)
			got := fmt.Sprintf("%d %s/%s %s", ae.status, ae.code, ae.reason, ae.outcome())
			want := fmt.Sprintf("%d %s/%s %s", tc.status, tc.code, tc.reason, tc.outcome)
			if got != want {
				t.Errorf("classify(%v) = %s, want %s", tc.err, got, want)
			}
			if ae.message == "" {
				t.Error("no message")
			}
		})
	}
}

// A too_wide answer names the rule, the field and the most the rule
// allows; the caller is trusted by that rule.
func TestTooWideBody(t *testing.T) {
	ae := classify(fmt.Errorf("decide: %w", &policy.WidenError{Rule: "deploy-main", Field: "ttl", Asked: "2h0m0s", Allowed: "30m0s"}))
	want := brokerapi.ErrorBody{Error: brokerapi.CodeTooWide, Message: `ttl 2h0m0s exceeds 30m0s allowed by rule "deploy-main"`, RequestID: "id-1",
		Rule: "deploy-main", Field: "ttl", Allowed: "30m0s"}
	if diff := cmp.Diff(want, ae.body("id-1")); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

// Every code and reason the broker declares is pinned by a case above (or,
// for the ones written outside classify, named here), so that a new one
// cannot be added without saying what it answers. brokerapi's own test
// keeps [brokerapi.Codes] and [brokerapi.Reasons] complete.
func TestEveryCodeIsPinned(t *testing.T) {
	pinned := map[string]bool{
		brokerapi.CodeRotationIncomplete: true, // handleRotate's partial-failure answer; TestRotation* in rotate_test.go
	}
	for _, tc := range classifyCases {
		pinned[tc.code], pinned[tc.reason] = true, true
	}
	declared := append(brokerapi.Codes(), brokerapi.Reasons()...)
	for _, v := range declared {
		if !pinned[v] {
			t.Errorf("%q has no case in classifyCases", v)
		}
	}
	if n := len(declared); n < 20 {
		t.Errorf("found only %d codes and reasons in brokerapi", n)
	}
}
