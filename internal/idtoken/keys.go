package idtoken

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

const (
	// keyRefreshInterval is the least time between two JWKS fetches of one
	// issuer. A token with an unknown kid triggers a fetch (that is how key
	// rotation is picked up), so without this bound anyone could make the
	// broker fetch GitHub's JWKS once per request.
	keyRefreshInterval = 10 * time.Second
	// keyMaxAge is how long fetched keys are used before they are fetched
	// again, so that a key the issuer withdrew stops being trusted.
	keyMaxAge = time.Hour
	// minRSABits refuses weak RSA keys in a JWKS.
	minRSABits = 2048
)

// keySet is one issuer's signing keys, fetched from its discovery jwks_uri
// and cached. It plays the part of go-oidc's RemoteKeySet but reports a
// fetch failure as [ErrIssuerUnavailable] (a 503 for the broker) and a kid
// that a fetch made for it did not find as [ErrBadSignature] (a 401);
// go-oidc folds both into one untyped error. A kid unknown while the
// refresh is held back (a fetch less than keyRefreshInterval ago) is an
// [ErrIssuerUnavailable] too: only a fetch could tell.
type keySet struct {
	url    string
	client *http.Client
	now    func() time.Time

	fl flight

	mu          sync.RWMutex
	keys        map[string]jose.JSONWebKey // by kid
	fetchedAt   time.Time                  // last successful fetch
	attemptedAt time.Time                  // last fetch, successful or not
	lastErr     error                      // result of the last fetch
}

func newKeySet(jwksURL string, client *http.Client, now func() time.Time) *keySet {
	return &keySet{url: jwksURL, client: client, now: now}
}

// key returns the public key for kid, checked to suit alg. It fetches the
// JWKS when kid is unknown or the keys are older than keyMaxAge, at most
// once per keyRefreshInterval. The fetch is not the caller's: if ctx ends
// first, key returns ctx's error and the fetch goes on for the callers
// after it (see [flight]).
func (k *keySet) key(ctx context.Context, kid, alg string) (crypto.PublicKey, error) {
	if jwk, ok, _ := k.lookup(kid); ok {
		return keyForAlg(jwk, alg)
	}
	var held *heldBackError
	ferr := k.fl.do(ctx, func(fctx context.Context) error {
		if left := k.refreshIn(); left > 0 {
			return &heldBackError{left: left}
		}
		return k.refresh(fctx)
	})
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("idtoken: waiting for the JWKS %s: %w", k.url, err)
	}
	jwk, ok, lastErr := k.lookup(kid)
	switch {
	case ok:
		return keyForAlg(jwk, alg)
	case lastErr != nil:
		return nil, fmt.Errorf("%w: fetching JWKS %s: %v", ErrIssuerUnavailable, k.url, lastErr)
	case errors.As(ferr, &held):
		// The kid may be one the issuer started signing with after the
		// last fetch, which a fetch would find: "try again", not "bad
		// signature" (which the action does not retry). Made-up kids sent
		// just before a rotation so make genuine tokens of the new key
		// wait for the period, not fail.
		return nil, fmt.Errorf("%w: kid %q is not among the JWKS %s fetched last; %v", ErrIssuerUnavailable, safe(kid), k.url, ferr)
	case ferr != nil:
		return nil, fmt.Errorf("%w: fetching JWKS %s: %v", ErrIssuerUnavailable, k.url, ferr)
	}
	// A fetch made for this very request did not find kid.
	return nil, fmt.Errorf("%w: unknown kid %q", ErrBadSignature, safe(kid))
}

// heldBackError: the JWKS was fetched less than keyRefreshInterval ago, so
// no fetch is made for an unknown kid until left has passed.
type heldBackError struct{ left time.Duration }

func (e *heldBackError) Error() string {
	return fmt.Sprintf("the next fetch is allowed in %s", e.left.Round(time.Millisecond))
}

// lookup returns the cached key for kid if the cache is fresh, and the
// error of the last fetch.
func (k *keySet) lookup(kid string) (jose.JSONWebKey, bool, error) {
	now := k.now()
	k.mu.RLock()
	defer k.mu.RUnlock()
	if k.fetchedAt.IsZero() || now.Sub(k.fetchedAt) >= keyMaxAge {
		return jose.JSONWebKey{}, false, k.lastErr
	}
	jwk, ok := k.keys[kid]
	return jwk, ok, k.lastErr
}

// refreshIn is how long until the JWKS may be fetched again: 0 if now.
func (k *keySet) refreshIn() time.Duration {
	now := k.now()
	k.mu.RLock()
	defer k.mu.RUnlock()
	if k.attemptedAt.IsZero() {
		return 0
	}
	return max(keyRefreshInterval-now.Sub(k.attemptedAt), 0)
}

func (k *keySet) refresh(ctx context.Context) error {
	now := k.now()
	keys, err := k.fetch(ctx)
	k.mu.Lock()
	defer k.mu.Unlock()
	k.attemptedAt = now
	k.lastErr = err
	if err == nil {
		k.keys = keys
		k.fetchedAt = now
	}
	return err
}

// fetch GETs the JWKS and keeps the keys that are usable for RS256 or
// ES256 signatures; the others are skipped, as RFC 7517 5 asks.
func (k *keySet) fetch(ctx context.Context) (map[string]jose.JSONWebKey, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, k.url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := k.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("status %s", resp.Status)
	}
	return parseJWKS(body)
}

