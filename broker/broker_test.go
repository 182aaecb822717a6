package broker_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/astro-sts/astro-sts/broker"
	"github.com/astro-sts/astro-sts/internal/astro"
	"github.com/astro-sts/astro-sts/internal/brokerapi"
	"github.com/astro-sts/astro-sts/internal/emulator"
	"github.com/astro-sts/astro-sts/internal/issuer"
	"github.com/astro-sts/astro-sts/internal/policy"
	"github.com/astro-sts/astro-sts/internal/rotation"
)

// The whole life of a token: exchange, use it as the CLI would, revoke it
// with a fresh OIDC token of the same run, and see it refused.
func TestExchangeUseRevoke(t *testing.T) {
	e := newEnv(t, envOptions{})
	ws := e.emu.WorkspaceIDs()[0]
	r := e.exchange(mainClaims(), `{"role":"WORKSPACE_AUTHOR","ttl":"20m"}`)

	want := brokerapi.ExchangeResponse{
		OrganizationID: e.emu.OrganizationID(),
		WorkspaceID:    ws,
		Role:           astro.RoleWorkspaceAuthor,
		ExpiresAt:      e.clock.Now().Add(20 * time.Minute),
		Rule:           "deploy-main",
	}
	if d := cmp.Diff(want, r, cmpopts.IgnoreFields(brokerapi.ExchangeResponse{}, "Token", "TokenID")); d != "" {
		t.Errorf("exchange answer (-want +got):\n%s", d)
	}
	claims, err := emulator.ParseClaims(r.Token)
	if err != nil {
		t.Fatalf("minted value is not an emulator JWT: %v", err)
	}
	if claims.APITokenID != r.TokenID {
		t.Errorf("apiTokenId claim %q, token id %q", claims.APITokenID, r.TokenID)
	}
	if ok, status := e.tokenWorks(r.Token, ws); !ok {
		t.Fatalf("minted token refused by Astro: %d", status)
	}

	tok, err := e.astroToken(r.TokenID)
	if err != nil {
		t.Fatal(err)
	}
	if tok.Name != "astro-sts acme/dags run 987/1 job 31337000001" {
		t.Errorf("name %q", tok.Name)
	}
	if tok.ExpiryPeriodInDays == nil || *tok.ExpiryPeriodInDays != 1 {
		t.Errorf("upstream expiry %v, want 1 day", tok.ExpiryPeriodInDays)
	}
	m, ok := broker.ParseMarker(tok.Description)
	if !ok {
		t.Fatalf("description carries no marker: %q", tok.Description)
	}
	wantMarker := broker.Marker{Deadline: r.ExpiresAt, RepositoryID: "123456", RunID: "987", RunAttempt: "1", Rule: "deploy-main", CheckRunID: "31337000001"}
	if d := cmp.Diff(wantMarker, m, cmpopts.IgnoreFields(broker.Marker{}, "Nonce")); d != "" {
		t.Errorf("marker (-want +got):\n%s", d)
	}
	if len(m.Nonce) != 22 {
		t.Errorf("nonce %q is not 128 bits in base64url", m.Nonce)
	}

	// The post step: a fresh OIDC token of the same run.
	status, body, _ := e.post("/v1/revoke", e.mint(mainClaims()), fmt.Sprintf(`{"token_id":%q}`, r.TokenID))
	if status != http.StatusNoContent {
		t.Fatalf("revoke: %d %s", status, body)
	}
	if ok, status := e.tokenWorks(r.Token, ws); ok || status != http.StatusUnauthorized {
		t.Fatalf("revoked token: status %d, want 401", status)
	}
	// Revoking again is not an error: the token is already gone.
	status, body, _ = e.post("/v1/revoke", e.mint(mainClaims()), fmt.Sprintf(`{"token_id":%q}`, r.TokenID))
	if status != http.StatusNoContent {
		t.Fatalf("second revoke: %d %s", status, body)
	}
}

func TestDefaultsAreTheGrant(t *testing.T) {
	e := newEnv(t, envOptions{})
	r := e.exchange(mainClaims(), "")
	if r.Role != astro.RoleWorkspaceOperator || !r.ExpiresAt.Equal(e.clock.Now().Add(30*time.Minute)) {
		t.Errorf("got role %s until %s; want the grant's maximum (OPERATOR, 30m)", r.Role, r.ExpiresAt)
	}
}

