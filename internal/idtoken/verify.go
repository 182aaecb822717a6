// Package idtoken verifies GitHub Actions OIDC ID tokens: the proof of
// identity a workflow job presents to the broker.
//
// A [Verifier] trusts a fixed list of issuers (github.com's by default; GHES
// and enterprise issuers are more entries). For each token it checks, in
// this order and before any network call it can avoid: the size, the JOSE
// header (compact JWS, alg RS256 or ES256, a kid), that the payload is a
// JSON object whose unverified iss is one of the trusted issuers; then, with
// the issuer's keys from its discovery document's jwks_uri (found with
// go-oidc), the signature (crypto/rsa, crypto/ecdsa), and finally the
// claims: iss, aud, exp/nbf/iat with a bounded leeway, jti and a maximum
// lifetime.
//
// Each token is split, base64-decoded and JSON-decoded once: the signature
// is checked over the parts as they arrived, and the claims are read from
// the decoded payload those parts carry. (Verifying with go-oidc decoded
// the same token five times over; see docs/benchmarks.md.)
//
// Replay protection is separate (the broker's store) because only the caller
// knows when a token is spent: the broker consumes a jti when it exchanges
// the token, not when it merely verifies it.
//
// Errors are sentinels ([ErrMalformed], [ErrUntrustedIssuer],
// [ErrInvalidToken], [ErrIssuerUnavailable], ...) wrapped with detail meant
// for logs. No error ever contains the raw token.
package idtoken

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	josejson "github.com/go-jose/go-jose/v4/json"

	"github.com/astro-sts/astro-sts/internal/loopback"
	"github.com/astro-sts/astro-sts/internal/skew"
)

// GitHubIssuer is the issuer of GitHub.com's Actions ID tokens, trusted when
// [Config.Issuers] is empty.
const GitHubIssuer = "https://token.actions.githubusercontent.com"

const (
	// MaxLeeway is the most clock skew [Config.Leeway] may allow, and the
	// default.
	MaxLeeway = skew.Max
	// FutureLeeway is the most an iat or nbf may be ahead of the
	// verifier's clock, whatever [Config.Leeway] says; the replay store
	// dates tokens by it too ([skew.Future] says why it is short).
	FutureLeeway = skew.Future
	// DefaultMaxTokenSize is the default of [Config.MaxTokenSize]. GitHub's
	// tokens are about 1.5 KiB; repo_property_* claims add some.
	DefaultMaxTokenSize = 16 << 10
	// MaxTokenLifetime is the longest exp-iat accepted. GitHub's tokens
	// live about five minutes: a token that lives for hours is not one of
	// theirs, or is one we should not honour.
	MaxTokenLifetime = time.Hour
)

// Sentinel errors. Match them with errors.Is; the wrapped text is detail
// for logs, not for the unauthenticated caller.
var (
	// ErrMalformed: not a compact JWS with a JSON header and payload, or
	// too big. The broker answers 401.
	ErrMalformed = errors.New("idtoken: malformed token")
	// ErrUntrustedIssuer: iss is not one of the configured issuers. 401.
	ErrUntrustedIssuer = errors.New("idtoken: untrusted issuer")
	// ErrInvalidToken: well formed but refused (algorithm, signature,
	// unknown kid, audience, time, missing claims). 401. Each such error is
	// also one of the reasons below ([ErrBadSignature], [ErrExpired], ...).
	ErrInvalidToken = errors.New("idtoken: invalid token")
	// ErrIssuerUnavailable: the issuer's discovery document or JWKS could
	// not be fetched, so the token could not be judged. 503, not 401.
	ErrIssuerUnavailable = errors.New("idtoken: issuer unavailable")
)

