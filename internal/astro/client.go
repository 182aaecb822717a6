package astro

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/astro-sts/astro-sts/internal/loopback"
	"github.com/astro-sts/astro-sts/internal/retry"
)

// Limits and defaults of [Client].
const (
	// MaxResponseBytes caps every response body the client reads. The
	// largest legitimate answer, a page of 1000 tokens, is well under 1 MiB.
	MaxResponseBytes = 8 << 20

	DefaultMaxAttempts   = 4
	DefaultBaseDelay     = 250 * time.Millisecond
	DefaultMaxDelay      = 5 * time.Second
	DefaultMaxRetryAfter = 30 * time.Second
	DefaultUserAgent     = "astro-sts/dev"
	DefaultPageSize      = 100
	MaxPageSize          = 1000
)

// Sentinel errors of the client. They never carry a token value.
var (
	// ErrInvalidConfig is returned by [New] for a config it refuses.
	ErrInvalidConfig = errors.New("astro: invalid client config")
	// ErrInvalidArgument is returned before any request is sent when an
	// argument (an empty id, a negative limit) cannot be right.
	ErrInvalidArgument = errors.New("astro: invalid argument")
	// ErrResponseTooLarge is returned when a body exceeds [MaxResponseBytes].
	ErrResponseTooLarge = errors.New("astro: response body too large")
	// ErrMalformedResponse is returned when a 2xx body is not the JSON shape
	// the API documents.
	ErrMalformedResponse = errors.New("astro: malformed response")
)

// Config configures a [Client]. Only BaseURL and Token matter for most
// callers; the rest have defaults chosen for a broker that must not hammer
// Astro when Astro is struggling.
type Config struct {
	// BaseURL is the API root including the version, e.g.
	// https://api.astronomer.io/v1. Plain http is accepted only for loopback
	// hosts (the emulator), because the bearer token travels in every request.
	BaseURL string
	// Token is the bearer token. It may be empty when every call goes
	// through [Client.WithToken].
	Token string
	// HTTPClient sends the requests. nil means a client with connect, TLS,
	// header and overall timeouts. Redirects are never followed, whichever
	// client is given: a redirect would carry the bearer token elsewhere, and
	// the Astro API does not redirect. A 3xx answer becomes an [*APIError].
	HTTPClient *http.Client
	// MaxAttempts bounds the attempts of a retryable call; 0 means
	// [DefaultMaxAttempts]. 1 disables retries.
	MaxAttempts int
	// BaseDelay and MaxDelay shape the capped exponential backoff with
	// jitter; 0 means [DefaultBaseDelay] and [DefaultMaxDelay].
	BaseDelay, MaxDelay time.Duration
	// MaxRetryAfter caps how long a Retry-After header can make the client
	// wait before the next attempt; 0 means [DefaultMaxRetryAfter].
	MaxRetryAfter time.Duration
	// UserAgent is sent with every request; "" means [DefaultUserAgent].
	UserAgent string
	// Observe, when set, is called after every attempt with the method, the
	// route template (low cardinality, e.g.
	// "/organizations/{organizationId}/tokens/{tokenId}"), the HTTP status
	// (0 on a transport error) and the attempt's duration. It is meant for
	// metrics and must be fast and safe for concurrent use.
	Observe func(method, route string, status int, d time.Duration)
	// Now is the clock used to read an HTTP-date Retry-After; nil means
	// time.Now.
	Now func() time.Time
}

// Client is a typed client for the token endpoints of the Astro API v1. It
// is safe for concurrent use; [Client.WithToken] derives a client that
// shares the configuration but sends another bearer token.
type Client struct {
	base      *url.URL
	token     string
	hc        *http.Client
	retry     retry.Policy
	userAgent string
	observe   func(method, route string, status int, d time.Duration)
	now       func() time.Time
}

// New checks cfg and returns a [Client]. It refuses a BaseURL that is not
// absolute https (or http on a loopback host), and negative limits.
func New(cfg Config) (*Client, error) {
	u, err := loopback.ParseURL(cfg.BaseURL)
	if err != nil {
		return nil, fmt.Errorf("%w: BaseURL: %w", ErrInvalidConfig, err)
	}
	u.Path = strings.TrimRight(u.Path, "/")
	u.RawPath = ""
	if cfg.MaxAttempts < 0 || cfg.BaseDelay < 0 || cfg.MaxDelay < 0 || cfg.MaxRetryAfter < 0 {
		return nil, fmt.Errorf("%w: attempts and delays must not be negative", ErrInvalidConfig)
	}
	if err := checkToken(cfg.Token); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	c := &Client{
		base:  u,
		token: cfg.Token,
		retry: retry.Policy{
			Attempts:      orDefault(cfg.MaxAttempts, DefaultMaxAttempts),
			Base:          orDefault(cfg.BaseDelay, DefaultBaseDelay),
			Max:           orDefault(cfg.MaxDelay, DefaultMaxDelay),
			Jitter:        true,
			MaxRetryAfter: orDefault(cfg.MaxRetryAfter, DefaultMaxRetryAfter),
		},
		userAgent: cfg.UserAgent,
		observe:   cfg.Observe,
		now:       cfg.Now,
	}
	if c.userAgent == "" {
		c.userAgent = DefaultUserAgent
	}
	if c.now == nil {
		c.now = time.Now
	}
	c.retry.Max = max(c.retry.Max, c.retry.Base)
	c.hc = noRedirects(cfg.HTTPClient)
	return c, nil
}

