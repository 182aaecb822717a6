package issuer_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	jose "github.com/go-jose/go-jose/v4"
	"github.com/google/go-cmp/cmp"

	"github.com/astro-sts/astro-sts/internal/issuer"
)

var fixedNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func start(t *testing.T) *issuer.Issuer {
	t.Helper()
	iss, err := issuer.Start(issuer.Config{Now: func() time.Time { return fixedNow }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = iss.Close() })
	return iss
}

// segment decodes part n (0 header, 1 payload) of a compact JWS.
func segment(t *testing.T, tok string, n int) map[string]any {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("token has %d parts, want 3", len(parts))
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[n])
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	if got := resp.Header.Get("Content-Type"); got != "application/json" {
		t.Errorf("Content-Type = %q", got)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatal(err)
	}
}

func TestDiscoveryAndJWKS(t *testing.T) {
	iss := start(t)
	if !strings.HasPrefix(iss.URL(), "http://127.0.0.1:") {
		t.Fatalf("URL = %q, want loopback", iss.URL())
	}
	var d struct {
		Issuer  string   `json:"issuer"`
		JWKSURI string   `json:"jwks_uri"`
		Algs    []string `json:"id_token_signing_alg_values_supported"`
		Resp    []string `json:"response_types_supported"`
		Subj    []string `json:"subject_types_supported"`
		Claims  []string `json:"claims_supported"`
	}
	getJSON(t, iss.URL()+"/.well-known/openid-configuration", &d)
	if d.Issuer != iss.URL() || d.JWKSURI != iss.URL()+"/.well-known/jwks" {
		t.Errorf("issuer %q jwks_uri %q", d.Issuer, d.JWKSURI)
	}
	if diff := cmp.Diff([]string{"RS256"}, d.Algs); diff != "" {
		t.Errorf("algs (-want +got):\n%s", diff)
	}
	if len(d.Resp) == 0 || len(d.Subj) == 0 {
		t.Errorf("response/subject types missing: %+v", d)
	}
	for _, want := range []string{"repository_id", "job_workflow_ref", "runner_environment", "exp"} {
		if !slices.Contains(d.Claims, want) {
			t.Errorf("claims_supported lacks %q", want)
		}
	}

	var set jose.JSONWebKeySet
	getJSON(t, d.JWKSURI, &set)
	if len(set.Keys) != 1 {
		t.Fatalf("JWKS has %d keys, want 1", len(set.Keys))
	}
	k := set.Keys[0]
	if k.KeyID != iss.KeyID() || k.Algorithm != "RS256" || k.Use != "sig" || !k.IsPublic() {
		t.Errorf("key kid=%q alg=%q use=%q public=%v", k.KeyID, k.Algorithm, k.Use, k.IsPublic())
	}
	if len(k.Certificates) != 1 || len(k.CertificateThumbprintSHA1) != 20 {
		t.Errorf("key lacks x5c/x5t")
	}
}