// Several Workspaces: an Organization token with ORGANIZATION_MEMBER plus a
// Workspace role in each, as the Astro docs describe.
func TestExchangeSeveralWorkspaces(t *testing.T) {
	e := newEnv(t, envOptions{})
	c := mainClaims()
	c.Workflow, c.Ref = "preview", "refs/heads/feature"
	r := e.exchange(c, "")
	tok, err := e.astroToken(r.TokenID)
	if err != nil {
		t.Fatal(err)
	}
	if tok.Scope != astro.ScopeOrganization {
		t.Fatalf("scope %s, want ORGANIZATION", tok.Scope)
	}
	want := []astro.TokenRole{{EntityID: e.emu.OrganizationID(), EntityType: astro.EntityOrganization, Role: astro.RoleOrganizationMember}}
	for _, ws := range e.emu.WorkspaceIDs() {
		want = append(want, astro.TokenRole{EntityID: ws, EntityType: astro.EntityWorkspace, Role: astro.RoleWorkspaceAuthor})
	}
	sortRoles := cmpopts.SortSlices(func(a, b astro.TokenRole) bool { return a.EntityID < b.EntityID })
	if d := cmp.Diff(want, tok.Roles, sortRoles); d != "" {
		t.Errorf("roles (-want +got):\n%s", d)
	}
	for _, ws := range e.emu.WorkspaceIDs() {
		if ok, status := e.tokenWorks(r.Token, ws); !ok {
			t.Errorf("token refused in Workspace %s: %d", ws, status)
		}
	}
	// Narrowed to one of them: a plain Workspace token.
	r = e.exchange(c, fmt.Sprintf(`{"workspace_id":%q}`, e.emu.WorkspaceIDs()[1]))
	if tok, err = e.astroToken(r.TokenID); err != nil || tok.Scope != astro.ScopeWorkspace {
		t.Errorf("narrowed: scope %v, err %v", tok, err)
	}
}

func TestExchangeDeployment(t *testing.T) {
	e := newEnv(t, envOptions{})
	c := mainClaims()
	c.Workflow, c.Ref = "deploy-only", "refs/heads/feature"
	r := e.exchange(c, "")
	if r.DeploymentID != e.emu.DeploymentIDs()[0] || r.Role != astro.RoleDeploymentAdmin {
		t.Fatalf("got %+v", r)
	}
	tok, err := e.astroToken(r.TokenID)
	if err != nil || tok.Scope != astro.ScopeDeployment {
		t.Fatalf("scope: %v %v", tok, err)
	}
}

func TestExchangeRefusals(t *testing.T) {
	e := newEnv(t, envOptions{})
	other := mainClaims()
	other.Repository, other.RepositoryID = "evil/dags", "666"

	for _, tc := range []struct {
		name       string
		claims     issuer.Claims
		body       string
		wantStatus int
		wantCode   string
		wantInMsg  string
	}{
		{"untrusted repository", other, "", 403, "denied", "no policy rule"},
		{"wider role", mainClaims(), `{"role":"WORKSPACE_OWNER"}`, 403, "too_wide", "WORKSPACE_OWNER"},
		{"longer ttl", mainClaims(), `{"ttl":"2h"}`, 403, "too_wide", "ttl"},
		{"other workspace", mainClaims(), `{"workspace_id":"clnotgranted"}`, 403, "too_wide", "workspace"},
		{"malformed json", mainClaims(), `{"role":`, 400, "bad_request", "not valid JSON"},
		{"unknown field", mainClaims(), `{"rolee":"WORKSPACE_MEMBER"}`, 400, "bad_request", "unknown field"},
		{"two objects", mainClaims(), `{} {}`, 400, "bad_request", "single JSON object"},
		{"bad ttl", mainClaims(), `{"ttl":"soon"}`, 400, "bad_request", "ttl"},
		{"negative ttl", mainClaims(), `{"ttl":"-5m"}`, 400, "bad_request", "ttl"},
		{"ttl below the policy's minimum", mainClaims(), `{"ttl":"1ns"}`, 400, "bad_request", "below the minimum of 1m0s"},
		{"ttl just below a minute", mainClaims(), `{"ttl":"59s"}`, 400, "bad_request", "below the minimum"},
		{"upper-case key", mainClaims(), `{"ROLE":"WORKSPACE_MEMBER"}`, 400, "bad_request", `unknown field "ROLE"`},
		{"duplicate key", mainClaims(), `{"role":"WORKSPACE_MEMBER","role":"WORKSPACE_OWNER"}`, 400, "bad_request", `duplicate field "role"`},
		{"unknown role", mainClaims(), `{"role":"ROOT"}`, 400, "bad_request", ""},
		{"huge body", mainClaims(), `{"role":"` + strings.Repeat("A", 100<<10) + `"}`, 413, "too_large", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, body, _ := e.post("/v1/exchange", e.mint(tc.claims), tc.body)
			if status != tc.wantStatus {
				t.Fatalf("status %d, want %d: %s", status, tc.wantStatus, body)
			}
			code, msg := errorCode(t, body)
			if code != tc.wantCode || !strings.Contains(msg, tc.wantInMsg) {
				t.Errorf("got %s %q, want %s containing %q", code, msg, tc.wantCode, tc.wantInMsg)
			}
		})
	}
	if n := len(e.emu.Tokens()); n != 1 { // the seeded organization token only
		t.Errorf("%d tokens in Astro after refusals, want 1", n)
	}
}

