package idtoken_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/asn1"
	"encoding/json"
	"errors"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/astro-sts/astro-sts/internal/clock"
	"github.com/astro-sts/astro-sts/internal/idtoken"
)

// ecIssuer is an OIDC issuer signing ES256, which GitHub does not (yet):
// the local issuer signs RS256 only, so this test serves discovery and a
// P-256 JWKS itself.
type ecIssuer struct {
	url string
	key *ecdsa.PrivateKey
}

func startECIssuer(t *testing.T) *ecIssuer {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	e := &ecIssuer{key: key}
	mux := http.NewServeMux()
	mux.HandleFunc("/.well-known/openid-configuration", func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]any{"issuer": e.url, "jwks_uri": e.url + "/jwks"})
	})
	mux.HandleFunc("/jwks", func(w http.ResponseWriter, _ *http.Request) {
		_ = json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &key.PublicKey, KeyID: "ec1", Algorithm: "ES256", Use: "sig"}}})
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	e.url = srv.URL
	return e
}

// sign returns the compact JWS of claims, with the signature r||s (as JWS
// wants) or, with asn1Sig, DER-encoded (as crypto/ecdsa gives it, and as a
// careless signer would send it).
func (e *ecIssuer) sign(t *testing.T, claims map[string]any, asn1Sig bool) string {
	t.Helper()
	in := b64(map[string]any{"alg": "ES256", "kid": "ec1", "typ": "JWT"}) + "." + b64(claims)
	digest := sha256.Sum256([]byte(in))
	r, s, err := ecdsa.Sign(rand.Reader, e.key, digest[:])
	if err != nil {
		t.Fatal(err)
	}
	var sig []byte
	if asn1Sig {
		sig, err = asn1.Marshal(struct{ R, S *big.Int }{r, s})
		if err != nil {
			t.Fatal(err)
		}
	} else {
		sig = make([]byte, 64)
		r.FillBytes(sig[:32])
		s.FillBytes(sig[32:])
	}
	return in + "." + b64(sig)
}

func TestVerifyES256(t *testing.T) {
	clk := clock.Stopped(t0)
	e := startECIssuer(t)
	v := newVerifier(t, clk.Now, http.DefaultTransport, e.url)
	claims := map[string]any{
		"iss": e.url, "sub": "repo:acme/dags:ref:refs/heads/main", "aud": audience,
		"iat": t0.Unix(), "exp": t0.Unix() + 300, "jti": "j1", "repository_id": "123456",
	}
	good := e.sign(t, claims, false)
	c, err := v.Verify(context.Background(), good)
	if err != nil {
		t.Fatalf("Verify(ES256) = %v", err)
	}
	if c.RepositoryID != "123456" || c.Issuer != e.url {
		t.Errorf("claims = %+v", c)
	}

	parts := strings.Split(good, ".")
	other := map[string]any{}
	for k, val := range claims {
		other[k] = val
	}
	other["repository_id"] = "666"
	for name, tok := range map[string]string{
		"DER signature":                e.sign(t, claims, true),
		"signature of another payload": parts[0] + "." + b64(other) + "." + parts[2],
		"signature cut short":          parts[0] + "." + parts[1] + "." + b64(make([]byte, 63)),
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := v.Verify(context.Background(), tok); !errors.Is(err, idtoken.ErrInvalidToken) || !strings.Contains(err.Error(), "verify signature") {
				t.Fatalf("Verify = %v, want a refused signature", err)
			}
		})
	}
}