// Why a well-formed token of a trusted issuer was refused: each of these is
// also an [ErrInvalidToken] (errors.Is), so code that only asks "invalid?"
// need not know them. The broker turns them into the sub-reason of its
// token_invalid answer, which tells the job what to fix (its audience
// input, its clock, a retry with a fresh token) and nothing about the
// broker's configuration.
var (
	// ErrBadSignature: the signature does not verify with the issuer's
	// published keys, or the header rules out verifying it (an algorithm
	// other than RS256/ES256, no kid, a kid the issuer does not publish).
	ErrBadSignature error = &invalidError{"signature not verified"}
	// ErrWrongAudience: aud is not exactly the broker's audience.
	ErrWrongAudience error = &invalidError{"wrong audience"}
	// ErrExpired: exp has passed, beyond the leeway.
	ErrExpired error = &invalidError{"token expired"}
	// ErrNotYetValid: nbf or iat is in the future, beyond the leeway.
	ErrNotYetValid error = &invalidError{"token not yet valid"}
	// ErrBadClaims: a required claim (sub, jti, exp, iat) is missing, a
	// claim has the wrong type, or exp-iat is longer than
	// [MaxTokenLifetime].
	ErrBadClaims error = &invalidError{"claims missing or malformed"}
	// ErrMissingRunClaims: the token has no repository_id or run_id, which
	// the broker needs to tie a minted token to its run. Verify does not
	// require them; [Claims.RequireRun] does.
	ErrMissingRunClaims error = &invalidError{"no repository_id or run_id"}
)

// invalidError is one reason a token is invalid.
type invalidError struct{ reason string }

func (e *invalidError) Error() string { return "idtoken: " + e.reason }

// Is makes every reason an [ErrInvalidToken].
func (e *invalidError) Is(target error) bool { return target == ErrInvalidToken }

// RequireRun returns an [ErrMissingRunClaims] error unless the token names
// its repository_id and run_id.
//
// A check_run_id, when the token has one, must be a decimal number of at
// most [maxCheckRunID] digits (GitHub's ids are int64): the broker writes
// it into the minted token's name and marker, where an unbounded value
// would push out what revoking and reaping need, and a control character
// would reach a human's screen. Otherwise the error is an [ErrBadClaims].
func (c *Claims) RequireRun() error {
	if c.RepositoryID == "" || c.RunID == "" {
		return fmt.Errorf("%w claim, so a token minted for it could be neither revoked nor reaped", ErrMissingRunClaims)
	}
	if id, ok := c.Strings["check_run_id"]; ok && !decimalID(id) {
		return fmt.Errorf("%w: check_run_id is not a decimal number of 1 to %d digits", ErrBadClaims, maxCheckRunID)
	}
	return nil
}

// maxCheckRunID is the most digits of a check_run_id: an int64 has 19.
const maxCheckRunID = 20