// b64 is base64url without padding, as in a JWS.
func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// Every bad token is refused with 401 and the same constant message: the
// detail goes to the log only.
func TestBadTokens(t *testing.T) {
	e := newEnv(t, envOptions{})
	good := e.mint(mainClaims())
	parts := strings.Split(good, ".")
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}

	hs256 := func() string {
		h := b64([]byte(`{"alg":"HS256","typ":"JWT","kid":"` + e.iss.KeyID() + `"}`))
		mac := hmac.New(sha256.New, e.iss.PublicKeyPEM())
		mac.Write([]byte(h + "." + parts[1]))
		return h + "." + parts[1] + "." + b64(mac.Sum(nil))
	}
	signed := func(header map[string]any, c issuer.Claims) string {
		tok := e.mint(c)
		p := strings.Split(tok, ".")[1]
		raw, _ := base64.RawURLEncoding.DecodeString(p)
		s, err := e.iss.SignRaw(header, raw)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	with := func(f func(*issuer.Claims)) issuer.Claims {
		c := mainClaims()
		f(&c)
		return c
	}
	now := e.clock.Now()

	replayed := e.mint(mainClaims())
	if status, body, _ := e.post("/v1/exchange", replayed, ""); status != 200 {
		t.Fatalf("first use: %d %s", status, body)
	}

	for _, tc := range []struct {
		name   string
		tok    string
		reason string
	}{
		{"alg none", b64([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + parts[1] + ".", brokerapi.ReasonBadSignature},
		{"HS256 with the public key", hs256(), brokerapi.ReasonBadSignature},
		{"wrong issuer", e.mint(with(func(c *issuer.Claims) { c.Issuer = "https://token.actions.githubusercontent.com" })), brokerapi.ReasonUnknownIssuer},
		{"issuer not in list", e.mint(with(func(c *issuer.Claims) { c.Issuer = "http://127.0.0.1:1" })), brokerapi.ReasonUnknownIssuer},
		{"wrong audience", e.mint(with(func(c *issuer.Claims) { c.Audience = "https://github.com/acme" })), brokerapi.ReasonWrongAudience},
		{"expired", e.mint(with(func(c *issuer.Claims) {
			c.IssuedAt, c.NotBefore, c.Expiry = now.Add(-10*time.Minute), now.Add(-10*time.Minute), now.Add(-2*time.Minute)
		})), brokerapi.ReasonExpired},
		{"nbf in the future", e.mint(with(func(c *issuer.Claims) { c.NotBefore = now.Add(5 * time.Minute) })), brokerapi.ReasonNotYetValid},
		{"bad signature", parts[0] + "." + b64(append(payload[:len(payload)-1], ' ', '}')) + "." + parts[2], brokerapi.ReasonBadSignature},
		{"truncated", good[:len(good)-20], brokerapi.ReasonBadSignature},
		{"no jti", e.mint(with(func(c *issuer.Claims) { c.Extra = map[string]any{"jti": nil} })), brokerapi.ReasonBadClaims},
		{"not a JWT", "hello", brokerapi.ReasonMalformed},
		{"1 MB of garbage", strings.Repeat("x", 1<<20), brokerapi.ReasonMalformed},
		{"replayed jti", replayed, brokerapi.ReasonReplayed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, body, h := e.post("/v1/exchange", tc.tok, "")
			if status != http.StatusUnauthorized {
				t.Fatalf("status %d, want 401: %s", status, body)
			}
			eb := errorBody(t, body)
			if eb.Error != brokerapi.CodeTokenInvalid || eb.Reason != tc.reason || eb.RequestID != h.Get(brokerapi.RequestIDHeader) {
				t.Errorf("body %s, want %s/%s under the answer's request id", body, brokerapi.CodeTokenInvalid, tc.reason)
			}
			// The message is the reason's own sentence: nothing of the
			// token, the issuer list or the configured audience.
			for _, leak := range []string{audience, e.iss.URL(), "127.0.0.1", "github.com/acme"} {
				if strings.Contains(eb.Message, leak) {
					t.Errorf("message %q shows %q", eb.Message, leak)
				}
			}
		})
	}
	t.Run("no bearer", func(t *testing.T) {
		status, _, _ := e.post("/v1/exchange", "", "")
		if status != http.StatusUnauthorized {
			t.Errorf("status %d", status)
		}
	})
	// A kid the issuer's keys, fetched less than 10 s ago, do not hold may
	// be a key rotated in since: only a fetch can tell, so the answer is
	// "try again" until one may be made; then a fresh set without it is a
	// bad signature.
	t.Run("unknown kid", func(t *testing.T) {
		tok := signed(map[string]any{"alg": "RS256", "typ": "JWT", "kid": "nope"}, mainClaims())
		status, body, h := e.post("/v1/exchange", tok, "")
		if eb := errorBody(t, body); status != http.StatusServiceUnavailable || eb.Reason != brokerapi.ReasonIssuerUnavailable || h.Get("Retry-After") == "" {
			t.Errorf("within the refresh interval: %d %s (Retry-After %q), want 503 %s with a Retry-After", status, body, h.Get("Retry-After"), brokerapi.ReasonIssuerUnavailable)
		}
		e.clock.Advance(10 * time.Second)
		status, body, _ = e.post("/v1/exchange", tok, "")
		if eb := errorBody(t, body); status != http.StatusUnauthorized || eb.Reason != brokerapi.ReasonBadSignature {
			t.Errorf("after a fresh fetch: %d %s, want 401 %s", status, body, brokerapi.ReasonBadSignature)
		}
	})
}

// A token whose post step never ran is gone after its TTL plus one reaper
// pass; tokens not minted by the broker, and live ones, are left alone.
func TestReaper(t *testing.T) {
	e := newEnv(t, envOptions{})
	ws := e.emu.WorkspaceIDs()[0]
	short := e.exchange(mainClaims(), `{"ttl":"5m"}`)
	long := e.exchange(mainClaims(), `{"ttl":"30m"}`)
	days := 30
	manual, err := e.astroOrg.CreateToken(context.Background(), e.emu.OrganizationID(), astro.CreateTokenRequest{
		Name: "made by hand", Role: astro.RoleWorkspaceMember, Scope: astro.ScopeWorkspace, EntityID: ws, TokenExpiryPeriodInDays: &days,
	})
	if err != nil {
		t.Fatal(err)
	}

	n, err := e.broker.Reap(context.Background())
	if err != nil || n != 0 {
		t.Fatalf("reap before any deadline: %d, %v", n, err)
	}
	e.clock.Advance(5*time.Minute + time.Second)
	if n, err = e.broker.Reap(context.Background()); err != nil || n != 1 {
		t.Fatalf("reap after 5m: %d, %v; want 1", n, err)
	}
	for _, tc := range []struct {
		name  string
		value string
		works bool
	}{{"expired", short.Token, false}, {"live", long.Token, true}, {"manual", manual.Token, true}} {
		if ok, status := e.tokenWorks(tc.value, ws); ok != tc.works {
			t.Errorf("%s token: works=%v (status %d), want %v", tc.name, ok, status, tc.works)
		}
	}
	e.clock.Advance(25 * time.Minute)
	if n, err = e.broker.Reap(context.Background()); err != nil || n != 1 {
		t.Fatalf("reap after 30m: %d, %v; want 1", n, err)
	}
	if ok, _ := e.tokenWorks(long.Token, ws); ok {
		t.Error("30m token survived its deadline and a reap")
	}
	if !strings.Contains(e.logs.String(), `"audit":"reap"`) {
		t.Error("no audit record for the reap")
	}
}

// Two replicas reaping at once both succeed: a 404 on delete is success.
func TestReaperReplicas(t *testing.T) {
	e := newEnv(t, envOptions{})
	for range 3 {
		e.exchange(mainClaims(), `{"ttl":"1m"}`)
	}
	e.clock.Advance(2 * time.Minute)
	errs := make(chan error, 2)
	for range 2 {
		go func() { _, err := e.broker.Reap(context.Background()); errs <- err }()
	}
	for range 2 {
		if err := <-errs; err != nil {
			t.Errorf("reap: %v", err)
		}
	}
	if n := len(e.emu.Tokens()); n != 1 {
		t.Errorf("%d tokens left, want only the organization token", n)
	}
}

func TestRevokeSomeoneElses(t *testing.T) {
	e := newEnv(t, envOptions{})
	r := e.exchange(mainClaims(), "")
	for _, tc := range []struct {
		name   string
		f      func(*issuer.Claims)
		status int
	}{
		{"another run", func(c *issuer.Claims) { c.RunID = "988" }, http.StatusNotFound},
		{"another attempt", func(c *issuer.Claims) { c.RunAttempt = "2" }, http.StatusNotFound},
		// No rule trusts it: refused as its exchange would be.
		{"another repository", func(c *issuer.Claims) { c.RepositoryID = "999" }, http.StatusForbidden},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := mainClaims()
			tc.f(&c)
			status, body, _ := e.post("/v1/revoke", e.mint(c), fmt.Sprintf(`{"token_id":%q}`, r.TokenID))
			if status != tc.status {
				t.Fatalf("status %d, want %d: %s", status, tc.status, body)
			}
		})
	}
	if ok, _ := e.tokenWorks(r.Token, e.emu.WorkspaceIDs()[0]); !ok {
		t.Error("a refused revoke deleted the token")
	}
	// The organization token was not minted by the broker: nobody may revoke it.
	var orgTok string
	for _, tok := range e.emu.Tokens() {
		if _, minted := broker.ParseMarker(tok.Description); !minted {
			orgTok = tok.ID
		}
	}
	if status, _, _ := e.post("/v1/revoke", e.mint(mainClaims()), fmt.Sprintf(`{"token_id":%q}`, orgTok)); status != http.StatusNotFound {
		t.Errorf("revoke of a foreign token: %d, want 404", status)
	}
	for _, body := range []string{`{}`, `{"token_id":".."}`, `{"token_id":"a/b"}`, `{"token_id":"%2e%2e"}`} {
		if status, _, _ := e.post("/v1/revoke", e.mint(mainClaims()), body); status != http.StatusBadRequest {
			t.Errorf("revoke %s: %d, want 400", body, status)
		}
	}
}