// WithToken returns a client with the same configuration that sends token
// instead. A token that cannot be sent in a header (control characters)
// makes every call of the returned client fail with [ErrInvalidArgument].
func (c *Client) WithToken(token string) *Client {
	cp := *c
	cp.token = token
	return &cp
}

func orDefault[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// checkToken refuses values that net/http would refuse in a header; the
// error deliberately does not repeat the value.
func checkToken(tok string) error {
	for i := 0; i < len(tok); i++ {
		if b := tok[i]; b < 0x21 || b > 0x7e {
			return fmt.Errorf("%w: token contains a byte that is not printable ASCII", ErrInvalidArgument)
		}
	}
	return nil
}

// noRedirects returns a copy of hc (or of a default client) that never
// follows redirects. The caller's client is not modified.
func noRedirects(hc *http.Client) *http.Client {
	var cp http.Client
	if hc != nil {
		cp = *hc
	} else {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSHandshakeTimeout = 10 * time.Second
		tr.ResponseHeaderTimeout = 30 * time.Second
		tr.MaxIdleConnsPerHost = 16
		tr.DialContext = (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext
		cp = http.Client{Transport: tr, Timeout: 60 * time.Second}
	}
	cp.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &cp
}

// retryClass says which failures a call may be repeated after.
type retryClass int

const (
	// idempotent calls (GET, DELETE, update, set roles) can be repeated
	// whatever happened to the previous attempt.
	idempotent retryClass = iota
	// unsafe calls (create, rotate) are repeated only when the previous
	// attempt was provably not processed: a 429, or a connection that was
	// never established.
	unsafe
)

// call describes one API operation.
type call struct {
	method string
	route  string // template, for Observe and error messages
	path   string // escaped path below the base URL
	query  url.Values
	body   any // marshalled to JSON when non-nil
	class  retryClass
	out    any // decoded from a 2xx body when non-nil
}

// fetch makes cl, unless building its path failed with pathErr, and
// returns its answer decoded into a new T.
func fetch[T any](ctx context.Context, c *Client, pathErr error, cl call) (*T, error) {
	if pathErr != nil {
		return nil, pathErr
	}
	var out T
	cl.out = &out
	if err := c.do(ctx, cl); err != nil {
		return nil, err
	}
	return &out, nil
}

// do runs c with retries according to its class ([shouldRetry]) and the
// client's [retry.Policy], and returns the last error. Waits between
// attempts honour ctx.
func (c *Client) do(ctx context.Context, cl call) error {
	if err := checkToken(c.token); err != nil {
		return err
	}
	var body []byte
	if cl.body != nil {
		var err error
		if body, err = json.Marshal(cl.body); err != nil {
			return fmt.Errorf("astro: encode %s %s: %w", cl.method, cl.route, err)
		}
	}
	// cl.path holds literal words and url.PathEscape'd ids only.
	target := c.base.String() + cl.path
	if len(cl.query) > 0 {
		target += "?" + cl.query.Encode()
	}

	return c.retry.Do(ctx, func(int) error {
		err := c.once(ctx, cl, target, body)
		if err != nil && shouldRetry(cl.class, err) {
			return retry.Again(err, retryAfter(err))
		}
		return err
	})
}

// once sends one attempt and decodes its answer.
func (c *Client) once(ctx context.Context, cl call, target string, body []byte) error {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, cl.method, target, rd)
	if err != nil {
		return fmt.Errorf("astro: build %s %s: %w", cl.method, cl.route, err)
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", c.userAgent)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	start := time.Now()
	resp, err := c.hc.Do(req)
	if err != nil {
		c.record(cl, 0, start)
		return &transportError{method: cl.method, route: cl.route, err: err}
	}
	defer resp.Body.Close()
	data, rerr := io.ReadAll(io.LimitReader(resp.Body, MaxResponseBytes+1))
	c.record(cl, resp.StatusCode, start)
	if rerr != nil {
		// The status line arrived, so the request was sent: for the retry
		// policy this is a transport error after sending.
		return &transportError{method: cl.method, route: cl.route, err: rerr, sent: true}
	}
	if len(data) > MaxResponseBytes {
		return fmt.Errorf("%w: %s %s answered more than %d bytes", ErrResponseTooLarge, cl.method, cl.route, MaxResponseBytes)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return c.apiError(resp, data)
	}
	if cl.out == nil {
		return nil
	}
	// Success bodies are decoded leniently: Astro adds fields over time and
	// a new field must not break a running broker.
	if err := json.Unmarshal(data, cl.out); err != nil {
		return fmt.Errorf("%w: %s %s: %v", ErrMalformedResponse, cl.method, cl.route, err)
	}
	return nil
}

func (c *Client) record(cl call, status int, start time.Time) {
	if c.observe != nil {
		c.observe(cl.method, cl.route, status, time.Since(start))
	}
}

// apiError builds the [*APIError] of a non-2xx answer. A body that is not
// Astro's JSON error body (a proxy's HTML page, an empty 502) still yields
// an error with the status text (or "HTTP nnn") as message.
func (c *Client) apiError(resp *http.Response, data []byte) *APIError {
	e := &APIError{StatusCode: resp.StatusCode}
	var eb ErrorBody
	if json.Unmarshal(data, &eb) == nil {
		e.Message, e.RequestID, e.FieldErrors = eb.Message, eb.RequestID, eb.FieldErrors
	}
	if e.Message == "" {
		e.Message = http.StatusText(resp.StatusCode)
	}
	if e.Message == "" {
		e.Message = fmt.Sprintf("HTTP %d", resp.StatusCode)
	}
	if e.RequestID == "" {
		e.RequestID = resp.Header.Get("X-Request-Id")
	}
	e.RetryAfter = retry.ParseAfter(resp.Header.Get("Retry-After"), c.now())
	return e
}

// transportError is a failure below HTTP: no status was received, or the
// body could not be read.
type transportError struct {
	method, route string
	err           error
	sent          bool // true when a status line was received
}

func (e *transportError) Error() string {
	return fmt.Sprintf("astro api: %s %s: %v", e.method, e.route, e.err)
}

func (e *transportError) Unwrap() error { return e.err }

// neverSent reports whether the request provably never reached the server:
// the connection could not be established (refused, unreachable, DNS).
// Anything later (a reset, a timeout waiting for the answer) may have
// reached Astro and been processed.
func (e *transportError) neverSent() bool {
	if e.sent {
		return false
	}
	var op *net.OpError
	return errors.As(e.err, &op) && op.Op == "dial"
}

// shouldRetry is the retry policy. Idempotent calls are repeated after a
// 429, 502, 503, 504 or a transport error. Create and rotate are repeated
// only after a 429 (Astro refused to process the request) or a connection
// that was never established: repeating them after a 5xx or a timeout
// could mint a second token, or lose the only copy of a rotated value.
// The caller's ctx being done stops retries regardless (see [Client.do]).
func shouldRetry(class retryClass, err error) bool {
	var ae *APIError
	if errors.As(err, &ae) {
		switch ae.StatusCode {
		case http.StatusTooManyRequests:
			return true
		case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
			return class == idempotent
		}
		return false
	}
	var te *transportError
	if errors.As(err, &te) {
		return class == idempotent || te.neverSent()
	}
	return false
}

// delay is the wait before attempt+1: capped exponential backoff with
// equal jitter (half fixed, half random), so that many brokers retrying at
// once spread out but none retries immediately, or the server's
// Retry-After when that is longer (capped at MaxRetryAfter).
func (c *Client) delay(attempt int, err error) time.Duration {
	d, _ := c.retry.Delay(attempt, retryAfter(err))
	return d
}

// retryAfter is the Retry-After of the answer behind err, 0 when none.
func retryAfter(err error) time.Duration {
	var ae *APIError
	if errors.As(err, &ae) {
		return ae.RetryAfter
	}
	return 0
}

// String hides the bearer token, so a Config can be printed or logged.
func (c Config) String() string {
	return fmt.Sprintf("astro.Config{BaseURL: %q, Token: %s, UserAgent: %q}", c.BaseURL, redact(c.Token), c.UserAgent)
}

// GoString is [Config.String], for %#v.
func (c Config) GoString() string { return c.String() }

// LogValue keeps the token out of structured logs.
func (c Config) LogValue() slog.Value {
	return slog.GroupValue(slog.String("base_url", c.BaseURL), slog.String("token", redact(c.Token)))
}

func redact(secret string) string {
	if secret == "" {
		return `""`
	}
	return "[redacted]"
}