// decimalID reports whether s is 1 to [maxCheckRunID] ASCII digits.
func decimalID(s string) bool {
	if len(s) == 0 || len(s) > maxCheckRunID {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// Config configures [New].
type Config struct {
	// Issuers are the exact issuer URLs trusted (iss must equal one of
	// them): https, or plain http only for loopback hosts. Empty means
	// [GitHubIssuer].
	Issuers []string
	// Audience is the broker's own audience; aud must be exactly this one
	// value. Required.
	Audience string
	// HTTPClient fetches discovery documents and JWKS. nil means a client
	// with a 10 s timeout. Either way the verifier uses a copy whose
	// responses are capped at 1 MiB and whose redirects must stay on https
	// (or loopback http).
	HTTPClient *http.Client
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Leeway is the clock skew allowed on exp, nbf and iat: 0 means
	// [MaxLeeway]; more than MaxLeeway is refused. An nbf or iat ahead of
	// the clock is allowed at most [FutureLeeway] whatever it says.
	Leeway time.Duration
	// MaxTokenSize is the largest raw token looked at: 0 means
	// [DefaultMaxTokenSize]. Bigger tokens are refused before any parsing.
	MaxTokenSize int
}

// Verifier verifies ID tokens. Build it once with [New] and share it: it
// keeps one discovery result and key cache per issuer. It is safe for
// concurrent use.
type Verifier struct {
	audience string
	leeway   time.Duration
	maxSize  int
	now      func() time.Time
	client   *http.Client
	issuers  map[string]*issuerState // fixed at New; the states fill lazily
}

// issuerState is what the verifier knows about one trusted issuer. Its key
// set is built on first use, from discovery. A failed discovery is
// remembered for keyRefreshInterval, as a failed JWKS fetch is: until then
// every token of the issuer gets the same failure without another fetch,
// so that anonymous tokens naming an issuer having a bad minute cannot
// make the broker fetch its discovery document once per request.
type issuerState struct {
	url      string
	fl       flight
	mu       sync.RWMutex
	ks       *keySet
	failedAt time.Time // last failed discovery
	lastErr  error     // its error
}

func (s *issuerState) keySet() *keySet {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.ks
}

// backOff returns the error of a discovery that failed less than
// keyRefreshInterval before now, with the time left before the next
// attempt, or nil if discovery may be tried.
func (s *issuerState) backOff(now time.Time) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.lastErr == nil {
		return nil
	}
	left := keyRefreshInterval - now.Sub(s.failedAt)
	if left <= 0 {
		return nil
	}
	return fmt.Errorf("%v (failed %s ago; the next attempt in %s)", s.lastErr, now.Sub(s.failedAt).Round(time.Millisecond), left.Round(time.Millisecond))
}

// New validates cfg and returns a Verifier. It makes no network call:
// discovery happens on the first token of each issuer, so the broker can
// start while GitHub is unreachable.
func New(cfg Config) (*Verifier, error) {
	var errs []error
	issuers := cfg.Issuers
	if len(issuers) == 0 {
		issuers = []string{GitHubIssuer}
	}
	v := &Verifier{
		audience: cfg.Audience,
		leeway:   cfg.Leeway,
		maxSize:  cfg.MaxTokenSize,
		now:      cfg.Now,
		client:   boundedClient(cfg.HTTPClient),
		issuers:  make(map[string]*issuerState, len(issuers)),
	}
	for i, iss := range issuers {
		if _, err := loopback.ParseURL(iss); err != nil {
			errs = append(errs, fmt.Errorf("issuer %d: %w (%s)", i+1, err, urlRule))
			continue
		}
		v.issuers[iss] = &issuerState{url: iss}
	}
	if cfg.Audience == "" {
		errs = append(errs, errors.New("audience is required"))
	}
	switch {
	case cfg.Leeway < 0:
		errs = append(errs, fmt.Errorf("leeway %v is negative", cfg.Leeway))
	case cfg.Leeway > MaxLeeway:
		errs = append(errs, fmt.Errorf("leeway %v is more than %v", cfg.Leeway, MaxLeeway))
	case cfg.Leeway == 0:
		v.leeway = MaxLeeway
	}
	switch {
	case cfg.MaxTokenSize < 0:
		errs = append(errs, fmt.Errorf("max token size %d is negative", cfg.MaxTokenSize))
	case cfg.MaxTokenSize == 0:
		v.maxSize = DefaultMaxTokenSize
	}
	if v.now == nil {
		v.now = time.Now
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("idtoken: invalid config: %w", err)
	}
	return v, nil
}

// Claims are the verified claims of a token. The named fields are GitHub's
// claims; Strings holds every string-valued claim by its JSON name
// (repo_property_* and claims GitHub may add later included) for the policy
// matcher. A claim absent from the token is absent from Strings, which is
// how a policy tells "missing" from "empty".
type Claims struct {
	Issuer    string
	Subject   string
	Audience  []string
	Expiry    time.Time
	IssuedAt  time.Time
	NotBefore time.Time // zero when the token has no nbf
	JTI       string

	Repository           string
	RepositoryID         string
	RepositoryOwner      string
	RepositoryOwnerID    string
	RepositoryVisibility string
	Ref                  string
	RefType              string
	RefProtected         string
	SHA                  string
	EventName            string
	Environment          string
	JobWorkflowRef       string
	JobWorkflowSHA       string
	Workflow             string
	WorkflowRef          string
	WorkflowSHA          string
	Actor                string
	ActorID              string
	RunID                string
	RunNumber            string
	RunAttempt           string
	RunnerEnvironment    string
	HeadRef              string
	BaseRef              string

	Strings map[string]string
}

// Verify checks raw and returns its claims. It does not consume the jti:
// the caller spends it (the broker's store) when the token is actually exchanged.
//
// Errors wrap one of [ErrMalformed], [ErrUntrustedIssuer], [ErrIssuerUnavailable]
// or a reason that is an [ErrInvalidToken]: [ErrBadSignature],
// [ErrWrongAudience], [ErrExpired], [ErrNotYetValid], [ErrBadClaims]; or,
// if ctx ends while the token waits for the issuer's discovery or keys,
// ctx's own error (the fetch goes on for the others).
func (v *Verifier) Verify(ctx context.Context, raw string) (*Claims, error) {
	if len(raw) > v.maxSize {
		return nil, fmt.Errorf("%w: token is %d bytes, more than %d", ErrMalformed, len(raw), v.maxSize)
	}
	t, err := parseJWS(raw)
	if err != nil {
		return nil, err
	}
	// GitHub's tokens carry about 35 claims.
	fields, err := decodeObject(t.payload, claimNames, 40)
	if err != nil {
		return nil, fmt.Errorf("%w: payload: %v", ErrMalformed, err)
	}
	iss, err := issuerOf(fields)
	if err != nil {
		return nil, err
	}
	st, ok := v.issuers[iss]
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrUntrustedIssuer, safeLong(iss))
	}
	ks, err := v.keySetFor(ctx, st)
	if err != nil {
		return nil, err
	}
	pub, err := ks.key(ctx, t.header.Kid, t.header.Alg)
	if err != nil {
		return nil, err
	}
	// The signature is checked with exactly the key chosen above, and the
	// claims are read from the bytes it covers; nothing about them counts
	// before it holds.
	if err := verifySignature(t, pub); err != nil {
		return nil, fmt.Errorf("%w: failed to verify signature: %v", ErrBadSignature, err)
	}
	c, err := newClaims(fields)
	if err != nil {
		return nil, err
	}
	if err := v.check(c, st.url); err != nil {
		return nil, err
	}
	return c, nil
}