// Upstream trouble becomes 429 or 502 with Retry-After passed on, never
// a 500 or a leaked upstream message.
func TestUpstreamTrouble(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.emu.Throttle(10, 7*time.Second)
	status, body, h := e.post("/v1/exchange", e.mint(mainClaims()), "")
	if status != http.StatusTooManyRequests || h.Get("Retry-After") != "7" {
		t.Fatalf("throttled: %d Retry-After=%q %s", status, h.Get("Retry-After"), body)
	}

	down := newEnv(t, envOptions{emulator: emulator.Config{ErrorRate: 1}})
	status, body, _ = down.post("/v1/exchange", down.mint(mainClaims()), "")
	if status != http.StatusBadGateway {
		t.Fatalf("Astro failing: %d %s", status, body)
	}
	if eb := errorBody(t, body); eb.Error != brokerapi.CodeUpstreamUnavailable || eb.Reason != brokerapi.ReasonAstroError {
		t.Errorf("body %s", body)
	}
}

// The audit log has one record per decision, with the token's id and hash
// and never its value (nor the OIDC token).
func TestAuditNeverLogsValues(t *testing.T) {
	e := newEnv(t, envOptions{})
	idTok := e.mint(mainClaims())
	status, body, _ := e.post("/v1/exchange", idTok, "")
	if status != 200 {
		t.Fatal(status)
	}
	var r brokerapi.ExchangeResponse
	if err := json.Unmarshal(body, &r); err != nil {
		t.Fatal(err)
	}
	other := mainClaims()
	other.RepositoryID = "666"
	e.post("/v1/exchange", e.mint(other), "")

	logs := e.logs.String()
	for _, secret := range []string{r.Token, idTok, e.emu.OrganizationToken()} {
		if strings.Contains(logs, secret) || strings.Contains(logs, strings.Split(secret, ".")[2]) {
			t.Fatal("a token value appears in the logs")
		}
	}
	var allow, deny map[string]any
	for _, line := range strings.Split(strings.TrimSpace(logs), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line is not JSON: %q", line)
		}
		if rec["audit"] == "exchange" && rec["outcome"] == "allow" {
			allow = rec
		}
		if rec["audit"] == "exchange" && rec["outcome"] == "deny" {
			deny = rec
		}
	}
	sum := sha256.Sum256([]byte(r.Token))
	wantAllow := map[string]any{
		"rule": "deploy-main", "repository": "acme/dags", "repository_id": "123456", "run_id": "987",
		"actor": issuer.DefaultClaims().Actor, "token_id": r.TokenID, "token_sha256": fmt.Sprintf("%x", sum),
		"workflow_ref": "acme/dags/.github/workflows/deploy.yml@refs/heads/main",
	}
	for k, v := range wantAllow {
		if allow[k] != v {
			t.Errorf("allow record %s = %v, want %v", k, allow[k], v)
		}
	}
	if deny == nil || deny["repository_id"] != "666" || deny["reason"] == nil {
		t.Errorf("deny record: %v", deny)
	}
}

