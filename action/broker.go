package action

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/sethvargo/go-githubactions"

	"github.com/astro-sts/astro-sts/internal/brokerapi"
	"github.com/astro-sts/astro-sts/internal/idtoken"
	"github.com/astro-sts/astro-sts/internal/retry"
)

// The broker's operations, as named in errors and logs.
const (
	opExchange = "exchange"
	opRevoke   = "revoke"
	opRotate   = "rotate"
)

// BrokerError is the broker's refusal or failure, as its error body
// {"error": code, "reason": ..., "message": text, "request_id": ...}
// describes it. Message is the broker's safe text, stripped of control
// characters and shortened; the other fields are cleaned the same way.
type BrokerError struct {
	Op         string // "exchange", "revoke" or "rotate"
	Status     int
	Code       string // the broker's stable code: denied, too_wide, token_invalid, ...
	Reason     string // for token_invalid and upstream_unavailable: why
	Message    string
	RetryAfter time.Duration // from Retry-After on 429/503, 0 if absent
	Attempts   int
	// RequestID is the answer's X-Request-Id: the key to the broker's
	// records of this request, for the platform team.
	RequestID string
	// Rule, Field and Allowed explain a too_wide refusal: the rule that
	// trusts this job, what was asked beyond its grant, and the most it
	// allows.
	Rule, Field, Allowed string
	// Rotation is the rotation name, for the rotate operation.
	Rotation string
	// Sinks are the per-sink results a failed rotation reports.
	Sinks []SinkResult
}

// Error is one line: what the broker said, then what to do about it.
func (e *BrokerError) Error() string {
	verb := "refused"
	if e.Status >= 500 {
		verb = "failed"
	}
	what := "the " + e.Op
	if e.Op == opRotate && e.Rotation != "" {
		what = fmt.Sprintf("rotation %q", e.Rotation)
	}
	status := strconv.Itoa(e.Status)
	if e.Code != "" {
		status += " " + e.Code
		if e.Reason != "" {
			status += "/" + e.Reason
		}
	}
	if e.RequestID != "" {
		status += ", request id " + e.RequestID
	}
	msg := e.Message
	if msg == "" {
		msg = strings.ToLower(http.StatusText(e.Status))
	}
	if msg == "" {
		msg = "unexpected response"
	}
	return fmt.Sprintf("the broker %s %s (%s): %s — %s", verb, what, status, msg, e.hint())
}

func (e *BrokerError) hint() string {
	if h, ok := e.explain(); ok {
		return h
	}
	return "check broker-url and the broker's version"
}

// explain is what to do about this answer, or false when the action knows
// nothing better than to doubt broker-url. Every code of [brokerapi.Codes]
// has an answer here (TestEveryCodeHasAHint).
func (e *BrokerError) explain() (string, bool) {
	switch {
	case e.Code == brokerapi.CodeTokenInvalid && e.Reason == brokerapi.ReasonWrongAudience:
		return "set the audience input to the broker's configured audience (by default it is broker-url)", true
	case e.Code == brokerapi.CodeTokenInvalid && (e.Reason == brokerapi.ReasonExpired || e.Reason == brokerapi.ReasonNotYetValid):
		return "check the runner's clock, and re-run the job", true
	case e.Code == brokerapi.CodeTokenInvalid && e.Reason == brokerapi.ReasonUnknownIssuer:
		return "the broker does not trust this GitHub's OIDC issuer (GHES or an enterprise issuer?): ask your platform team", true
	case e.Code == brokerapi.CodeTokenInvalid && e.Reason == brokerapi.ReasonReplayed:
		return "the action fetches a fresh token for each attempt, so another party used this job's token first: re-run the job, and tell your platform team with the request id", true
	case e.Code == brokerapi.CodeTokenInvalid && e.Reason != "":
		// bad_signature, bad_claims, missing_run_claims, malformed: not
		// the audience, and nothing the workflow's author can fix.
		return "the token is not what the broker takes from a GitHub Actions job: tell your platform team, with the request id", true
	case e.Code == brokerapi.CodeTooWide && e.Op == opExchange:
		return "ask for less (inputs role, ttl, workspace-id, deployment-id), or ask your platform team to widen the rule; see the step summary", true
	case e.Code == brokerapi.CodeDenied && e.Op == opExchange:
		return "no rule of the trust policy trusts this job: hand the rule in the step summary, and the request id, to your platform team", true
	case statusHints[e.Status] != nil:
		if h, ok := statusHints[e.Status][e.Op]; ok {
			return h, true
		}
		return statusHints[e.Status][""], true
	case e.Code == brokerapi.CodeRateLimited:
		// Not retried (see retryTransient): the limit is there to stop a
		// runaway job, and its wait is often minutes.
		return fmt.Sprintf("re-run the job %s: the action does not wait out a rate limit, so that a runaway job stops here", e.after()), true
	case e.Status == http.StatusTooManyRequests && e.Reason == brokerapi.ReasonAstroRateLimited:
		return fmt.Sprintf("the Astro API is throttling the broker, for the whole organization: re-run the job %s, and tell your platform team if it persists", e.after()), true
	case e.Status == http.StatusTooManyRequests:
		return fmt.Sprintf("the broker is rate-limiting: re-run the job %s", e.after()), true
	case e.Op == opRotate && len(e.Sinks) > 0:
		return "see the step summary for each sink; fix the failing sink and re-run", true
	case e.Code == brokerapi.CodeStoreUnavailable:
		return fmt.Sprintf("the broker cannot reach its shared store (Redis), and does nothing without its replay check: gave up after %d attempts; re-run the job, and tell your platform team if it persists", e.Attempts), true
	case e.Status >= 500:
		return fmt.Sprintf("gave up after %d attempts: re-run the job, and tell your platform team if it persists", e.Attempts), true
	case e.Code == brokerapi.CodeMethodNotAllowed, e.Code == brokerapi.CodeTooLarge:
		// The action sends small POSTs only: a broker that refuses them is
		// not at broker-url, or is not the version the action speaks to.
		return "check broker-url and the broker's version", true
	case e.Status >= 300 && e.Status < 400:
		return "the broker does not redirect: check broker-url", true
	}
	return "", false
}