// check applies the claim rules once the signature holds, on the claims as
// this package decoded them (so that what is checked is what the caller
// reads): iss, aud (the messages are go-oidc's, which used to check these
// two), sub, jti, and the times.
func (v *Verifier) check(c *Claims, issuer string) error {
	if c.Issuer != issuer {
		return fmt.Errorf("%w: iss %q, want %q", ErrUntrustedIssuer, safeLong(c.Issuer), issuer)
	}
	if len(c.Audience) != 1 || c.Audience[0] != v.audience {
		return fmt.Errorf("%w: aud %q, want exactly %q", ErrWrongAudience, c.Audience, v.audience)
	}
	if c.Subject == "" {
		return fmt.Errorf("%w: no sub", ErrBadClaims)
	}
	if c.JTI == "" {
		return fmt.Errorf("%w: no jti", ErrBadClaims)
	}
	if c.Expiry.IsZero() {
		return fmt.Errorf("%w: no exp", ErrBadClaims)
	}
	if c.IssuedAt.IsZero() {
		return fmt.Errorf("%w: no iat", ErrBadClaims)
	}
	now := v.now()
	future := min(v.leeway, FutureLeeway)
	if !now.Before(c.Expiry.Add(v.leeway)) {
		return fmt.Errorf("%w: expired at %s (now %s, leeway %v)", ErrExpired, c.Expiry.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339), v.leeway)
	}
	if !c.NotBefore.IsZero() && c.NotBefore.Add(-future).After(now) {
		return fmt.Errorf("%w: not valid before %s (now %s)", ErrNotYetValid, c.NotBefore.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	if c.IssuedAt.Add(-future).After(now) {
		return fmt.Errorf("%w: issued in the future at %s (now %s)", ErrNotYetValid, c.IssuedAt.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	if life := c.Expiry.Sub(c.IssuedAt); life <= 0 || life > MaxTokenLifetime {
		return fmt.Errorf("%w: lifetime exp-iat %v is not within (0, %v]", ErrBadClaims, life, MaxTokenLifetime)
	}
	return nil
}

// keySetFor returns the issuer's key set, running discovery the first
// time, and again after a failure only once keyRefreshInterval has passed
// (see [issuerState]). Discovery, like a JWKS fetch, is not the caller's (see [flight]):
// a caller whose ctx ends gets ctx's error, and discovery goes on.
func (v *Verifier) keySetFor(ctx context.Context, st *issuerState) (*keySet, error) {
	if ks := st.keySet(); ks != nil {
		return ks, nil
	}
	if err := st.backOff(v.now()); err != nil {
		return nil, fmt.Errorf("%w: discovery for %s: %v", ErrIssuerUnavailable, st.url, err)
	}
	err := st.fl.do(ctx, func(fctx context.Context) error {
		if st.keySet() != nil {
			return nil
		}
		now := v.now()
		if err := st.backOff(now); err != nil {
			return err
		}
		ks, err := v.discover(fctx, st.url)
		st.mu.Lock()
		defer st.mu.Unlock()
		if err != nil {
			st.failedAt, st.lastErr = now, err
			return err
		}
		st.ks, st.lastErr = ks, nil
		return nil
	})
	if ks := st.keySet(); ks != nil {
		return ks, nil
	}
	if cerr := ctx.Err(); cerr != nil {
		return nil, fmt.Errorf("idtoken: waiting for discovery of %s: %w", st.url, cerr)
	}
	return nil, fmt.Errorf("%w: discovery for %s: %v", ErrIssuerUnavailable, st.url, err)
}

// discover fetches the issuer's discovery document with go-oidc (which
// checks that it names the same issuer) and returns a key set for its
// jwks_uri. The jwks_uri is taken from discovery, never built from iss, and
// must pass the same https-or-loopback rule as issuers.
func (v *Verifier) discover(ctx context.Context, issuer string) (*keySet, error) {
	p, err := oidc.NewProvider(oidc.ClientContext(ctx, v.client), issuer)
	if err != nil {
		return nil, err
	}
	var meta struct {
		JWKSURI string `json:"jwks_uri"`
	}
	if err := p.Claims(&meta); err != nil {
		return nil, err
	}
	if meta.JWKSURI == "" {
		return nil, errors.New("discovery document has no jwks_uri")
	}
	if _, err := loopback.ParseURL(meta.JWKSURI); err != nil {
		return nil, fmt.Errorf("jwks_uri: %w (%s)", err, urlRule)
	}
	return newKeySet(meta.JWKSURI, v.client, v.now), nil
}

// stringClaims are the string claims [Claims] names, with their fields.
var stringClaims = []struct {
	name  string
	field func(*Claims) *string
}{
	{"iss", func(c *Claims) *string { return &c.Issuer }},
	{"sub", func(c *Claims) *string { return &c.Subject }},
	{"jti", func(c *Claims) *string { return &c.JTI }},
	{"repository", func(c *Claims) *string { return &c.Repository }},
	{"repository_id", func(c *Claims) *string { return &c.RepositoryID }},
	{"repository_owner", func(c *Claims) *string { return &c.RepositoryOwner }},
	{"repository_owner_id", func(c *Claims) *string { return &c.RepositoryOwnerID }},
	{"repository_visibility", func(c *Claims) *string { return &c.RepositoryVisibility }},
	{"ref", func(c *Claims) *string { return &c.Ref }},
	{"ref_type", func(c *Claims) *string { return &c.RefType }},
	{"ref_protected", func(c *Claims) *string { return &c.RefProtected }},
	{"sha", func(c *Claims) *string { return &c.SHA }},
	{"event_name", func(c *Claims) *string { return &c.EventName }},
	{"environment", func(c *Claims) *string { return &c.Environment }},
	{"job_workflow_ref", func(c *Claims) *string { return &c.JobWorkflowRef }},
	{"job_workflow_sha", func(c *Claims) *string { return &c.JobWorkflowSHA }},
	{"workflow", func(c *Claims) *string { return &c.Workflow }},
	{"workflow_ref", func(c *Claims) *string { return &c.WorkflowRef }},
	{"workflow_sha", func(c *Claims) *string { return &c.WorkflowSHA }},
	{"actor", func(c *Claims) *string { return &c.Actor }},
	{"actor_id", func(c *Claims) *string { return &c.ActorID }},
	{"run_id", func(c *Claims) *string { return &c.RunID }},
	{"run_number", func(c *Claims) *string { return &c.RunNumber }},
	{"run_attempt", func(c *Claims) *string { return &c.RunAttempt }},
	{"runner_environment", func(c *Claims) *string { return &c.RunnerEnvironment }},
	{"head_ref", func(c *Claims) *string { return &c.HeadRef }},
	{"base_ref", func(c *Claims) *string { return &c.BaseRef }},
}

// claimNames are the claims this package reads: a payload with a name
// that differs from one of them only by case is refused.
var claimNames = func() map[string]bool {
	s := nameSet("aud", "exp", "iat", "nbf")
	for _, c := range stringClaims {
		s[c.name] = true
	}
	return s
}()

// newClaims reads the claims from the verified payload's members: its
// strings become [Claims.Strings] as they are, without another copy.
// Numeric dates must be JSON numbers; aud a string or an array of strings;
// the other named claims, when present, strings.
func newClaims(p members) (*Claims, error) {
	c := &Claims{Strings: p.strings}
	for _, n := range stringClaims {
		s, isString, present := p.stringMember(n.name)
		if present && !isString {
			return nil, fmt.Errorf("%w: claim %q is not a string", ErrBadClaims, n.name)
		}
		*n.field(c) = s
	}
	switch aud := p.others["aud"].(type) {
	case nil:
		if one, ok := p.strings["aud"]; ok {
			c.Audience = []string{one}
		}
	case []any:
		c.Audience = make([]string, len(aud))
		for i, a := range aud {
			s, ok := a.(string)
			if !ok {
				return nil, fmt.Errorf("%w: aud is neither a string nor an array of strings", ErrBadClaims)
			}
			c.Audience[i] = s
		}
	default:
		return nil, fmt.Errorf("%w: aud is neither a string nor an array of strings", ErrBadClaims)
	}
	for _, d := range []struct {
		name string
		dst  *time.Time
	}{{"exp", &c.Expiry}, {"iat", &c.IssuedAt}, {"nbf", &c.NotBefore}} {
		if !p.has(d.name) {
			continue
		}
		n, _ := p.others[d.name].(josejson.Number) // a string, null... is not a NumericDate
		t, err := numericDate(string(n))
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %v", ErrBadClaims, d.name, err)
		}
		*d.dst = t
	}
	return c, nil
}

// maxNumericDate is year 5138: anything later is not a real timestamp and
// would overflow time arithmetic.
const maxNumericDate = 1 << 37

// numericDate decodes a JWT NumericDate: a JSON number of seconds since the
// epoch, possibly fractional.
func numericDate(raw string) (time.Time, error) {
	if len(raw) == 0 || !(raw[0] >= '0' && raw[0] <= '9') {
		return time.Time{}, errors.New("not a non-negative JSON number")
	}
	f, err := strconv.ParseFloat(raw, 64)
	if err != nil || math.IsNaN(f) || f <= 0 || f > maxNumericDate {
		return time.Time{}, errors.New("not a valid NumericDate")
	}
	sec, frac := math.Modf(f)
	return time.Unix(int64(sec), int64(frac*1e9)).UTC(), nil
}

// safeLong bounds an attacker-controlled URL-like value in an error.
func safeLong(s string) string {
	const max = 256
	if len(s) > max {
		return s[:max] + "..."
	}
	return s
}
