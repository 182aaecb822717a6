package runner

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"time"
)

// IDTokenHandler stands in for the runner's OIDC token endpoint
// (ACTIONS_ID_TOKEN_REQUEST_URL): GET with "Authorization: Bearer
// <RequestToken>", the query "api-version=2.0" the runner's URL carries and
// an "audience" query parameter, answered with {"value": "<jwt>"}.
//
// Mount it on a loopback httptest server and pass the server's URL +
// "/token?api-version=2.0" as [Options.IDTokenURL]. It is safe for
// concurrent use. The zero value is not usable: set RequestToken.
type IDTokenHandler struct {
	// RequestToken is the bearer token requests must carry
	// (ACTIONS_ID_TOKEN_REQUEST_TOKEN).
	RequestToken string
	// Mint returns the ID token for an audience. Nil mints an unsigned
	// JWT-shaped token with a unique jti (enough for a broker stand-in);
	// the end-to-end test passes a function that signs with its issuer.
	Mint func(audience string) (string, error)
	// FailFirst makes the first FailFirst requests fail with FailStatus
	// (default 503), to exercise the caller's retries.
	FailFirst  int
	FailStatus int

	mu        sync.Mutex
	requests  int
	audiences []string
	issued    []string
}

// ServeHTTP implements [http.Handler].
func (h *IDTokenHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	if r.Header.Get("Authorization") != "Bearer "+h.RequestToken {
		http.Error(w, "bad request token", http.StatusUnauthorized)
		return
	}
	q := r.URL.Query()
	if q.Get("api-version") != "2.0" {
		http.Error(w, "api-version missing: the request URL's own query was dropped", http.StatusBadRequest)
		return
	}
	aud := q.Get("audience")

	h.mu.Lock()
	h.requests++
	n := h.requests
	h.mu.Unlock()
	if n <= h.FailFirst {
		status := h.FailStatus
		if status == 0 {
			status = http.StatusServiceUnavailable
		}
		http.Error(w, "injected failure", status)
		return
	}

	var tok string
	var err error
	if h.Mint != nil {
		tok, err = h.Mint(aud)
	} else {
		tok, err = fakeJWT(aud, n)
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	h.mu.Lock()
	h.audiences = append(h.audiences, aud)
	h.issued = append(h.issued, tok)
	h.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]string{"value": tok})
}

// Requests is the number of requests that passed authentication, failed
// ones included.
func (h *IDTokenHandler) Requests() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.requests
}

// Audiences returns the audience of each token issued, in order.
func (h *IDTokenHandler) Audiences() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.audiences...)
}

// Issued returns each token issued, in order.
func (h *IDTokenHandler) Issued() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.issued...)
}

// fakeJWT builds an unsigned, JWT-shaped token: three base64url segments,
// claims with the audience and a random jti (the broker accepts each jti
// once, so tests can tell one request from the next).
func fakeJWT(aud string, n int) (string, error) {
	enc := base64.RawURLEncoding
	hdr, err := json.Marshal(map[string]string{"alg": "RS256", "typ": "JWT", "kid": "runnertest"})
	if err != nil {
		return "", err
	}
	now := time.Now().Unix()
	claims, err := json.Marshal(map[string]any{
		"iss": "https://token.actions.githubusercontent.com",
		"sub": "repo:octo-org/octo-repo:ref:refs/heads/main",
		"aud": aud,
		"jti": fmt.Sprintf("runnertest-%d-%s", n, rand.Text()),
		"iat": now,
		"exp": now + 300,
	})
	if err != nil {
		return "", err
	}
	return enc.EncodeToString(hdr) + "." + enc.EncodeToString(claims) + "." + enc.EncodeToString([]byte("not-a-signature")), nil
}