// statusHints are the hints of the client errors whose code says nothing
// more ([BrokerError.explain] reads them after the codes that do): by
// status, then by operation, "" for any other.
var statusHints = map[int]map[string]string{
	http.StatusBadRequest: {
		opExchange: "check the inputs workspace-id, deployment-id, role and ttl",
		"":         "check the action's inputs",
	},
	http.StatusUnauthorized: {
		"": "the broker did not accept this job's OIDC token: check that the audience input matches the broker's configured audience",
	},
	http.StatusForbidden: {
		opExchange: "ask your platform team to extend the trust policy, or request a narrower role, workspace or ttl",
		opRevoke:   "no rule of the trust policy trusts this job any more, so it may not revoke; the broker's reaper deletes the token when it expires",
		// An unknown rotation gets the same answer as a forbidden one.
		"": "check the rotation input against the broker's rotation config, and ask your platform team to allow this workflow to run the rotation",
	},
	http.StatusNotFound: {
		// The broker answers another run's token and an unknown id alike;
		// for this run's own token it means someone deleted it first.
		opRevoke: "this run has no token of that id left: the reaper deleted it (its ttl passed) or someone did by hand",
		opRotate: "check the rotation input against the broker's rotation config, and broker-url",
		"":       "check that broker-url is the broker's base URL",
	},
}

// after is when to re-run: "after 7s" from Retry-After, else "later".
func (e *BrokerError) after() string {
	if e.RetryAfter > 0 {
		return "after " + e.RetryAfter.String()
	}
	return "later"
}

// CallError reports a broker call that got no usable answer: the broker was
// unreachable, timed out or sent a body that is not the contract's.
type CallError struct {
	Op       string
	Attempts int
	Err      error
	// RequestID is the X-Request-Id the last attempt sent, if it got as
	// far as sending: the broker's log has it if the request arrived.
	RequestID string
}

func (e *CallError) Error() string {
	id := ""
	if e.RequestID != "" {
		id = " (last request id " + e.RequestID + ")"
	}
	return fmt.Sprintf("the %s call to the broker failed after %d attempts%s: %v — check broker-url and that the broker is up", e.Op, e.Attempts, id, e.Err)
}

func (e *CallError) Unwrap() error { return e.Err }

// exchanged is the broker's answer to an exchange. Its String and GoString
// leave the token value out, so that printing it by mistake leaks nothing.
type exchanged struct {
	Token          string
	TokenID        string
	OrganizationID string
	WorkspaceID    string
	DeploymentID   string
	Role           string
	ExpiresAt      time.Time
	Rule           string
}

func (x exchanged) String() string {
	return fmt.Sprintf("token %s (organization %s, workspace %s, deployment %s, role %s, expires %s, rule %s)",
		x.TokenID, x.OrganizationID, x.WorkspaceID, x.DeploymentID, x.Role, x.ExpiresAt.Format(time.RFC3339), x.Rule)
}

// GoString keeps %#v from printing the token field.
func (x exchanged) GoString() string { return "action.exchanged{" + x.String() + "}" }