// TestMintVerifiesWithGoOIDC checks the issuer against an independent
// relying party (go-oidc used directly), so that a bug in our own verifier
// cannot hide a bug here.
func TestMintVerifiesWithGoOIDC(t *testing.T) {
	iss := start(t)
	ctx := context.Background()
	p, err := oidc.NewProvider(ctx, iss.URL())
	if err != nil {
		t.Fatal(err)
	}
	v := p.Verifier(&oidc.Config{ClientID: "https://sts.example", Now: func() time.Time { return fixedNow }})

	c := issuer.DefaultClaims()
	c.Audience = "https://sts.example"
	c.JTI = "jti-1"
	tok, err := iss.Mint(c)
	if err != nil {
		t.Fatal(err)
	}
	idt, err := v.Verify(ctx, tok)
	if err != nil {
		t.Fatalf("go-oidc refused a minted token: %v", err)
	}

	h := segment(t, tok, 0)
	wantHeader := map[string]any{"typ": "JWT", "alg": "RS256", "kid": iss.KeyID(), "x5t": h["x5t"]}
	if diff := cmp.Diff(wantHeader, h); diff != "" {
		t.Errorf("header (-want +got):\n%s", diff)
	}
	if x5t, _ := h["x5t"].(string); len(x5t) != 27 { // base64url of 20 bytes
		t.Errorf("x5t = %q", x5t)
	}

	var got map[string]any
	if err := idt.Claims(&got); err != nil {
		t.Fatal(err)
	}
	sha := "5e4c7d1a9b2f3e8d6c0a1b2c3d4e5f60718293a4"
	wf := "acme/dags/.github/workflows/deploy.yml@refs/heads/main"
	want := map[string]any{
		"iss":                   iss.URL(),
		"aud":                   "https://sts.example",
		"sub":                   "repo:acme/dags:environment:production",
		"jti":                   "jti-1",
		"iat":                   float64(fixedNow.Unix()),
		"nbf":                   float64(fixedNow.Unix() - 60),
		"exp":                   float64(fixedNow.Add(5 * time.Minute).Unix()),
		"actor":                 "octocat",
		"actor_id":              "583231",
		"base_ref":              "",
		"head_ref":              "",
		"check_run_id":          "31337000001",
		"enterprise":            "acme-enterprise",
		"enterprise_id":         "4242",
		"environment":           "production",
		"event_name":            "push",
		"job_workflow_ref":      wf,
		"job_workflow_sha":      sha,
		"ref":                   "refs/heads/main",
		"ref_type":              "branch",
		"ref_protected":         "true",
		"repository":            "acme/dags",
		"repository_id":         "123456",
		"repository_owner":      "acme",
		"repository_owner_id":   "65",
		"repository_visibility": "private",
		"run_id":                "9876543210",
		"run_number":            "42",
		"run_attempt":           "1",
		"runner_environment":    "github-hosted",
		"sha":                   sha,
		"workflow":              "deploy",
		"workflow_ref":          wf,
		"workflow_sha":          sha,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("claims (-want +got):\n%s", diff)
	}
}

func TestMintFillsDefaults(t *testing.T) {
	iss := start(t)
	issued := fixedNow.Add(-time.Minute)
	tests := []struct {
		name string
		in   issuer.Claims
		want map[string]any // claims to compare; others ignored
		gone []string       // claims that must be absent
	}{
		{
			name: "zero claims are the defaults",
			in:   issuer.Claims{},
			want: map[string]any{"repository_id": "123456", "aud": "https://github.com/acme", "iss": iss.URL(),
				"exp": float64(fixedNow.Add(5 * time.Minute).Unix())},
		},
		{
			name: "set fields win and the default audience follows the owner",
			in:   issuer.Claims{Repository: "other/repo", RepositoryOwner: "other", IssuedAt: issued},
			want: map[string]any{"repository": "other/repo", "repository_id": "123456", "aud": "https://github.com/other",
				"iat": float64(issued.Unix()), "exp": float64(issued.Add(5 * time.Minute).Unix())},
		},
		{
			name: "issuer override",
			in:   issuer.Claims{Issuer: "https://token.actions.githubusercontent.com"},
			want: map[string]any{"iss": "https://token.actions.githubusercontent.com"},
		},
		{
			name: "extra adds, overrides and removes",
			in: issuer.Claims{Extra: map[string]any{
				"repo_property_tier": "gold", "environment": nil, "run_id": 7,
			}},
			want: map[string]any{"repo_property_tier": "gold", "run_id": float64(7)},
			gone: []string{"environment"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok, err := iss.Mint(tt.in)
			if err != nil {
				t.Fatal(err)
			}
			p := segment(t, tok, 1)
			got := make(map[string]any)
			for k := range tt.want {
				got[k] = p[k]
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("claims (-want +got):\n%s", diff)
			}
			for _, k := range tt.gone {
				if _, ok := p[k]; ok {
					t.Errorf("claim %q present, want absent", k)
				}
			}
			if jti, _ := p["jti"].(string); len(jti) != 36 {
				t.Errorf("jti = %q, want a UUID", jti)
			}
		})
	}
}