func TestHealthReadyMetrics(t *testing.T) {
	e := newEnv(t, envOptions{})
	e.exchange(mainClaims(), "")
	get := func(path string) (int, string) {
		resp, err := http.Get(e.url + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if s, _ := get("/healthz"); s != 200 {
		t.Errorf("healthz %d", s)
	}
	if s, b := get("/readyz"); s != 200 {
		t.Errorf("readyz %d %s", s, b)
	}
	s, b := get("/metrics")
	if s != 200 || !strings.Contains(b, `astro_sts_exchanges_total{outcome="allow",rule="deploy-main"} 1`) {
		t.Errorf("metrics %d:\n%s", s, b)
	}
	if s, _ := get("/nope"); s != 404 {
		t.Errorf("unknown path %d", s)
	}
	if s, b := get("/v1/exchange"); s != http.StatusMethodNotAllowed || !strings.Contains(b, "method_not_allowed") {
		t.Errorf("GET /v1/exchange: %d %s", s, b)
	}
}

// HTTPServer is what serve and the demo run: the broker's routes, with a
// bound on every phase of a connection so that a slow client cannot hold
// one open, and the server's own errors in the broker's log.
func TestHTTPServer(t *testing.T) {
	e := newEnv(t, envOptions{})
	srv := e.broker.HTTPServer()
	for name, d := range map[string]time.Duration{
		"ReadHeaderTimeout": srv.ReadHeaderTimeout, "ReadTimeout": srv.ReadTimeout,
		"WriteTimeout": srv.WriteTimeout, "IdleTimeout": srv.IdleTimeout,
	} {
		if d <= 0 {
			t.Errorf("%s is %v: unbounded", name, d)
		}
	}
	if srv.MaxHeaderBytes <= 0 || srv.ErrorLog == nil {
		t.Errorf("MaxHeaderBytes %d, ErrorLog %v", srv.MaxHeaderBytes, srv.ErrorLog)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	e.url = "http://" + ln.Addr().String()
	e.exchange(mainClaims(), "")
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, http.ErrServerClosed) {
		t.Errorf("Serve: %v", err)
	}
}

func TestRotateNotConfigured(t *testing.T) {
	e := newEnv(t, envOptions{})
	c := mainClaims()
	c.EventName = "schedule"
	status, body, _ := e.post("/v1/rotate", e.mint(c), `{"name":"airflow-ci"}`)
	if status != http.StatusNotImplemented {
		t.Fatalf("status %d %s", status, body)
	}
}

func TestMarkerRoundTrip(t *testing.T) {
	m := broker.Marker{Deadline: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), RepositoryID: "1", RunID: "2", RunAttempt: "3", Rule: "a rule & more=x"}
	got, ok := broker.ParseMarker(m.Description("human text " + strings.Repeat("x", 600)))
	if !ok {
		t.Fatal("marker lost")
	}
	if d := cmp.Diff(m, got); d != "" {
		t.Error(d)
	}
	if len(m.Description(strings.Repeat("y", 1000))) > 500 {
		t.Error("description over Astro's 500 characters")
	}
	for _, d := range []string{"", "made by hand", "astro-sts/v1?deadline=bad&repository_id=1&run_id=2", "astro-sts/v1?%zz"} {
		if _, ok := broker.ParseMarker(d); ok {
			t.Errorf("ParseMarker(%q) accepted", d)
		}
	}
}

// TestMarkerCompatible: markers written before check_run_id existed parse
// as they did, and a marker with a key this version does not know parses
// too, as markers with check_run_id do for a replica not yet updated.
func TestMarkerCompatible(t *testing.T) {
	deadline := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		name, description string
		want              broker.Marker
	}{
		{"written before check_run_id",
			"astro-sts/v1?deadline=2026-01-02T03%3A04%3A05Z&nonce=abc&repository_id=123456&rule=deploy-main&run_attempt=1&run_id=987 Short-lived token minted by astro-sts",
			broker.Marker{Deadline: deadline, RepositoryID: "123456", RunID: "987", RunAttempt: "1", Rule: "deploy-main", Nonce: "abc"}},
		{"with check_run_id",
			"astro-sts/v1?check_run_id=31337000001&deadline=2026-01-02T03%3A04%3A05Z&nonce=abc&repository_id=123456&rule=deploy-main&run_attempt=1&run_id=987 human",
			broker.Marker{Deadline: deadline, RepositoryID: "123456", RunID: "987", RunAttempt: "1", Rule: "deploy-main", Nonce: "abc", CheckRunID: "31337000001"}},
		{"with a key of a later version",
			"astro-sts/v1?deadline=2026-01-02T03%3A04%3A05Z&later=x&repository_id=123456&run_attempt=1&run_id=987",
			broker.Marker{Deadline: deadline, RepositoryID: "123456", RunID: "987", RunAttempt: "1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := broker.ParseMarker(tt.description)
			if !ok {
				t.Fatal("not parsed")
			}
			if d := cmp.Diff(tt.want, got); d != "" {
				t.Errorf("marker (-want +got):\n%s", d)
			}
			// What this version writes for it reads back the same.
			if again, ok := broker.ParseMarker(got.Description("")); !ok || !cmp.Equal(got, again) {
				t.Errorf("round trip: %+v, %v", again, ok)
			}
		})
	}
	if d := (broker.Marker{Deadline: deadline, RepositoryID: "1", RunID: "2", RunAttempt: "1"}).Description(""); strings.Contains(d, "check_run_id") {
		t.Errorf("a marker without a check run writes one: %q", d)
	}
}