// rotated is the broker's answer to a rotation. rotated_at stays the
// broker's text: the action only shows it, and a time it cannot parse
// must not make a rotation that happened look failed.
type rotated struct {
	brokerapi.RotateResponse
	RotatedAt string `json:"rotated_at"` // shadows the embedded time
}

// SinkResult is what one sink (a Vault path, a GitHub secret) did with a
// rotated value. Error is empty when the sink succeeded.
type SinkResult = brokerapi.SinkResult

// brokerClient speaks the broker's HTTP contract. Each attempt of each call
// carries a fresh OIDC token, because the broker accepts each jti once.
type brokerClient struct {
	base      *url.URL
	http      *http.Client
	ids       idTokens
	a         *githubactions.Action
	retry     retry.Policy
	userAgent string
	now       func() time.Time
	timeout   time.Duration // of each attempt

	// lastRequestID and lastClaims are the X-Request-Id and the OIDC
	// token's claims (never the token) of the last attempt, so that a
	// refusal can say which request and which identity it was about.
	lastRequestID string
	lastClaims    map[string]string
}

func newBrokerClient(a *githubactions.Action, in inputs, deps Deps) *brokerClient {
	// A copy of the caller's client that does not follow redirects: the
	// contract has none, and a redirect would carry the OIDC token and the
	// request elsewhere.
	hc := *deps.HTTPClient
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	// base, 2*base, 4*base ... capped at maxRetryDelay, or the server's
	// Retry-After when that is longer (capped at maxRetryAfter).
	limits := func(attempts int) retry.Policy {
		return retry.Policy{Attempts: attempts, Base: deps.RetryDelay, Max: maxRetryDelay, MaxRetryAfter: maxRetryAfter}
	}
	return &brokerClient{
		base:      in.brokerURL,
		http:      &hc,
		ids:       idTokens{a: a, audience: in.audience, retry: limits(idTokenAttempts), timeout: deps.CallTimeout},
		a:         a,
		retry:     limits(brokerAttempts),
		userAgent: deps.UserAgent,
		now:       deps.Now,
		timeout:   deps.CallTimeout,
	}
}

// exchangeReply is the wire form of [exchanged]; expires_at stays a string
// until the token has been masked, so that a malformed time cannot stop the
// decoding before the token is hidden.
type exchangeReply struct {
	brokerapi.ExchangeResponse
	ExpiresAt string `json:"expires_at"` // shadows the embedded time
}

// exchange trades the job's OIDC token for an Astro token. The token is
// masked as soon as it is decoded, before any check that could print.
// Transient failures (no answer, 5xx) are retried: a lost answer may leave a
// minted token behind, which the broker's reaper deletes when it expires.
func (c *brokerClient) exchange(ctx context.Context, req brokerapi.ExchangeRequest) (exchanged, error) {
	r, err := c.post(ctx, opExchange, "v1/exchange", req, retryTransient, http.StatusOK)
	if err != nil {
		return exchanged{}, err
	}
	var w exchangeReply
	if err := json.Unmarshal(r.body, &w); err != nil {
		return exchanged{}, &CallError{Op: opExchange, Attempts: r.attempts, Err: errors.New("the answer is not the exchange's JSON")}
	}
	if w.Token != "" {
		mask(c.a, w.Token)
	}
	x, err := validateExchange(w)
	if err != nil {
		return exchanged{}, &CallError{Op: opExchange, Attempts: r.attempts, Err: err}
	}
	return x, nil
}

// validateExchange checks that an exchange answer is complete and that no
// field holds a line break: every value goes into file commands and the
// summary, where a line break could forge another entry.
func validateExchange(w exchangeReply) (exchanged, error) {
	x := exchanged{
		Token: w.Token, TokenID: w.TokenID, OrganizationID: w.OrganizationID,
		WorkspaceID: w.WorkspaceID, DeploymentID: w.DeploymentID, Role: w.Role, Rule: w.Rule,
	}
	var problems []string
	if w.Token == "" {
		problems = append(problems, "no token")
	}
	if w.TokenID == "" {
		problems = append(problems, "no token_id")
	}
	var err error
	if x.ExpiresAt, err = time.Parse(time.RFC3339, w.ExpiresAt); err != nil {
		problems = append(problems, "expires_at is not RFC 3339")
	}
	for _, v := range []string{w.Token, w.TokenID, w.OrganizationID, w.WorkspaceID, w.DeploymentID, w.Role, w.Rule} {
		if strings.ContainsAny(v, "\r\n") {
			problems = append(problems, "a field holds a line break")
			break
		}
	}
	if len(problems) > 0 {
		return exchanged{}, fmt.Errorf("the broker's answer is unusable: %s", strings.Join(problems, ", "))
	}
	return x, nil
}