func TestRunnerEndpoint(t *testing.T) {
	iss := start(t)
	job := issuer.Claims{Repository: "acme/etl", RepositoryOwner: "acme", EventName: "workflow_dispatch"}
	url, tok := iss.RequestURL(job)
	otherURL, otherTok := iss.RequestURL(job)
	if !strings.Contains(url, "?api-version=") {
		t.Fatalf("request URL %q has no query string", url)
	}
	if url == otherURL || tok == otherTok {
		t.Fatal("two jobs share a URL or request token")
	}

	tests := []struct {
		name       string
		url        string
		auth       string
		wantStatus int
		wantAud    string
	}{
		{"audience asked", url + "&audience=https://sts.example", "Bearer " + tok, 200, "https://sts.example"},
		{"default audience", url, "Bearer " + tok, 200, "https://github.com/acme"},
		{"wrong bearer", url + "&audience=x", "Bearer " + otherTok, 401, ""},
		{"missing bearer", url + "&audience=x", "", 401, ""},
		{"not a bearer", url + "&audience=x", "token " + tok, 401, ""},
		{"unknown job", iss.URL() + "/jobs/nope/idtoken?api-version=2.0", "Bearer " + tok, 401, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequest(http.MethodGet, tt.url, nil)
			if err != nil {
				t.Fatal(err)
			}
			if tt.auth != "" {
				req.Header.Set("Authorization", tt.auth)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tt.wantStatus {
				t.Fatalf("status %d, want %d (%s)", resp.StatusCode, tt.wantStatus, body)
			}
			if tt.wantStatus != 200 {
				if strings.Contains(string(body), `"value"`) {
					t.Errorf("refusal carries a token: %s", body)
				}
				return
			}
			var out struct {
				Value string `json:"value"`
			}
			if err := json.Unmarshal(body, &out); err != nil {
				t.Fatal(err)
			}
			p := segment(t, out.Value, 1)
			got := map[string]any{"aud": p["aud"], "repository": p["repository"], "event_name": p["event_name"]}
			want := map[string]any{"aud": tt.wantAud, "repository": "acme/etl", "event_name": "workflow_dispatch"}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("claims (-want +got):\n%s", diff)
			}
		})
	}
}

func TestRunnerEndpointFreshJTI(t *testing.T) {
	iss := start(t)
	url, tok := iss.RequestURL(issuer.Claims{JTI: "fixed"})
	seen := map[string]bool{}
	for range 3 {
		req, _ := http.NewRequest(http.MethodGet, url+"&audience=a", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var out struct {
			Value string `json:"value"`
		}
		err = json.NewDecoder(resp.Body).Decode(&out)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		jti, _ := segment(t, out.Value, 1)["jti"].(string)
		if jti == "fixed" || seen[jti] {
			t.Fatalf("jti %q reused", jti)
		}
		seen[jti] = true
	}
}

func TestSignRawKeepsHeader(t *testing.T) {
	iss := start(t)
	tok, err := iss.SignRaw(map[string]any{"alg": "RS256", "kid": "other"}, []byte("not json"))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(map[string]any{"alg": "RS256", "kid": "other"}, segment(t, tok, 0)); diff != "" {
		t.Errorf("header (-want +got):\n%s", diff)
	}
	payload, _ := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[1])
	if string(payload) != "not json" {
		t.Errorf("payload = %q", payload)
	}
	// The signature must verify with the published key.
	jws, err := jose.ParseSigned(tok, []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(iss.PublicKeyPEM())
	if block == nil || block.Type != "PUBLIC KEY" {
		t.Fatalf("PublicKeyPEM is not a PEM public key")
	}
	var set jose.JSONWebKeySet
	getJSON(t, iss.URL()+"/.well-known/jwks", &set)
	if _, err := jws.Verify(&set.Keys[0]); err != nil {
		t.Errorf("SignRaw signature does not verify: %v", err)
	}
}

func TestStartRejectsNegativeLifetime(t *testing.T) {
	if _, err := issuer.Start(issuer.Config{Lifetime: -time.Second}); err == nil {
		t.Fatal("Start accepted a negative lifetime")
	}
}
