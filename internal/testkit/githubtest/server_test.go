package githubtest_test

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/google/go-cmp/cmp"
	"golang.org/x/crypto/nacl/box"

	"github.com/astro-sts/astro-sts/internal/clock"
	"github.com/astro-sts/astro-sts/internal/testkit/githubtest"
)

const pat = "pat-test-token"

func start(t *testing.T, cfg githubtest.Config) *githubtest.Server {
	t.Helper()
	s, err := githubtest.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// call sends a JSON request and returns the status and decoded body.
func call(t *testing.T, method, url, token string, body any) (int, map[string]any) {
	t.Helper()
	var rd *bytes.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	} else {
		rd = bytes.NewReader(nil)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

func sealFor(t *testing.T, keyB64, value string) string {
	t.Helper()
	raw, err := base64.StdEncoding.DecodeString(keyB64)
	if err != nil || len(raw) != 32 {
		t.Fatalf("public key %q: %v", keyB64, err)
	}
	var pk [32]byte
	copy(pk[:], raw)
	ct, err := box.SealAnonymous(nil, []byte(value), &pk, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(ct)
}

func TestPutRepoSecret(t *testing.T) {
	s := start(t, githubtest.Config{Tokens: []string{pat}})
	s.AddRepository("acme/dags")
	base := s.URL() + "/repos/acme/dags/actions/secrets"

	status, key := call(t, "GET", base+"/public-key", pat, nil)
	if status != http.StatusOK {
		t.Fatalf("public key: %d %v", status, key)
	}
	keyID, _ := key["key_id"].(string)
	if keyID != s.PublicKeyID(githubtest.RepoTarget("acme/dags")) {
		t.Fatalf("key_id %q differs from the server's", keyID)
	}
	pub := key["key"].(string)

	// A key pair that is not the server's: sealed for it, the secret must
	// not open.
	otherPub, _, err := box.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	otherKey := base64.StdEncoding.EncodeToString(otherPub[:])

	tests := []struct {
		name   string
		token  string
		body   any
		status int
	}{
		{"no token", "", map[string]any{"key_id": keyID, "encrypted_value": sealFor(t, pub, "v")}, 401},
		{"wrong token", "nope", map[string]any{"key_id": keyID, "encrypted_value": sealFor(t, pub, "v")}, 401},
		{"stale key id", pat, map[string]any{"key_id": "1", "encrypted_value": sealFor(t, pub, "v")}, 422},
		{"not base64", pat, map[string]any{"key_id": keyID, "encrypted_value": "%%%"}, 422},
		{"sealed for another key", pat, map[string]any{"key_id": keyID, "encrypted_value": sealFor(t, otherKey, "v")}, 422},
		{"unknown field", pat, map[string]any{"key_id": keyID, "encrypted_value": sealFor(t, pub, "v"), "value": "v"}, 400},
		{"visibility on a repo secret", pat, map[string]any{"key_id": keyID, "encrypted_value": sealFor(t, pub, "v"), "visibility": "all"}, 422},
		{"create", pat, map[string]any{"key_id": keyID, "encrypted_value": sealFor(t, pub, "first")}, 201},
		{"update", pat, map[string]any{"key_id": keyID, "encrypted_value": sealFor(t, pub, "second")}, 204},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body := call(t, "PUT", base+"/MY_SECRET", tt.token, tt.body)
			if status != tt.status {
				t.Errorf("status %d (%v), want %d", status, body, tt.status)
			}
		})
	}
	got, ok := s.SecretInfo(githubtest.RepoTarget("acme/dags"), "my_secret")
	if diff := cmp.Diff(githubtest.Secret{Value: "second", KeyID: keyID}, got); !ok || diff != "" {
		t.Errorf("stored secret (ok=%v) -want +got:\n%s", ok, diff)
	}

	// After a key rotation, a value sealed for the old key is refused.
	s.RotateKey(githubtest.RepoTarget("acme/dags"))
	if status, _ := call(t, "PUT", base+"/MY_SECRET", pat, map[string]any{"key_id": keyID, "encrypted_value": sealFor(t, pub, "v")}); status != 422 {
		t.Errorf("PUT with the rotated-out key: %d, want 422", status)
	}
}

func TestEnvAndOrgSecrets(t *testing.T) {
	s := start(t, githubtest.Config{Tokens: []string{pat}})
	id := s.AddRepository("acme/dags", "production")
	other := s.AddRepository("other/repo")

	put := func(t *testing.T, base, name string, extra map[string]any) int {
		t.Helper()
		status, key := call(t, "GET", base+"/public-key", pat, nil)
		if status != http.StatusOK {
			t.Fatalf("public key: %d", status)
		}
		body := map[string]any{"key_id": key["key_id"], "encrypted_value": sealFor(t, key["key"].(string), "value-"+name)}
		for k, v := range extra {
			body[k] = v
		}
		status, _ = call(t, "PUT", base+"/"+name, pat, body)
		return status
	}

	byID := s.URL() + "/repositories/" + strconv.FormatInt(id, 10) + "/environments/production/secrets"
	byName := s.URL() + "/repos/acme/dags/environments/production/secrets"
	org := s.URL() + "/orgs/acme/actions/secrets"
	tests := []struct {
		name   string
		base   string
		extra  map[string]any
		status int
	}{
		{"env by repository id", byID, nil, 201},
		{"env by name", byName, nil, 201},
		{"unknown env", s.URL() + "/repositories/" + strconv.FormatInt(id, 10) + "/environments/staging/secrets", nil, 404},
		{"org private", org, map[string]any{"visibility": "private"}, 201},
		{"org selected", org, map[string]any{"visibility": "selected", "selected_repository_ids": []int64{id}}, 201},
		{"org selected outside the org", org, map[string]any{"visibility": "selected", "selected_repository_ids": []int64{other}}, 422},
		{"org without visibility", org, nil, 422},
		{"unknown org", s.URL() + "/orgs/nobody/actions/secrets", map[string]any{"visibility": "all"}, 404},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.status == 404 {
				if status, _ := call(t, "GET", tt.base+"/public-key", pat, nil); status != 404 {
					t.Errorf("public key: %d, want 404", status)
				}
				return
			}
			if got := put(t, tt.base, "S"+strconv.Itoa(i), tt.extra); got != tt.status {
				t.Errorf("status %d, want %d", got, tt.status)
			}
		})
	}
	if v, ok := s.Secret(githubtest.EnvTarget("acme/dags", "production"), "S0"); !ok || v != "value-S0" {
		t.Errorf("env secret by id: %q %v", v, ok)
	}
	if v, ok := s.Secret(githubtest.EnvTarget("acme/dags", "production"), "S1"); !ok || v != "value-S1" {
		t.Errorf("env secret by name: %q %v", v, ok)
	}
	got, _ := s.SecretInfo(githubtest.OrgTarget("acme"), "S4")
	if diff := cmp.Diff([]int64{id}, got.SelectedRepositoryIDs); got.Visibility != "selected" || diff != "" {
		t.Errorf("org secret: visibility %q, selected ids -want +got:\n%s", got.Visibility, diff)
	}
}