// dryRunReply is the broker's answer to an exchange's dry run.
type dryRunReply struct {
	brokerapi.DryRunResponse
	// RequestID is the answer's X-Request-Id (not in the body).
	RequestID string `json:"-"`
}

// dryRun asks the broker to decide the exchange without minting and
// without spending the OIDC token. A refusal is the exchange's.
func (c *brokerClient) dryRun(ctx context.Context, req brokerapi.ExchangeRequest) (dryRunReply, error) {
	r, err := c.post(ctx, opExchange, "v1/exchange?dry_run=true", req, retryTransient, http.StatusOK)
	if err != nil {
		return dryRunReply{}, err
	}
	var d dryRunReply
	if err := json.Unmarshal(r.body, &d); err != nil || !d.DryRun || d.Decision != "allow" {
		// An older broker that ignores dry_run would have minted a token:
		// say so rather than pretend it was a dry run.
		return dryRunReply{}, &CallError{Op: opExchange, Attempts: r.attempts, RequestID: c.lastRequestID,
			Err: errors.New("the answer is not a dry run's: the broker may not support dry_run (and may have minted a token, which its reaper deletes)")}
	}
	d.RequestID = cleanText(r.header.Get(brokerapi.RequestIDHeader), 64)
	if d.RequestID == "" {
		d.RequestID = c.lastRequestID
	}
	return d, nil
}

// post is [brokerClient.call] for an answer with one of the statuses
// want. Any other answer is returned with the broker's refusal, a
// [*BrokerError]; no answer at all, with a [CallError] that carries the
// last attempt's request id.
func (c *brokerClient) post(ctx context.Context, op, path string, body any, policy retryPolicy, want ...int) (*reply, error) {
	r, err := c.call(ctx, op, path, body, policy)
	if err != nil {
		var ce *CallError
		if errors.As(err, &ce) && ce.RequestID == "" {
			ce.RequestID = c.lastRequestID
		}
		return nil, err
	}
	if !slices.Contains(want, r.status) {
		return r, c.brokerError(op, r)
	}
	return r, nil
}

// revoke deletes the token tokenID; the broker answers 204 also when it is
// already gone, so retries are safe.
func (c *brokerClient) revoke(ctx context.Context, tokenID string) error {
	_, err := c.post(ctx, opRevoke, "v1/revoke", brokerapi.RevokeRequest{TokenID: tokenID}, retryTransient, http.StatusNoContent, http.StatusOK)
	return err
}

// rotate asks the broker to run the rotation name. A rotation is not
// idempotent (a second one invalidates the value the first just stored), so
// only failures where the broker surely did nothing are retried.
func (c *brokerClient) rotate(ctx context.Context, name string) (rotated, error) {
	r, err := c.post(ctx, opRotate, "v1/rotate", brokerapi.RotateRequest{Name: name}, retryUnprocessed, http.StatusOK)
	var be *BrokerError
	if errors.As(err, &be) {
		be.Rotation = name
		var partial brokerapi.RotateErrorBody
		if json.Unmarshal(r.body, &partial) == nil {
			be.Sinks = partial.Sinks
		}
	}
	if err != nil {
		return rotated{}, err
	}
	var out rotated
	if err := json.Unmarshal(r.body, &out); err != nil {
		return rotated{}, &CallError{Op: opRotate, Attempts: r.attempts, Err: errors.New("the answer is not the rotation's JSON")}
	}
	return out, nil
}

// reply is the last answer of a call.
type reply struct {
	status   int
	header   http.Header
	body     []byte
	attempts int
}

// retryPolicy says whether an attempt that ended with r or err may be
// repeated.
type retryPolicy func(r *reply, err error) bool

// errTooLarge is an answer over maxBody; asking again would not shrink it.
var errTooLarge = fmt.Errorf("the answer is larger than %d bytes", maxBody)

// retryTransient repeats calls that got no answer or a 5xx that may pass.
func retryTransient(r *reply, err error) bool {
	if err != nil {
		return !errors.Is(err, errTooLarge)
	}
	switch r.status {
	case http.StatusInternalServerError, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return true
	}
	return false
}

// retryUnprocessed repeats only what the broker cannot have acted on: a
// connection that was never made, and 503 (not ready).
func retryUnprocessed(r *reply, err error) bool {
	if err != nil {
		var op *net.OpError
		return errors.As(err, &op) && op.Op == "dial"
	}
	return r.status == http.StatusServiceUnavailable
}