// TestCheckRunID: the job's check run, when the token carries it, is in
// the token's name and marker and in the audit record; a token without it
// (older GitHub, GHES) gets neither, and the name stays as it was.
func TestCheckRunID(t *testing.T) {
	e := newEnv(t, envOptions{})
	without := mainClaims()
	without.Extra = map[string]any{"check_run_id": nil}
	tests := []struct {
		name     string
		claims   issuer.Claims
		wantName string
		wantID   string
	}{
		{"with check_run_id", mainClaims(), "astro-sts acme/dags run 987/1 job 31337000001", "31337000001"},
		{"without", without, "astro-sts acme/dags run 987/1", ""},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := e.exchange(tt.claims, "")
			tok, err := e.astroToken(r.TokenID)
			if err != nil {
				t.Fatal(err)
			}
			if tok.Name != tt.wantName {
				t.Errorf("name %q, want %q", tok.Name, tt.wantName)
			}
			m, ok := broker.ParseMarker(tok.Description)
			if !ok || m.CheckRunID != tt.wantID {
				t.Errorf("marker %+v (%v), want check run %q", m, ok, tt.wantID)
			}
			recs := e.audits("exchange")
			if len(recs) != i+1 {
				t.Fatalf("%d exchange records", len(recs))
			}
			got, present := recs[i]["check_run_id"]
			if present != (tt.wantID != "") || (present && got != tt.wantID) {
				t.Errorf("audit check_run_id = %v (present %v), want %q", got, present, tt.wantID)
			}
		})
	}
}