// parseJWKS decodes a JWK Set, keeping public RSA (>= 2048 bits) and P-256
// keys with a kid whose use, key_ops and alg, when set, allow verifying a
// signature with an algorithm we accept (RFC 7517 4.2, 4.3, 4.4): a key
// the issuer published for another purpose is not used. A set with no
// usable key is an error: it can only be a misconfiguration, and telling
// it from "this kid is unknown" keeps the broker's answer honest (503, not
// 401).
func parseJWKS(body []byte) (map[string]jose.JSONWebKey, error) {
	var raw struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(body, &raw); err != nil {
		return nil, fmt.Errorf("invalid JWKS: %v", err)
	}
	keys := make(map[string]jose.JSONWebKey, len(raw.Keys))
	for _, m := range raw.Keys {
		var jwk jose.JSONWebKey
		if err := jwk.UnmarshalJSON(m); err != nil {
			continue
		}
		if jwk.KeyID == "" || !jwk.Valid() || !jwk.IsPublic() || !forVerifying(m) {
			continue
		}
		if jwk.Algorithm != "" && !allowedAlg(jwk.Algorithm) {
			continue
		}
		if _, err := keyForAlg(jwk, algFor(jwk)); err != nil {
			continue
		}
		if _, dup := keys[jwk.KeyID]; dup {
			continue
		}
		keys[jwk.KeyID] = jwk
	}
	if len(keys) == 0 {
		return nil, errors.New("JWKS has no usable RS256 or ES256 signing key")
	}
	return keys, nil
}

// jwkNames are the members of a JWK that forVerifying reads.
var jwkNames = nameSet("use", "key_ops")

// forVerifying reports whether a JWK may verify signatures: its use, if
// set, is "sig" (RFC 7517 4.2), and its key_ops, if set, include "verify"
// (4.3). go-jose reads use but not key_ops, so both are read here, from
// the key as the issuer sent it.
func forVerifying(jwk []byte) bool {
	m, err := decodeObject(jwk, jwkNames, 16)
	if err != nil {
		return false
	}
	if use, isString, present := m.stringMember("use"); present && (!isString || use != "sig") {
		return false
	}
	if _, isString := m.strings["key_ops"]; isString {
		return false
	}
	ops, present := m.others["key_ops"]
	if !present {
		return true
	}
	list, _ := ops.([]any)
	for _, op := range list {
		if op == "verify" {
			return true
		}
	}
	return false
}

// algFor is the algorithm a key can serve, from its type.
func algFor(jwk jose.JSONWebKey) string {
	if _, ok := jwk.Key.(*ecdsa.PublicKey); ok {
		return algES256
	}
	return algRS256
}

// keyForAlg returns jwk's key if it suits alg: an RSA key of at least
// minRSABits for RS256, a P-256 key for ES256, and the JWK's own alg (when
// set) equal to alg.
func keyForAlg(jwk jose.JSONWebKey, alg string) (crypto.PublicKey, error) {
	if jwk.Algorithm != "" && jwk.Algorithm != alg {
		return nil, fmt.Errorf("%w: kid %q is for %s, token says %s", ErrBadSignature, safe(jwk.KeyID), jwk.Algorithm, alg)
	}
	switch key := jwk.Key.(type) {
	case *rsa.PublicKey:
		if alg == algRS256 && key.N.BitLen() >= minRSABits {
			return key, nil
		}
	case *ecdsa.PublicKey:
		if alg == algES256 && key.Curve == elliptic.P256() {
			return key, nil
		}
	}
	return nil, fmt.Errorf("%w: kid %q does not suit %s", ErrBadSignature, safe(jwk.KeyID), alg)
}

// fetchTimeout bounds one discovery or JWKS fetch, whatever the HTTP
// client's own timeout (a client given in [Config] may have none).
const fetchTimeout = 10 * time.Second

// flight runs at most one fetch at a time: callers that arrive while one is
// running wait for its result instead of starting their own, so a burst of
// requests after a restart or a key rotation costs one fetch.
//
// The fetch belongs to none of them. It runs in a goroutine of its own,
// under a context of its own bounded by fetchTimeout: a caller that hangs
// up stops waiting (and gets its own context's error), not the fetch. Were
// the fetch run under the context of the caller that started it, anyone
// could start one with a made-up kid and hang up, and the cancelled fetch
// would count as the issuer's failure: no key refresh, and a 503 for every
// genuine token, until the back-off ran out, again and again.
type flight struct {
	mu sync.Mutex
	c  *flightCall
}

type flightCall struct {
	done chan struct{}
	err  error
}

func (f *flight) do(ctx context.Context, fn func(context.Context) error) error {
	f.mu.Lock()
	c := f.c
	if c == nil {
		c = &flightCall{done: make(chan struct{})}
		f.c = c
		go func() {
			fctx, cancel := context.WithTimeout(context.Background(), fetchTimeout)
			defer cancel()
			c.err = fn(fctx)
			f.mu.Lock()
			f.c = nil
			f.mu.Unlock()
			close(c.done)
		}()
	}
	f.mu.Unlock()
	select {
	case <-c.done:
		return c.err
	case <-ctx.Done():
		return ctx.Err()
	}
}
