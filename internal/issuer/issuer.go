// Package issuer is a local OpenID Connect issuer that stands in for GitHub
// Actions' token service (https://token.actions.githubusercontent.com) in
// tests and in the demo.
//
// It is real, not a mock: it listens on 127.0.0.1, serves the discovery
// document and the JWKS a relying party fetches, and signs RS256 tokens whose
// header and claims have GitHub's shape, so the verifier under test runs the
// same code path as in production. It also plays the runner's ID-token
// endpoint (ACTIONS_ID_TOKEN_REQUEST_URL / ACTIONS_ID_TOKEN_REQUEST_TOKEN),
// so the action can be exercised the way a runner runs it.
//
// An [Issuer] holds its signing key in memory only; it is not meant to be
// exposed beyond loopback.
package issuer

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1" //nolint:gosec // x5t is defined as a SHA-1 thumbprint (RFC 7515 4.1.7)
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// DefaultLifetime is the lifetime of a minted token when [Config.Lifetime]
// is zero: GitHub's tokens live about five minutes.
const DefaultLifetime = 5 * time.Minute

// Config configures [Start].
type Config struct {
	// Now is the clock used for iat/nbf/exp; nil means time.Now.
	Now func() time.Time
	// Lifetime is exp-iat of minted tokens; 0 means [DefaultLifetime].
	Lifetime time.Duration
	// Logger receives one line per request served; nil discards. Token
	// values are never logged.
	Logger *slog.Logger
}

// Issuer is a running local OIDC issuer. Start one with [Start] and stop it
// with [Issuer.Close]. Its methods are safe for concurrent use.
type Issuer struct {
	now      func() time.Time
	lifetime time.Duration
	logger   *slog.Logger

	key  *rsa.PrivateKey
	kid  string
	x5t  []byte // SHA-1 thumbprint of cert
	cert *x509.Certificate

	url string
	srv *http.Server
	ln  net.Listener

	mu   sync.Mutex
	jobs map[string]jobState // job id -> registered runner job
}

// jobState is one runner job registered with [Issuer.RequestURL].
type jobState struct {
	requestToken string
	claims       Claims
}

// Start generates a fresh RSA 2048 signing key, listens on 127.0.0.1 on a
// free port and serves discovery, JWKS and the runner ID-token endpoint.
// The issuer URL is "http://127.0.0.1:PORT" with no trailing slash.
func Start(cfg Config) (*Issuer, error) {
	if cfg.Lifetime < 0 {
		return nil, fmt.Errorf("issuer: negative lifetime %v", cfg.Lifetime)
	}
	i := &Issuer{
		now:      cfg.Now,
		lifetime: cfg.Lifetime,
		logger:   cfg.Logger,
		jobs:     make(map[string]jobState),
	}
	if i.now == nil {
		i.now = time.Now
	}
	if i.lifetime == 0 {
		i.lifetime = DefaultLifetime
	}
	if i.logger == nil {
		i.logger = slog.New(slog.DiscardHandler)
	}

	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, fmt.Errorf("issuer: generate key: %w", err)
	}
	i.key = key
	if err := i.initKeyIDs(); err != nil {
		return nil, err
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("issuer: listen: %w", err)
	}
	i.ln = ln
	i.url = "http://" + ln.Addr().String()

	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", i.serveDiscovery)
	mux.HandleFunc("GET /.well-known/jwks", i.serveJWKS)
	mux.HandleFunc("GET /jobs/{job}/idtoken", i.serveIDToken)
	i.srv = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		IdleTimeout:       30 * time.Second,
	}
	go func() {
		if err := i.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			i.logger.Error("local OIDC issuer stopped", "error", err)
		}
	}()
	return i, nil
}