func FuzzParseMarker(f *testing.F) {
	f.Add("astro-sts/v1?deadline=2026-01-02T03:04:05Z&repository_id=1&run_id=2&run_attempt=1&rule=r human")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		m, ok := broker.ParseMarker(s)
		if !ok {
			return
		}
		// Whatever parses must survive a round trip.
		again, ok := broker.ParseMarker(m.Description(""))
		if !ok || !again.Deadline.Equal(m.Deadline) || again.RunID != m.RunID || again.RepositoryID != m.RepositoryID {
			t.Fatalf("round trip of %q lost data", s)
		}
	})
}

// Any workflow on GitHub can get an ID token for the broker's audience. If
// a token no rule trusts spent a place in the bounded replay cache, anyone
// could fill it and make the broker refuse every workflow (it fails closed
// when full). Only an authorized request spends its jti.
func TestDeniedTokensDoNotFillTheReplayCache(t *testing.T) {
	e := newEnv(t, envOptions{replaySize: 3})
	stranger := mainClaims()
	stranger.Repository, stranger.RepositoryID = "evil/dags", "666"
	for i := range 5 {
		status, body, _ := e.post("/v1/exchange", e.mint(stranger), "")
		if status != http.StatusForbidden {
			t.Fatalf("stranger exchange %d: %d %s, want 403", i, status, body)
		}
		status, body, _ = e.post("/v1/revoke", e.mint(stranger), `{"token_id":"clnosuchtoken"}`)
		if status != http.StatusForbidden {
			t.Fatalf("stranger revoke %d: %d %s, want 403", i, status, body)
		}
	}
	r := e.exchange(mainClaims(), "")
	// The one spent token is still refused a second time.
	tok := e.mint(mainClaims())
	if status, body, _ := e.post("/v1/exchange", tok, `{"ttl":"5m"}`); status != http.StatusOK {
		t.Fatalf("exchange: %d %s", status, body)
	}
	if status, body, _ := e.post("/v1/exchange", tok, `{"ttl":"5m"}`); status != http.StatusUnauthorized {
		t.Fatalf("replayed exchange: %d %s, want 401", status, body)
	}
	// A revoke by the run that owns the token still works.
	if status, body, _ := e.post("/v1/revoke", e.mint(mainClaims()), fmt.Sprintf(`{"token_id":%q}`, r.TokenID)); status != http.StatusNoContent {
		t.Fatalf("revoke: %d %s", status, body)
	}
}

// The reaper and the revoke endpoint find a minted token's run in its
// marker, which needs the repository id and run id. A token minted for an
// ID token without them could never be revoked nor reaped: it would live a
// whole day. The broker refuses such a token before minting anything.
func TestExchangeNeedsTheRunClaims(t *testing.T) {
	e := newEnv(t, envOptions{})
	for _, tc := range []struct {
		name  string
		extra map[string]any
	}{
		{"no run_id", map[string]any{"run_id": nil}},
		{"empty run_id", map[string]any{"run_id": ""}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := mainClaims()
			c.Extra = tc.extra
			status, body, _ := e.post("/v1/exchange", e.mint(c), "")
			if status != http.StatusUnauthorized {
				t.Fatalf("status %d, want 401: %s", status, body)
			}
			if eb := errorBody(t, body); eb.Error != brokerapi.CodeTokenInvalid || eb.Reason != brokerapi.ReasonMissingRunClaims {
				t.Errorf("body %s", body)
			}
		})
	}
	if n := len(e.emu.Tokens()); n != 1 { // the seeded organization token only
		t.Errorf("%d tokens in Astro, want 1: a token was minted that nothing can reap", n)
	}
}