// call POSTs body as JSON to path under the broker's base URL, retrying per
// policy with a fresh OIDC token each time. It returns the last answer
// whatever its status, or an error when there was none.
func (c *brokerClient) call(ctx context.Context, op, path string, body any, policy retryPolicy) (*reply, error) {
	payload, err := json.Marshal(body)
	if err != nil {
		return nil, err
	}
	path, query, _ := strings.Cut(path, "?")
	u := c.base.JoinPath(path)
	u.RawQuery = query
	endpoint := u.String()
	for attempt := 1; ; attempt++ {
		idt, err := c.ids.fetch(ctx)
		if err != nil {
			return nil, err
		}
		r, err := c.once(ctx, endpoint, idt, payload)
		if r != nil {
			r.attempts = attempt
		}
		if attempt >= c.retry.Attempts || !policy(r, err) || ctx.Err() != nil {
			if err != nil {
				return nil, &CallError{Op: op, Attempts: attempt, Err: err}
			}
			return r, nil
		}
		var retryAfter time.Duration
		what := "got no answer"
		if r != nil {
			retryAfter = retry.ParseAfter(r.header.Get("Retry-After"), c.now())
			what = fmt.Sprintf("answered %d", r.status)
		}
		wait, _ := c.retry.Delay(attempt, retryAfter)
		infof(c.a, "The broker %s to the %s; retrying in %s (attempt %d of %d).", what, op, wait.Round(time.Millisecond), attempt+1, c.retry.Attempts)
		if err := c.retry.Wait(ctx, wait); err != nil {
			return nil, &CallError{Op: op, Attempts: attempt, Err: err}
		}
	}
}

// once makes one attempt, bounded by the call timeout and maxBody.
func (c *brokerClient) once(step context.Context, endpoint, idToken string, payload []byte) (r *reply, err error) {
	defer func() { err = explainTimeout(step, err, "the broker", c.timeout) }()
	ctx, cancel := context.WithTimeout(step, c.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, bytes.NewReader(payload))
	if err != nil {
		return nil, err
	}
	// A fresh id per attempt, sent so that the broker's records carry it
	// even when the answer is lost; the answer's own id wins.
	c.lastRequestID = rand.Text()
	if claims, err := idtoken.UnverifiedClaims(idToken); err == nil {
		c.lastClaims = claims
	}
	req.Header.Set(brokerapi.RequestIDHeader, c.lastRequestID)
	req.Header.Set("Authorization", "Bearer "+idToken)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	if c.userAgent != "" {
		req.Header.Set("User-Agent", c.userAgent)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody+1))
	if err != nil {
		return nil, err
	}
	if len(body) > maxBody {
		return nil, errTooLarge
	}
	return &reply{status: resp.StatusCode, header: resp.Header, body: body}, nil
}

// brokerError builds the [BrokerError] for a non-success answer, keeping
// only the broker's code and a cleaned copy of its message.
func (c *brokerClient) brokerError(op string, r *reply) *BrokerError {
	var b brokerapi.ErrorBody
	_ = json.Unmarshal(r.body, &b) // a body that is not the contract's leaves them empty
	id := r.header.Get(brokerapi.RequestIDHeader)
	if id == "" {
		id = b.RequestID
	}
	if id == "" {
		id = c.lastRequestID
	}
	return &BrokerError{
		Op:         op,
		Status:     r.status,
		Code:       cleanText(b.Error, 64),
		Reason:     cleanText(b.Reason, 64),
		Message:    cleanText(b.Message, 300),
		RetryAfter: retry.ParseAfter(r.header.Get("Retry-After"), c.now()),
		Attempts:   r.attempts,
		RequestID:  cleanText(id, 64),
		Rule:       cleanText(b.Rule, 64),
		Field:      cleanText(b.Field, 64),
		Allowed:    cleanText(b.Allowed, 300),
	}
}

// timeoutError says what timed out, and after how long, instead of a bare
// "context deadline exceeded".
type timeoutError struct {
	msg string
	err error
}

func (e *timeoutError) Error() string { return e.msg }
func (e *timeoutError) Unwrap() error { return e.err }

// explainTimeout turns the timeout of one call into an error that says
// what did not answer within how long, or, when the step's own context
// ended, that the step ran out of time. Other errors pass unchanged.
func explainTimeout(step context.Context, err error, who string, limit time.Duration) error {
	if err == nil {
		return nil
	}
	var ne net.Error
	timedOut := errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
	switch {
	case !timedOut:
		return err
	case step.Err() != nil:
		return &timeoutError{msg: "the step ran out of time waiting for " + who, err: err}
	}
	return &timeoutError{msg: fmt.Sprintf("%s did not answer within %s", who, limit), err: err}
}
