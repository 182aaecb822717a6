package idtoken_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/astro-sts/astro-sts/internal/clock"
	"github.com/astro-sts/astro-sts/internal/idtoken"
	"github.com/astro-sts/astro-sts/internal/issuer"
	"github.com/astro-sts/astro-sts/internal/store"
)

const audience = "https://sts.example"

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// countingTransport counts requests by URL path, so tests can prove that a
// token was refused without a network call, or that discovery ran once.
type countingTransport struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	c.mu.Lock()
	if c.n == nil {
		c.n = map[string]int{}
	}
	c.n[r.URL.Path]++
	c.mu.Unlock()
	return http.DefaultTransport.RoundTrip(r)
}

func (c *countingTransport) count(path string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[path]
}

func (c *countingTransport) total() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, v := range c.n {
		n += v
	}
	return n
}

func startIssuer(t *testing.T, now func() time.Time) *issuer.Issuer {
	t.Helper()
	iss, err := issuer.Start(issuer.Config{Now: now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = iss.Close() })
	return iss
}

func newVerifier(t *testing.T, now func() time.Time, tr http.RoundTripper, issuers ...string) *idtoken.Verifier {
	t.Helper()
	v, err := idtoken.New(idtoken.Config{
		Issuers:    issuers,
		Audience:   audience,
		HTTPClient: &http.Client{Transport: tr, Timeout: 5 * time.Second},
		Now:        now,
	})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func mint(t *testing.T, iss *issuer.Issuer, c issuer.Claims) string {
	t.Helper()
	if c.Audience == "" {
		c.Audience = audience
	}
	tok, err := iss.Mint(c)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func b64(v any) string {
	var b []byte
	switch v := v.(type) {
	case []byte:
		b = v
	case string:
		b = []byte(v)
	default:
		b, _ = json.Marshal(v)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// payloadOf returns the decoded payload of a token minted by the issuer.
func payloadOf(t *testing.T, tok string) map[string]any {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[1])
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// TestVerifyBadTokens is the bad-token table: each bad token is refused with
// an error the broker maps to 401, and no error carries the token.
func TestVerifyBadTokens(t *testing.T) {
	clk := clock.Stopped(t0)
	a := startIssuer(t, clk.Now)
	b := startIssuer(t, clk.Now)
	stranger := startIssuer(t, clk.Now)
	tr := &countingTransport{}
	v := newVerifier(t, clk.Now, tr, a.URL(), b.URL())

	good := mint(t, a, issuer.Claims{})
	parts := strings.Split(good, ".")
	goodPayload := payloadOf(t, good)
	hdr := map[string]any{"typ": "JWT", "alg": "RS256", "kid": a.KeyID()}

	signHS256 := func(key []byte) string {
		in := b64(map[string]any{"typ": "JWT", "alg": "HS256", "kid": a.KeyID()}) + "." + parts[1]
		m := hmac.New(sha256.New, key)
		m.Write([]byte(in))
		return in + "." + b64(m.Sum(nil))
	}
	withPayload := func(edit func(map[string]any)) string {
		p := map[string]any{}
		for k, v := range goodPayload {
			p[k] = v
		}
		edit(p)
		body, _ := json.Marshal(p)
		tok, err := a.SignRaw(hdr, body)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	badSig := func() string {
		sig, _ := base64.RawURLEncoding.DecodeString(parts[2])
		sig[10] ^= 0xff
		return parts[0] + "." + parts[1] + "." + b64(sig)
	}()
	signed := func(h map[string]any) string {
		tok, err := a.SignRaw(h, []byte(b64Decode(t, parts[1])))
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}

	tests := []struct {
		name string
		tok  string
		want error
		why  string // in the error text: the token failed for the reason the row is about
	}{
		{"alg none", b64(map[string]any{"alg": "none", "typ": "JWT"}) + "." + parts[1] + ".", idtoken.ErrBadSignature, "alg \"none\""},
		{"alg none with a signature", signed(map[string]any{"alg": "none", "kid": a.KeyID()}), idtoken.ErrBadSignature, "alg \"none\""},
		{"HS256 signed with the issuer's public key bytes", signHS256(a.PublicKeyPEM()), idtoken.ErrBadSignature, "alg \"HS256\""},
		{"RS384 is not on the allowlist", signed(map[string]any{"alg": "RS384", "kid": a.KeyID()}), idtoken.ErrBadSignature, "alg \"RS384\""},
		{"ES256 header on an RSA key", signed(map[string]any{"alg": "ES256", "kid": a.KeyID()}), idtoken.ErrBadSignature, "token says ES256"},
		{"wrong issuer: iss of a trusted issuer, key of another", mint(t, a, issuer.Claims{Issuer: b.URL()}), idtoken.ErrBadSignature, "unknown kid"},
		{"issuer not in the list", mint(t, stranger, issuer.Claims{}), idtoken.ErrUntrustedIssuer, "untrusted issuer"},
		{"issuer not in the list, https", mint(t, a, issuer.Claims{Issuer: "https://token.actions.githubusercontent.com"}), idtoken.ErrUntrustedIssuer, "githubusercontent"},
		{"no iss", withPayload(func(p map[string]any) { delete(p, "iss") }), idtoken.ErrMalformed, "no iss"},
		{"wrong audience", mint(t, a, issuer.Claims{Audience: "https://github.com/acme"}), idtoken.ErrWrongAudience, "want exactly"},
		{"two audiences", withPayload(func(p map[string]any) { p["aud"] = []string{audience, "https://other"} }), idtoken.ErrWrongAudience, "want exactly"},
		{"expired beyond the leeway", mint(t, a, issuer.Claims{IssuedAt: t0.Add(-6 * time.Minute), Expiry: t0.Add(-61 * time.Second)}), idtoken.ErrExpired, "expired at"},
		{"nbf in the future beyond the leeway", mint(t, a, issuer.Claims{NotBefore: t0.Add(idtoken.FutureLeeway + time.Second)}), idtoken.ErrNotYetValid, "not valid before"},
		{"iat in the future beyond the leeway", mint(t, a, issuer.Claims{IssuedAt: t0.Add(idtoken.FutureLeeway + time.Second)}), idtoken.ErrNotYetValid, "issued in the future"},
		{"lives longer than an hour", mint(t, a, issuer.Claims{Expiry: t0.Add(61 * time.Minute)}), idtoken.ErrBadClaims, "lifetime"},
		{"exp before iat", mint(t, a, issuer.Claims{Expiry: t0.Add(-time.Second), IssuedAt: t0.Add(3 * time.Second)}), idtoken.ErrBadClaims, "lifetime"},
		{"no exp", withPayload(func(p map[string]any) { delete(p, "exp") }), idtoken.ErrBadClaims, "no exp"},
		{"exp is a string", withPayload(func(p map[string]any) { p["exp"] = fmt.Sprint(t0.Unix() + 60) }), idtoken.ErrBadClaims, "exp: not a"},
		{"no iat", withPayload(func(p map[string]any) { delete(p, "iat") }), idtoken.ErrBadClaims, "no iat"},
		{"no jti", mint(t, a, issuer.Claims{Extra: map[string]any{"jti": nil}}), idtoken.ErrBadClaims, "no jti"},
		{"no sub", mint(t, a, issuer.Claims{Extra: map[string]any{"sub": nil}}), idtoken.ErrBadClaims, "no sub"},
		{"repository_id is a number", mint(t, a, issuer.Claims{Extra: map[string]any{"repository_id": 123456}}), idtoken.ErrBadClaims, "repository_id"},
		{"no kid", signed(map[string]any{"typ": "JWT", "alg": "RS256"}), idtoken.ErrBadSignature, "no kid"},
		{"typ is not JWT", signed(map[string]any{"typ": "at+jwt", "alg": "RS256", "kid": a.KeyID()}), idtoken.ErrBadSignature, "typ"},
		{"crit header", signed(map[string]any{"alg": "RS256", "kid": a.KeyID(), "crit": []string{"exp"}}), idtoken.ErrBadSignature, "crit"},
		{"bad signature", badSig, idtoken.ErrBadSignature, "verify signature"},
		{"signature of another token", parts[0] + "." + parts[1] + "." + strings.Split(mint(t, a, issuer.Claims{JTI: "x"}), ".")[2], idtoken.ErrBadSignature, "verify signature"},
		{"truncated", good[:len(good)/2], idtoken.ErrMalformed, "3 parts"},
		{"truncated signature", good[:len(good)-7], idtoken.ErrBadSignature, "verify signature"},
		{"not a JWT", "this is not a token", idtoken.ErrMalformed, "3 parts"},
		{"empty", "", idtoken.ErrMalformed, "3 parts"},
		{"payload is not JSON", mustSignRaw(t, a, hdr, []byte("not json")), idtoken.ErrMalformed, "payload"},
		{"payload is a JSON array", mustSignRaw(t, a, hdr, []byte(`["iss"]`)), idtoken.ErrMalformed, "payload"},
		{"header is not base64url", "%%%." + parts[1] + "." + parts[2], idtoken.ErrMalformed, "header"},
		{"1 MB of garbage", strings.Repeat("A", 1<<20), idtoken.ErrMalformed, "bytes, more than"},
		{"1 MB token that looks like a JWT", parts[0] + "." + strings.Repeat("A", 1<<20) + "." + parts[2], idtoken.ErrMalformed, "bytes, more than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := v.Verify(context.Background(), tt.tok)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Verify = %v, %v; want %v", c, err, tt.want)
			}
			if !strings.Contains(err.Error(), tt.why) {
				t.Errorf("Verify = %v; want it refused for %q", err, tt.why)
			}
			// Every reason is still an invalid token, so that code asking
			// only that keeps working; and it is exactly one reason.
			reasons := 0
			for _, r := range []error{idtoken.ErrBadSignature, idtoken.ErrWrongAudience, idtoken.ErrExpired, idtoken.ErrNotYetValid, idtoken.ErrBadClaims, idtoken.ErrMissingRunClaims} {
				if errors.Is(err, r) {
					reasons++
				}
			}
			if errors.Is(err, idtoken.ErrInvalidToken) != (reasons == 1) || reasons > 1 {
				t.Errorf("Verify = %v: ErrInvalidToken %v, but %d reasons", err, errors.Is(err, idtoken.ErrInvalidToken), reasons)
			}
			for _, e := range []error{idtoken.ErrIssuerUnavailable, store.ErrReplayCacheFull} {
				if errors.Is(err, e) {
					t.Fatalf("error %v is also %v (would be a 503, not a 401)", err, e)
				}
			}
			assertNoToken(t, err, tt.tok)
		})
	}

	// The untrusted issuers were refused without contacting them.
	if n := tr.total() - tr.count("/.well-known/openid-configuration") - tr.count("/.well-known/jwks"); n != 0 {
		t.Errorf("%d unexpected requests", n)
	}
	if n := tr.count("/.well-known/openid-configuration"); n != 2 {
		t.Errorf("discovery fetched %d times, want 2 (once per trusted issuer used)", n)
	}
}

func mustSignRaw(t *testing.T, iss *issuer.Issuer, h map[string]any, payload []byte) string {
	t.Helper()
	tok, err := iss.SignRaw(h, payload)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func b64Decode(t *testing.T, s string) string {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// assertNoToken fails if err's text contains the token or a part of it
// long enough to matter.
func assertNoToken(t *testing.T, err error, tok string) {
	t.Helper()
	if err == nil {
		return
	}
	msg := err.Error()
	if len(msg) > 2048 {
		t.Errorf("error message is %d bytes", len(msg))
	}
	if tok != "" && strings.Contains(msg, tok) {
		t.Errorf("error contains the raw token")
	}
	for _, p := range strings.Split(tok, ".") {
		if len(p) >= 16 && strings.Contains(msg, p) {
			t.Errorf("error contains a token part: %s", msg)
		}
	}
}

func TestVerifyAcceptsAndDecodes(t *testing.T) {
	clk := clock.Stopped(t0)
	a := startIssuer(t, clk.Now)
	v := newVerifier(t, clk.Now, http.DefaultTransport, a.URL())

	tests := []struct {
		name string
		in   issuer.Claims
		at   time.Duration // clock offset from t0 at verification
	}{
		{"fresh", issuer.Claims{}, 0},
		{"expired within the leeway", issuer.Claims{IssuedAt: t0.Add(-5 * time.Minute), Expiry: t0.Add(-59 * time.Second)}, 0},
		{"nbf within the leeway", issuer.Claims{NotBefore: t0.Add(idtoken.FutureLeeway)}, 0},
		{"iat within the leeway", issuer.Claims{IssuedAt: t0.Add(idtoken.FutureLeeway)}, 0},
		{"GitHub's shape: nbf 600 s before iat", issuer.Claims{NotBefore: t0.Add(-600 * time.Second)}, 4 * time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := tt.in
			in.JTI = "jti-" + tt.name
			in.Extra = map[string]any{"repo_property_tier": "gold", "check_run_id": json.Number("1")}
			tok := mint(t, a, in)
			check := func(c *idtoken.Claims, err error) {
				t.Helper()
				if err != nil {
					t.Fatal(err)
				}
				p := payloadOf(t, tok)
				want := &idtoken.Claims{
					Issuer:   a.URL(),
					Subject:  "repo:acme/dags:environment:production",
					Audience: []string{audience},
					Expiry:   time.Unix(int64(p["exp"].(float64)), 0).UTC(),
					IssuedAt: time.Unix(int64(p["iat"].(float64)), 0).UTC(), NotBefore: time.Unix(int64(p["nbf"].(float64)), 0).UTC(),
					JTI:        in.JTI,
					Repository: "acme/dags", RepositoryID: "123456", RepositoryOwner: "acme", RepositoryOwnerID: "65",
					RepositoryVisibility: "private", Ref: "refs/heads/main", RefType: "branch", RefProtected: "true",
					SHA: "5e4c7d1a9b2f3e8d6c0a1b2c3d4e5f60718293a4", EventName: "push", Environment: "production",
					JobWorkflowRef: "acme/dags/.github/workflows/deploy.yml@refs/heads/main",
					JobWorkflowSHA: "5e4c7d1a9b2f3e8d6c0a1b2c3d4e5f60718293a4", Workflow: "deploy",
					WorkflowRef: "acme/dags/.github/workflows/deploy.yml@refs/heads/main",
					WorkflowSHA: "5e4c7d1a9b2f3e8d6c0a1b2c3d4e5f60718293a4", Actor: "octocat", ActorID: "583231",
					RunID: "9876543210", RunNumber: "42", RunAttempt: "1", RunnerEnvironment: "github-hosted",
				}
				if diff := cmp.Diff(want, c, cmpopts.IgnoreFields(idtoken.Claims{}, "Strings")); diff != "" {
					t.Errorf("claims (-want +got):\n%s", diff)
				}
				// Strings holds every string claim and only those:
				// check_run_id is a number here, so it is absent, and
				// head_ref is present and "".
				for k, want := range map[string]string{"repo_property_tier": "gold", "iss": a.URL(), "head_ref": "", "aud": audience} {
					if got, ok := c.Strings[k]; !ok || got != want {
						t.Errorf("Strings[%q] = %q, %v; want %q", k, got, ok, want)
					}
				}
				for _, k := range []string{"check_run_id", "exp", "iat"} {
					if _, ok := c.Strings[k]; ok {
						t.Errorf("Strings has non-string claim %q", k)
					}
				}
			}
			clk.Advance(tt.at)
			defer clk.Advance(-tt.at)
			check(v.Verify(context.Background(), tok))
		})
	}
}

// flakyIssuer is an issuer front that can fail discovery or JWKS on
// demand, and forwards JWKS to a real issuer otherwise. Its tokens are
// minted by the real issuer with iss set to the front's URL.
type flakyIssuer struct {
	url          string
	failDisc     atomic.Int32 // fail this many discovery requests
	failJWKS     atomic.Bool
	jwksURI      string // overrides jwks_uri when set
	hugeJWKS     bool
	discoveryHit atomic.Int32
	jwksHit      atomic.Int32
}

func startFlaky(t *testing.T, real *issuer.Issuer, setup func(*flakyIssuer)) *flakyIssuer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &flakyIssuer{url: "http://" + ln.Addr().String()}
	if setup != nil {
		setup(f)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		f.discoveryHit.Add(1)
		if f.failDisc.Add(-1) >= 0 {
			http.Error(w, "unavailable", http.StatusServiceUnavailable)
			return
		}
		jwks := f.url + "/jwks"
		if f.jwksURI != "" {
			jwks = f.jwksURI
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"issuer": f.url, "jwks_uri": jwks})
	})
	mux.HandleFunc("GET /jwks", func(w http.ResponseWriter, r *http.Request) {
		f.jwksHit.Add(1)
		if f.failJWKS.Load() {
			http.Error(w, "boom", http.StatusInternalServerError)
			return
		}
		if f.hugeJWKS {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"keys":[],"pad":"` + strings.Repeat("x", 2<<20) + `"}`))
			return
		}
		resp, err := http.Get(real.URL() + "/.well-known/jwks")
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		w.Header().Set("Content-Type", "application/json")
		var buf json.RawMessage
		_ = json.NewDecoder(resp.Body).Decode(&buf)
		_, _ = w.Write(buf)
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return f
}

func TestIssuerUnavailable(t *testing.T) {
	tests := []struct {
		name  string
		setup func(*flakyIssuer)
	}{
		{"discovery fails", func(f *flakyIssuer) { f.failDisc.Store(1 << 20) }},
		{"JWKS fails", func(f *flakyIssuer) { f.failJWKS.Store(true) }},
		{"JWKS too large", func(f *flakyIssuer) { f.hugeJWKS = true }},
		{"jwks_uri is plain http to a remote host", func(f *flakyIssuer) { f.jwksURI = "http://keys.example.com/jwks" }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			real := startIssuer(t, func() time.Time { return t0 })
			f := startFlaky(t, real, tt.setup)
			v := newVerifier(t, func() time.Time { return t0 }, http.DefaultTransport, f.url)
			tok := mint(t, real, issuer.Claims{Issuer: f.url})
			_, err := v.Verify(context.Background(), tok)
			if !errors.Is(err, idtoken.ErrIssuerUnavailable) {
				t.Fatalf("Verify = %v, want ErrIssuerUnavailable", err)
			}
			assertNoToken(t, err, tok)
		})
	}

	t.Run("unreachable issuer", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		url := "http://" + ln.Addr().String()
		ln.Close()
		real := startIssuer(t, func() time.Time { return t0 })
		v := newVerifier(t, func() time.Time { return t0 }, http.DefaultTransport, url)
		_, err = v.Verify(context.Background(), mint(t, real, issuer.Claims{Issuer: url}))
		if !errors.Is(err, idtoken.ErrIssuerUnavailable) {
			t.Fatalf("Verify = %v, want ErrIssuerUnavailable", err)
		}
	})
}

// TestDiscoveryFailureBacksOff: a failed discovery is remembered for the
// refresh interval, as a failed JWKS fetch is, then tried again; a
// successful one is done once.
func TestDiscoveryFailureBacksOff(t *testing.T) {
	clk := clock.Stopped(t0)
	real := startIssuer(t, clk.Now)
	f := startFlaky(t, real, func(f *flakyIssuer) { f.failDisc.Store(1) })
	v := newVerifier(t, clk.Now, http.DefaultTransport, f.url)

	var got []string
	for i := range 4 {
		if i == 2 {
			clk.Advance(10 * time.Second)
		}
		_, err := v.Verify(context.Background(), mint(t, real, issuer.Claims{Issuer: f.url, IssuedAt: clk.Now()}))
		got = append(got, fmt.Sprint(errors.Is(err, idtoken.ErrIssuerUnavailable), err == nil))
	}
	want := []string{"true false", "true false", "false true", "false true"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("unavailable/ok per call (-want +got):\n%s", diff)
	}
	if n := f.discoveryHit.Load(); n != 2 {
		t.Errorf("discovery fetched %d times, want 2", n)
	}
}

// TestJWKSOutageRecovers: after a JWKS failure the verifier waits the
// refresh interval, then tries again.
func TestJWKSOutageRecovers(t *testing.T) {
	clk := clock.Stopped(t0)
	real := startIssuer(t, clk.Now)
	f := startFlaky(t, real, func(f *flakyIssuer) { f.failJWKS.Store(true) })
	v := newVerifier(t, clk.Now, http.DefaultTransport, f.url)
	tok := mint(t, real, issuer.Claims{Issuer: f.url})

	if _, err := v.Verify(context.Background(), tok); !errors.Is(err, idtoken.ErrIssuerUnavailable) {
		t.Fatalf("first Verify = %v, want ErrIssuerUnavailable", err)
	}
	f.failJWKS.Store(false)
	if _, err := v.Verify(context.Background(), tok); !errors.Is(err, idtoken.ErrIssuerUnavailable) {
		t.Fatalf("Verify within the refresh interval = %v, want the failure remembered", err)
	}
	clk.Advance(11 * time.Second)
	if _, err := v.Verify(context.Background(), tok); err != nil {
		t.Fatalf("Verify after the interval = %v", err)
	}
	if n := f.jwksHit.Load(); n != 2 {
		t.Errorf("JWKS fetched %d times, want 2", n)
	}
}

// TestKeyCache: discovery and JWKS are fetched once under concurrency; an
// unknown kid triggers at most one refetch per interval; keys are fetched
// again after an hour.
func TestKeyCache(t *testing.T) {
	clk := clock.Stopped(t0)
	a := startIssuer(t, clk.Now)
	tr := &countingTransport{}
	v := newVerifier(t, clk.Now, tr, a.URL())
	disc := func() int { return tr.count("/.well-known/openid-configuration") }
	jwks := func() int { return tr.count("/.well-known/jwks") }

	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := v.Verify(context.Background(), mint(t, a, issuer.Claims{JTI: fmt.Sprint(i)}))
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if disc() != 1 || jwks() != 1 {
		t.Fatalf("after 20 concurrent tokens: %d discovery, %d JWKS fetches; want 1, 1", disc(), jwks())
	}

	// Within the interval an unknown kid is not fetched for, and may be a
	// key rotated in since: "try again" (503), not "bad signature".
	unknown := mustSignRaw(t, a, map[string]any{"alg": "RS256", "kid": "rotated-in"}, []byte(b64Decode(t, strings.Split(mint(t, a, issuer.Claims{}), ".")[1])))
	for range 5 {
		if _, err := v.Verify(context.Background(), unknown); !errors.Is(err, idtoken.ErrIssuerUnavailable) || !strings.Contains(err.Error(), "next fetch is allowed in 10s") {
			t.Fatalf("unknown kid within the interval: %v, want ErrIssuerUnavailable", err)
		}
	}
	if jwks() != 1 {
		t.Errorf("unknown kids at once caused %d JWKS fetches, want none", jwks()-1)
	}
	// After it, the kid is fetched for, and a fresh JWKS without it is a
	// bad signature; the next one within the interval is held back again.
	clk.Advance(11 * time.Second)
	if _, err := v.Verify(context.Background(), unknown); !errors.Is(err, idtoken.ErrBadSignature) || !strings.Contains(err.Error(), "unknown kid") {
		t.Errorf("unknown kid after a fresh fetch: %v, want ErrBadSignature", err)
	}
	clk.Advance(4 * time.Second)
	if _, err := v.Verify(context.Background(), unknown); !errors.Is(err, idtoken.ErrIssuerUnavailable) || !strings.Contains(err.Error(), "next fetch is allowed in 6s") {
		t.Errorf("unknown kid 4s after a fetch: %v, want ErrIssuerUnavailable, 6s left", err)
	}
	if jwks() != 2 {
		t.Errorf("JWKS fetched %d times after the interval, want 2", jwks())
	}

	clk.Advance(time.Hour)
	if _, err := v.Verify(context.Background(), mint(t, a, issuer.Claims{IssuedAt: clk.Now()})); err != nil {
		t.Fatal(err)
	}
	if jwks() != 3 || disc() != 1 {
		t.Errorf("after an hour: %d discovery, %d JWKS fetches; want 1, 3", disc(), jwks())
	}
}

func TestNewValidatesConfig(t *testing.T) {
	tests := []struct {
		name string
		cfg  idtoken.Config
		want []string // substrings of the error; nil means valid
	}{
		{"default issuer", idtoken.Config{Audience: "a"}, nil},
		{"loopback http", idtoken.Config{Audience: "a", Issuers: []string{"http://127.0.0.1:8080", "http://localhost/x", "http://[::1]:1"}}, nil},
		{"GHES and enterprise", idtoken.Config{Audience: "a", Issuers: []string{"https://ghe.example.com/_services/token", "https://token.actions.githubusercontent.com/acme"}}, nil},
		{"plain http remote", idtoken.Config{Audience: "a", Issuers: []string{"http://token.example.com"}}, []string{"loopback"}},
		{"other scheme", idtoken.Config{Audience: "a", Issuers: []string{"ftp://x"}}, []string{"https"}},
		{"query", idtoken.Config{Audience: "a", Issuers: []string{"https://x/?a=b"}}, []string{"query"}},
		{"no host", idtoken.Config{Audience: "a", Issuers: []string{"https:///x"}}, []string{"query"}},
		{"everything wrong at once", idtoken.Config{Issuers: []string{"http://x.example"}, Leeway: 2 * time.Minute, MaxTokenSize: -1},
			[]string{"loopback", "audience is required", "leeway 2m0s", "max token size -1"}},
		{"negative leeway", idtoken.Config{Audience: "a", Leeway: -time.Second}, []string{"negative"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := idtoken.New(tt.cfg)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("New = %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("New accepted a bad config")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

func TestLeewayAndSizeConfig(t *testing.T) {
	clk := clock.Stopped(t0)
	a := startIssuer(t, clk.Now)
	v, err := idtoken.New(idtoken.Config{Issuers: []string{a.URL()}, Audience: audience, Now: clk.Now, Leeway: 5 * time.Second, MaxTokenSize: 4000})
	if err != nil {
		t.Fatal(err)
	}
	tok := mint(t, a, issuer.Claims{IssuedAt: t0.Add(-5 * time.Minute), Expiry: t0.Add(-10 * time.Second)})
	if _, err := v.Verify(context.Background(), tok); !errors.Is(err, idtoken.ErrInvalidToken) {
		t.Errorf("10 s past exp with 5 s leeway: %v", err)
	}
	big := mint(t, a, issuer.Claims{Extra: map[string]any{"repo_property_pad": strings.Repeat("x", 4000)}})
	if _, err := v.Verify(context.Background(), big); !errors.Is(err, idtoken.ErrMalformed) {
		t.Errorf("token over MaxTokenSize: %v", err)
	}
}

func TestRedirectToPlainHTTPIsRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{ReadHeaderTimeout: time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "http://keys.example.com/.well-known/openid-configuration", http.StatusFound)
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	url := "http://" + ln.Addr().String()

	real := startIssuer(t, func() time.Time { return t0 })
	tr := &countingTransport{}
	v := newVerifier(t, func() time.Time { return t0 }, tr, url)
	_, err = v.Verify(context.Background(), mint(t, real, issuer.Claims{Issuer: url}))
	if !errors.Is(err, idtoken.ErrIssuerUnavailable) || !strings.Contains(err.Error(), "redirect refused") {
		t.Fatalf("Verify = %v, want a refused redirect", err)
	}
	if tr.total() != 1 {
		t.Errorf("%d requests, want 1 (the redirect not followed)", tr.total())
	}
}

func TestRequireRun(t *testing.T) {
	for _, tc := range []struct {
		c    idtoken.Claims
		want error
	}{
		{idtoken.Claims{RepositoryID: "1", RunID: "2"}, nil},
		{idtoken.Claims{RepositoryID: "1"}, idtoken.ErrMissingRunClaims},
		{idtoken.Claims{RunID: "2"}, idtoken.ErrMissingRunClaims},
		{idtoken.Claims{RepositoryID: "1", RunID: "2", Strings: map[string]string{"check_run_id": "12345678901234567890"}}, nil},
		{idtoken.Claims{RepositoryID: "1", RunID: "2", Strings: map[string]string{"check_run_id": "123456789012345678901"}}, idtoken.ErrBadClaims},
		{idtoken.Claims{RepositoryID: "1", RunID: "2", Strings: map[string]string{"check_run_id": ""}}, idtoken.ErrBadClaims},
		{idtoken.Claims{RepositoryID: "1", RunID: "2", Strings: map[string]string{"check_run_id": "1\n2"}}, idtoken.ErrBadClaims},
		{idtoken.Claims{RepositoryID: "1", RunID: "2", Strings: map[string]string{"check_run_id": "-1"}}, idtoken.ErrBadClaims},
	} {
		err := tc.c.RequireRun()
		if !errors.Is(err, tc.want) || (tc.want != nil && !errors.Is(err, idtoken.ErrInvalidToken)) {
			t.Errorf("%+v: RequireRun = %v, want %v (an invalid token)", tc.c, err, tc.want)
		}
	}
}

func TestUnverifiedClaims(t *testing.T) {
	a, err := issuer.Start(issuer.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	tok := mint(t, a, issuer.Claims{Repository: "acme/dags", RepositoryID: "123456", Environment: "production"})
	got, err := idtoken.UnverifiedClaims(tok)
	if err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]string{"repository": "acme/dags", "repository_id": "123456", "environment": "production", "iss": a.URL()} {
		if got[k] != want {
			t.Errorf("%s = %q, want %q", k, got[k], want)
		}
	}
	if _, ok := got["exp"]; ok {
		t.Error("a number claim was kept")
	}
	for _, bad := range []string{"", "a.b", "a.%%%.c", "a." + base64.RawURLEncoding.EncodeToString([]byte(`["x"]`)) + ".c"} {
		if _, err := idtoken.UnverifiedClaims(bad); !errors.Is(err, idtoken.ErrMalformed) {
			t.Errorf("UnverifiedClaims(%q) = %v, want ErrMalformed", bad, err)
		}
	}
}