// A description cut to Astro's limit never splits a character.
func TestMarkerDescriptionKeepsUTF8(t *testing.T) {
	m := broker.Marker{Deadline: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), RepositoryID: "1", RunID: "2", RunAttempt: "1", Rule: "r"}
	for pad := range 4 {
		d := m.Description(strings.Repeat("x", pad) + strings.Repeat("é", 400))
		if len(d) > 500 || !utf8.ValidString(d) {
			t.Errorf("pad %d: %d bytes, valid UTF-8 %v", pad, len(d), utf8.ValidString(d))
		}
	}
}

// failingRotator fails the way a rotation might without a result: with a
// deadline error, which would map to a retryable 503 if nothing stopped it.
type failingRotator struct{}

func (failingRotator) Rotate(context.Context, *policy.Rotation) (*rotation.Result, error) {
	return nil, fmt.Errorf("vault login: %w", context.DeadlineExceeded)
}

// A rotation that started and failed is a 502, never a status the action
// retries (429, 503): a retry would start a second rotation.
func TestRotationFailureIsNeverRetryable(t *testing.T) {
	e := newEnv(t, envOptions{rotator: failingRotator{}})
	c := mainClaims()
	c.EventName = "schedule"
	status, body, h := e.post("/v1/rotate", e.mint(c), `{"name":"airflow-ci"}`)
	if status != http.StatusBadGateway || h.Get("Retry-After") != "" {
		t.Fatalf("status %d Retry-After %q: %s", status, h.Get("Retry-After"), body)
	}
	if code, _ := errorCode(t, body); code != "rotation_failed" {
		t.Errorf("code %s", code)
	}
}

// Each failed exchange is counted under the outcome its status says.
func TestExchangeOutcomeMetrics(t *testing.T) {
	e := newEnv(t, envOptions{})
	other := mainClaims()
	other.RepositoryID = "666"
	e.post("/v1/exchange", e.mint(other), "")                 // 403
	e.post("/v1/exchange", "not-a-jwt", "")                   // 401
	e.post("/v1/exchange", e.mint(mainClaims()), `{"ttl":1}`) // 400
	e.emu.Throttle(5, time.Second)
	e.post("/v1/exchange", e.mint(mainClaims()), "") // 429 upstream
	resp, err := http.Get(e.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, want := range []string{
		`astro_sts_exchanges_total{outcome="deny",rule=""} 1`,
		`astro_sts_exchanges_total{outcome="unauthorized",rule=""} 1`,
		`astro_sts_exchanges_total{outcome="bad_request",rule=""} 1`,
		`astro_sts_exchanges_total{outcome="unavailable",rule="deploy-main"} 1`,
	} {
		if !strings.Contains(string(b), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

// valuelessAstro answers a create like Astro but without the token value.
type valuelessAstro struct{ broker.Astro }

func (v valuelessAstro) CreateToken(ctx context.Context, org string, req astro.CreateTokenRequest) (*astro.Token, error) {
	tok, err := v.Astro.CreateToken(ctx, org, req)
	if tok != nil {
		tok.Token = ""
	}
	return tok, err
}

// A token created without a value is deleted at once, not left to the reaper.
func TestCreateWithoutValueIsDiscarded(t *testing.T) {
	e := newEnv(t, envOptions{wrapAstro: func(a broker.Astro) broker.Astro { return valuelessAstro{a} }})
	status, body, _ := e.post("/v1/exchange", e.mint(mainClaims()), "")
	if status != http.StatusInternalServerError {
		t.Fatalf("status %d: %s", status, body)
	}
	if n := len(e.emu.Tokens()); n != 1 {
		t.Errorf("%d tokens in Astro, want only the organization token", n)
	}
}

// A path that is not clean is a 404 with no Location: ServeMux would
// redirect it to the clean path, echoing the caller's whole query.
func TestUncleanPathsAreNotRedirected(t *testing.T) {
	e := newEnv(t, envOptions{})
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, p := range []string{"/v1//exchange", "//v1/exchange", "/v1/./exchange", "/v1/x/../exchange", "/v1/exchange/.", "/healthz/"} {
		t.Run(p, func(t *testing.T) {
			resp, err := client.Post(e.url+p+"?q="+strings.Repeat("x", 100), "application/json", nil)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusNotFound || resp.Header.Get("Location") != "" {
				t.Errorf("%d, Location %q; want 404 and none", resp.StatusCode, resp.Header.Get("Location"))
			}
		})
	}
}