func TestFaults(t *testing.T) {
	s := start(t, githubtest.Config{Tokens: []string{pat}})
	id := s.AddRepository("acme/dags", "production")
	key := s.URL() + "/repositories/" + strconv.FormatInt(id, 10) + "/environments/production/secrets/public-key"

	s.Fail("/repositories/", http.StatusInternalServerError, 1)
	// A target fault matches however the target is addressed.
	s.Fail(githubtest.EnvTarget("acme/dags", "production"), http.StatusForbidden, 2)
	s.RateLimit("/orgs/acme", 30*time.Second, 1)

	var got []int
	for range 4 {
		status, _ := call(t, "GET", key, pat, nil)
		got = append(got, status)
	}
	if diff := cmp.Diff([]int{500, 403, 403, 200}, got); diff != "" {
		t.Errorf("statuses -want +got:\n%s", diff)
	}

	req, _ := http.NewRequest("GET", s.URL()+"/orgs/acme/actions/secrets/public-key", nil)
	req.Header.Set("Authorization", "Bearer "+pat)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var body map[string]string
	_ = json.NewDecoder(resp.Body).Decode(&body)
	resp.Body.Close()
	if resp.StatusCode != 403 || resp.Header.Get("Retry-After") != "30" || body["message"] != githubtest.SecondaryRateLimitMessage {
		t.Errorf("rate limit answer: %d Retry-After=%q %v", resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}
}

func signJWT(t *testing.T, key any, alg jose.SignatureAlgorithm, c jwt.Claims) string {
	t.Helper()
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: key}, nil)
	if err != nil {
		t.Fatal(err)
	}
	s, err := jwt.Signed(signer).Claims(c).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestAppAuth(t *testing.T) {
	appKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	otherKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	clk := clock.Stopped(now)
	s := start(t, githubtest.Config{AppID: 42, AppKey: &appKey.PublicKey, Now: clk.Now})
	s.AddRepository("acme/dags")
	s.AddRepository("other/repo")
	inst := s.AddInstallation("acme")

	good := jwt.Claims{Issuer: "42", IssuedAt: jwt.NewNumericDate(now.Add(-time.Minute)), Expiry: jwt.NewNumericDate(now.Add(9 * time.Minute))}
	with := func(f func(*jwt.Claims)) jwt.Claims { c := good; f(&c); return c }
	tests := []struct {
		name   string
		token  string
		status int
	}{
		{"valid", signJWT(t, appKey, jose.RS256, good), 201},
		{"other key", signJWT(t, otherKey, jose.RS256, good), 401},
		{"HS256", signJWT(t, []byte("0123456789abcdef0123456789abcdef"), jose.HS256, good), 401},
		{"wrong issuer", signJWT(t, appKey, jose.RS256, with(func(c *jwt.Claims) { c.Issuer = "43" })), 401},
		{"expired", signJWT(t, appKey, jose.RS256, with(func(c *jwt.Claims) { c.Expiry = jwt.NewNumericDate(now.Add(-time.Second)) })), 401},
		{"too long", signJWT(t, appKey, jose.RS256, with(func(c *jwt.Claims) { c.Expiry = jwt.NewNumericDate(now.Add(20 * time.Minute)) })), 401},
		{"issued in the future", signJWT(t, appKey, jose.RS256, with(func(c *jwt.Claims) { c.IssuedAt = jwt.NewNumericDate(now.Add(5 * time.Minute)) })), 401},
		{"not a JWT", "garbage", 401},
	}
	url := s.URL() + "/app/installations/" + strconv.FormatInt(inst, 10) + "/access_tokens"
	var token string
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body := call(t, "POST", url, tt.token, nil)
			if status != tt.status {
				t.Fatalf("status %d (%v), want %d", status, body, tt.status)
			}
			if status == 201 {
				token, _ = body["token"].(string)
			}
		})
	}
	if s.InstallationTokensIssued() != 1 || token == "" {
		t.Fatalf("issued %d tokens, token %q", s.InstallationTokensIssued(), token)
	}

	jwtTok := signJWT(t, appKey, jose.RS256, good)
	if status, body := call(t, "GET", s.URL()+"/repos/acme/dags/installation", jwtTok, nil); status != 200 || body["id"] != float64(inst) {
		t.Errorf("repo installation: %d %v", status, body)
	}
	if status, _ := call(t, "GET", s.URL()+"/orgs/other/installation", jwtTok, nil); status != 404 {
		t.Errorf("installation of an account without the App: %d, want 404", status)
	}

	// The installation token works for its account only, and not as an
	// App JWT.
	if status, _ := call(t, "GET", s.URL()+"/repos/acme/dags/actions/secrets/public-key", token, nil); status != 200 {
		t.Errorf("own repository: %d, want 200", status)
	}
	if status, _ := call(t, "GET", s.URL()+"/orgs/other/actions/secrets/public-key", token, nil); status != 403 {
		t.Errorf("other account: %d, want 403", status)
	}
	if status, _ := call(t, "GET", s.URL()+"/repos/other/repo", token, nil); status != 404 {
		t.Errorf("other account's repository: %d, want 404", status)
	}

	// It expires.
	clk.Advance(2 * time.Hour)
	if status, _ := call(t, "GET", s.URL()+"/repos/acme/dags/actions/secrets/public-key", token, nil); status != 401 {
		t.Errorf("expired installation token: %d, want 401", status)
	}
}