// initKeyIDs derives the kid (RFC 7638 thumbprint) and a self-signed
// certificate for the key, whose SHA-1 thumbprint is the x5t GitHub also
// puts in its token headers and JWKS.
func (i *Issuer) initKeyIDs() error {
	jwk := jose.JSONWebKey{Key: &i.key.PublicKey}
	tp, err := jwk.Thumbprint(crypto.SHA256)
	if err != nil {
		return fmt.Errorf("issuer: key thumbprint: %w", err)
	}
	i.kid = base64.RawURLEncoding.EncodeToString(tp)

	now := i.now()
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 64))
	if err != nil {
		return fmt.Errorf("issuer: certificate serial: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "astro-sts local OIDC issuer"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &i.key.PublicKey, i.key)
	if err != nil {
		return fmt.Errorf("issuer: self-signed certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return fmt.Errorf("issuer: parse certificate: %w", err)
	}
	i.cert = cert
	sum := sha1.Sum(der) //nolint:gosec // see import
	i.x5t = sum[:]
	return nil
}

// URL is the issuer URL, the value of iss in minted tokens.
func (i *Issuer) URL() string { return i.url }

// KeyID is the kid of the signing key, as published in the JWKS.
func (i *Issuer) KeyID() string { return i.kid }

// Close stops serving. Tokens already minted stay valid for a verifier that
// has cached the keys.
func (i *Issuer) Close() error {
	return i.srv.Close()
}

// PublicKeyPEM is the signing key's public half in PEM (PKIX) form. It
// exists for the classic algorithm-confusion attack test: an HS256 token
// whose HMAC key is these bytes must be refused.
func (i *Issuer) PublicKeyPEM() []byte {
	der, err := x509.MarshalPKIXPublicKey(&i.key.PublicKey)
	if err != nil {
		// An *rsa.PublicKey always marshals; keep the signature simple.
		return nil
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

// Mint signs a GitHub-shaped ID token for c, after filling its zero fields
// from [DefaultClaims] and the clock (see [Claims]).
func (i *Issuer) Mint(c Claims) (string, error) {
	payload, err := json.Marshal(i.payload(c))
	if err != nil {
		return "", fmt.Errorf("issuer: encode claims: %w", err)
	}
	return i.SignRaw(i.header(), payload)
}

// header is the JOSE header GitHub puts on its tokens.
func (i *Issuer) header() map[string]any {
	return map[string]any{"typ": "JWT", "alg": "RS256", "kid": i.kid, "x5t": base64.RawURLEncoding.EncodeToString(i.x5t)}
}

// payload turns c into the JSON object of a token.
func (i *Issuer) payload(c Claims) map[string]any {
	c = c.withDefaults()
	if c.Issuer == "" {
		c.Issuer = i.url
	}
	if c.JTI == "" {
		c.JTI = newUUID()
	}
	now := i.now()
	if c.IssuedAt.IsZero() {
		c.IssuedAt = now
	}
	if c.NotBefore.IsZero() {
		c.NotBefore = c.IssuedAt.Add(-60 * time.Second)
	}
	if c.Expiry.IsZero() {
		c.Expiry = c.IssuedAt.Add(i.lifetime)
	}
	m := make(map[string]any, 40)
	for _, sc := range c.stringClaims() {
		m[sc.name] = *sc.v
	}
	m["iat"] = c.IssuedAt.Unix()
	m["nbf"] = c.NotBefore.Unix()
	m["exp"] = c.Expiry.Unix()
	for k, v := range c.Extra {
		if v == nil {
			delete(m, k)
			continue
		}
		m[k] = v
	}
	return m
}

// SignRaw signs header and payload exactly as given with the issuer's RSA
// key (RS256, whatever header["alg"] says) and returns the compact JWS.
// Tests use it to forge tokens that are well signed but wrong in one way:
// an unknown kid, a lying alg, a payload that is not JSON.
func (i *Issuer) SignRaw(header map[string]any, payload []byte) (string, error) {
	h, err := json.Marshal(header)
	if err != nil {
		return "", fmt.Errorf("issuer: encode header: %w", err)
	}
	return i.SignBytes(h, payload)
}

// SignBytes is [Issuer.SignRaw] with the header's bytes given as they are
// too, not marshalled from a map: tests use it for headers no map can
// produce (a name twice, space that is not JSON's around the object).
func (i *Issuer) SignBytes(header, payload []byte) (string, error) {
	signingInput := base64.RawURLEncoding.EncodeToString(header) + "." + base64.RawURLEncoding.EncodeToString(payload)
	digest := sha256.Sum256([]byte(signingInput))
	sig, err := rsa.SignPKCS1v15(rand.Reader, i.key, crypto.SHA256, digest[:])
	if err != nil {
		return "", fmt.Errorf("issuer: sign: %w", err)
	}
	return signingInput + "." + base64.RawURLEncoding.EncodeToString(sig), nil
}

// RequestURL registers a runner job whose tokens carry job's claims and
// returns what a runner would put in ACTIONS_ID_TOKEN_REQUEST_URL and
// ACTIONS_ID_TOKEN_REQUEST_TOKEN. The URL already has a query string, so a
// client appends "&audience=...", as GitHub's toolkit does. Each call
// registers a new job with its own request token.
func (i *Issuer) RequestURL(job Claims) (url, requestToken string) {
	id := randomHex(8)
	tok := randomToken()
	i.mu.Lock()
	i.jobs[id] = jobState{requestToken: tok, claims: job}
	i.mu.Unlock()
	return i.url + "/jobs/" + id + "/idtoken?api-version=2.0", tok
}

// discovery is the subset of OpenID Provider Metadata GitHub publishes.
type discovery struct {
	Issuer                           string   `json:"issuer"`
	JWKSURI                          string   `json:"jwks_uri"`
	SubjectTypesSupported            []string `json:"subject_types_supported"`
	ResponseTypesSupported           []string `json:"response_types_supported"`
	ClaimsSupported                  []string `json:"claims_supported"`
	IDTokenSigningAlgValuesSupported []string `json:"id_token_signing_alg_values_supported"`
	ScopesSupported                  []string `json:"scopes_supported"`
}

func (i *Issuer) serveDiscovery(w http.ResponseWriter, r *http.Request) {
	var claims []string
	c := DefaultClaims()
	for _, sc := range c.stringClaims() {
		claims = append(claims, sc.name)
	}
	claims = append(claims, "exp", "iat", "nbf")
	i.logger.Debug("served discovery", "remote", r.RemoteAddr)
	writeJSON(w, http.StatusOK, discovery{
		Issuer:                           i.url,
		JWKSURI:                          i.url + "/.well-known/jwks",
		SubjectTypesSupported:            []string{"public", "pairwise"},
		ResponseTypesSupported:           []string{"id_token"},
		ClaimsSupported:                  claims,
		IDTokenSigningAlgValuesSupported: []string{"RS256"},
		ScopesSupported:                  []string{"openid"},
	})
}

func (i *Issuer) serveJWKS(w http.ResponseWriter, r *http.Request) {
	set := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{
		Key:                       &i.key.PublicKey,
		KeyID:                     i.kid,
		Algorithm:                 "RS256",
		Use:                       "sig",
		Certificates:              []*x509.Certificate{i.cert},
		CertificateThumbprintSHA1: i.x5t,
	}}}
	i.logger.Debug("served JWKS", "remote", r.RemoteAddr)
	writeJSON(w, http.StatusOK, set)
}

// serveIDToken is the runner's ID-token endpoint.
func (i *Issuer) serveIDToken(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("job")
	i.mu.Lock()
	j, ok := i.jobs[id]
	i.mu.Unlock()
	bearer, hasBearer := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || !hasBearer || subtle.ConstantTimeCompare([]byte(bearer), []byte(j.requestToken)) != 1 {
		i.logger.Warn("refused ID token request", "job", id, "reason", "unknown job or bad request token")
		writeJSON(w, http.StatusUnauthorized, map[string]string{"message": "Bad credentials"})
		return
	}
	c := j.claims.withDefaults()
	if aud := r.URL.Query().Get("audience"); aud != "" {
		c.Audience = aud
	} else {
		c.Audience = defaultAudience(c.RepositoryOwner)
	}
	c.JTI = "" // a fresh jti for every token, as GitHub does
	p := i.payload(c)
	payload, err := json.Marshal(p)
	if err == nil {
		var tok string
		tok, err = i.SignRaw(i.header(), payload)
		if err == nil {
			i.logger.Info("issued ID token", "job", id, "aud", c.Audience, "jti", p["jti"])
			writeJSON(w, http.StatusOK, map[string]string{"value": tok})
			return
		}
	}
	i.logger.Error("could not mint ID token", "job", id, "error", err)
	writeJSON(w, http.StatusInternalServerError, map[string]string{"message": "internal error"})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// newUUID returns a random (version 4) UUID, the shape of GitHub's jti.
func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func randomToken() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}
