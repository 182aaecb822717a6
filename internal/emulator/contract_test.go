package emulator_test

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"maps"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/astro-sts/astro-sts/internal/astro"
	"github.com/astro-sts/astro-sts/internal/emulator"
)

// rfc3339Seconds is the timestamp form of the facts file: UTC, whole seconds.
var rfc3339Seconds = regexp.MustCompile(`^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$`)

var cuid = regexp.MustCompile(`^cl[a-z0-9]{23}$`)

func keys(m map[string]any) []string { return slices.Sorted(maps.Keys(m)) }

// TestContractStatusCodes pins the success codes of every token endpoint:
// 200 everywhere (create included, not 201) and 204 with an empty body for
// delete.
func TestContractStatusCodes(t *testing.T) {
	e := start(t, emulator.Config{})
	tok := e.create(astro.CreateTokenRequest{Name: "status", Role: astro.RoleOrganizationMember, Scope: astro.ScopeOrganization})
	p := e.tokensPath() + "/" + tok.ID
	ws := e.emu.WorkspaceIDs()[0]
	tests := []struct {
		name, method, path string
		body               any
		want               int
	}{
		{"list", "GET", e.tokensPath(), nil, 200},
		{"get", "GET", p, nil, 200},
		{"update", "POST", p, astro.UpdateTokenRequest{Name: "renamed"}, 200},
		{"set roles", "POST", p + "/roles", astro.SetRolesRequest{Roles: []astro.TokenRole{
			{EntityID: e.org, EntityType: astro.EntityOrganization, Role: astro.RoleOrganizationMember},
			{EntityID: ws, EntityType: astro.EntityWorkspace, Role: astro.RoleWorkspaceAuthor},
		}}, 200},
		{"rotate", "POST", p + "/rotate", nil, 200},
		{"organizations", "GET", "/organizations", nil, 200},
		{"workspaces", "GET", "/organizations/" + e.org + "/workspaces", nil, 200},
		{"delete", "DELETE", p, nil, 204},
		{"get deleted", "GET", p, nil, 404},
		{"delete again", "DELETE", p, nil, 404},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var r response
			if tt.body != nil {
				r = e.doJSON(tt.method, tt.path, e.owner, tt.body)
			} else {
				r = e.do(tt.method, tt.path, e.owner, nil)
			}
			if r.status != tt.want {
				t.Fatalf("status = %d, want %d: %s", r.status, tt.want, r.body)
			}
			if r.header.Get(emulator.RequestIDHeader) == "" {
				t.Error("no request id header")
			}
			if r.status == 204 && len(r.body) != 0 {
				t.Errorf("204 with a body: %q", r.body)
			}
		})
	}
}

// TestContractTokenShape pins the ApiToken field names, which fields are
// present when, and the timestamp format.
func TestContractTokenShape(t *testing.T) {
	e := start(t, emulator.Config{})
	ws := e.emu.WorkspaceIDs()[0]
	r := e.doJSON("POST", e.tokensPath(), e.owner, astro.CreateTokenRequest{
		Name: "shape", Description: "d", Role: astro.RoleWorkspaceOwner, Scope: astro.ScopeWorkspace,
		EntityID: ws, TokenExpiryPeriodInDays: intp(30),
	})
	created := r.json(t)
	always := []string{"createdAt", "createdBy", "description", "id", "name", "roles", "scope", "shortToken", "startAt", "updatedAt", "updatedBy"}
	withExpiry := append([]string{"endAt", "expiryPeriodInDays", "token"}, always...)
	slices.Sort(withExpiry)
	if diff := cmp.Diff(withExpiry, keys(created)); diff != "" {
		t.Errorf("create fields (-want +got):\n%s", diff)
	}
	id, _ := created["id"].(string)
	if !cuid.MatchString(id) {
		t.Errorf("id %q is not cuid-like", id)
	}
	for _, k := range []string{"createdAt", "updatedAt", "startAt", "endAt"} {
		if s, _ := created[k].(string); !rfc3339Seconds.MatchString(s) {
			t.Errorf("%s = %q, want RFC 3339 UTC with whole seconds", k, s)
		}
	}
	if got, want := created["endAt"], "2026-02-01T03:04:05Z"; got != want {
		t.Errorf("endAt = %v, want %v (startAt + 30 days, truncated)", got, want)
	}
	if diff := cmp.Diff(map[string]any{"entityId": ws, "entityType": "WORKSPACE", "role": "WORKSPACE_OWNER"},
		created["roles"].([]any)[0]); diff != "" {
		t.Errorf("roles[0] (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"apiTokenName", "id", "subjectType"}, keys(created["createdBy"].(map[string]any))); diff != "" {
		t.Errorf("createdBy fields (-want +got):\n%s", diff)
	}

	got := e.do("GET", e.tokensPath()+"/"+id, e.owner, nil).json(t)
	if _, ok := got["token"]; ok {
		t.Error("GET shows the value")
	}

	never := e.doJSON("POST", e.tokensPath(), e.owner, astro.CreateTokenRequest{Name: "never", Role: astro.RoleOrganizationMember, Scope: astro.ScopeOrganization}).json(t)
	for _, k := range []string{"endAt", "expiryPeriodInDays"} {
		if _, ok := never[k]; ok {
			t.Errorf("a token that never expires has %s", k)
		}
	}

	list := e.do("GET", e.tokensPath(), e.owner, nil).json(t)
	if diff := cmp.Diff([]string{"limit", "offset", "tokens", "totalCount"}, keys(list)); diff != "" {
		t.Errorf("list fields (-want +got):\n%s", diff)
	}
	for _, tok := range list["tokens"].([]any) {
		if _, ok := tok.(map[string]any)["token"]; ok {
			t.Error("list shows a value")
		}
	}
	if list["limit"] != 20.0 || list["offset"] != 0.0 {
		t.Errorf("default limit/offset = %v/%v, want 20/0", list["limit"], list["offset"])
	}

	roles := e.doJSON("POST", e.tokensPath()+"/"+never["id"].(string)+"/roles", e.owner, astro.SetRolesRequest{Roles: []astro.TokenRole{
		{EntityID: e.org, EntityType: astro.EntityOrganization, Role: astro.RoleOrganizationMember},
		{EntityID: ws, EntityType: astro.EntityWorkspace, Role: astro.RoleWorkspaceOperator},
	}}).json(t)
	wantRoles := map[string]any{
		"organizationRole": "ORGANIZATION_MEMBER",
		"workspaceRoles":   []any{map[string]any{"workspaceId": ws, "role": "WORKSPACE_OPERATOR"}},
		"deploymentRoles":  []any{},
	}
	if diff := cmp.Diff(wantRoles, roles); diff != "" {
		t.Errorf("SubjectRoles (-want +got):\n%s", diff)
	}

	orgs := e.do("GET", "/organizations?limit=100&offset=0", e.owner, nil).json(t)
	org := orgs["organizations"].([]any)[0].(map[string]any)
	if org["product"] != "HOSTED" || org["id"] != e.org || org["name"] != "astro-sts-emulator" {
		t.Errorf("organization = %v", org)
	}
}

// TestContractJWTClaims pins the token value: a compact EdDSA JWS with the
// claims the astro CLI reads.
func TestContractJWTClaims(t *testing.T) {
	e := start(t, emulator.Config{})
	ws, dep := e.emu.WorkspaceIDs()[1], e.emu.DeploymentIDs()[0]
	now := e.clock.Now().Truncate(time.Second)
	tests := []struct {
		name  string
		req   astro.CreateTokenRequest
		perms []string
		exp   time.Time
	}{
		{"organization, never expires",
			astro.CreateTokenRequest{Name: "o", Role: astro.RoleOrganizationOwner, Scope: astro.ScopeOrganization},
			[]string{"organizationId:" + e.org}, now.Add(3650 * 24 * time.Hour)},
		{"workspace, 7 days",
			astro.CreateTokenRequest{Name: "w", Role: astro.RoleWorkspaceMember, Scope: astro.ScopeWorkspace, EntityID: ws, TokenExpiryPeriodInDays: intp(7)},
			[]string{"organizationId:" + e.org, "workspaceId:" + ws}, now.Add(7 * 24 * time.Hour)},
		{"deployment, 1 day",
			astro.CreateTokenRequest{Name: "d", Role: astro.RoleDeploymentAdmin, Scope: astro.ScopeDeployment, EntityID: dep, TokenExpiryPeriodInDays: intp(1)},
			[]string{"organizationId:" + e.org, "deploymentId:" + dep}, now.Add(24 * time.Hour)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok := e.create(tt.req)
			parts := strings.Split(tok.Token, ".")
			if len(parts) != 3 {
				t.Fatalf("value has %d parts", len(parts))
			}
			var header map[string]any
			mustDecode(t, parts[0], &header)
			if header["alg"] != "EdDSA" || header["typ"] != "JWT" || header["kid"] == "" {
				t.Errorf("header = %v", header)
			}
			sig, err := base64.RawURLEncoding.DecodeString(parts[2])
			if err != nil || !ed25519.Verify(e.emu.PublicKey(), []byte(parts[0]+"."+parts[1]), sig) {
				t.Error("signature does not verify with the emulator's key")
			}
			c, err := emulator.ParseClaims(tok.Token)
			if err != nil {
				t.Fatal(err)
			}
			want := emulator.Claims{
				Issuer: emulator.Issuer, Subject: tok.ID, Audience: emulator.Audience,
				IssuedAt: now.Unix(), NotBefore: now.Unix(), Expiry: tt.exp.Unix(), ID: c.ID,
				OrgID: e.org, Scope: string(tt.req.Scope), Permissions: tt.perms, Version: "1",
				IsAstronomerGenerated: true, KeyID: header["kid"].(string), APITokenID: tok.ID,
			}
			if diff := cmp.Diff(want, c); diff != "" {
				t.Errorf("claims (-want +got):\n%s", diff)
			}
			if c.ID == "" {
				t.Error("no jti")
			}
			for _, p := range c.Permissions {
				if !strings.Contains(p, ":") {
					t.Errorf("permission %q has no ':' (the CLI would crash)", p)
				}
			}
			// The raw payload must use exactly the CLI's claim names.
			var raw map[string]any
			mustDecode(t, parts[1], &raw)
			wantKeys := []string{"apiTokenId", "aud", "exp", "iat", "isAstronomerGenerated", "iss", "jti", "kid", "nbf", "org_id", "permissions", "scope", "sub", "version"}
			if diff := cmp.Diff(wantKeys, keys(raw)); diff != "" {
				t.Errorf("claim names (-want +got):\n%s", diff)
			}
		})
	}
}

func mustDecode(t *testing.T, part string, v any) {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(part)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatal(err)
	}
}

// TestContractErrors pins the error body (statusCode, message, requestId,
// fieldErrors on 400) for every class of bad input. None may panic or get
// a 5xx.
func TestContractErrors(t *testing.T) {
	e := start(t, emulator.Config{})
	tokens := e.tokensPath()
	ws := e.emu.WorkspaceIDs()[0]
	victim := e.create(astro.CreateTokenRequest{Name: "victim", Role: astro.RoleOrganizationMember, Scope: astro.ScopeOrganization})
	vp := tokens + "/" + victim.ID
	header, payload, _ := strings.Cut(e.owner, ".")
	forged := header + "." + payload + "." + base64.RawURLEncoding.EncodeToString(make([]byte, 64))

	tests := []struct {
		name, method, path, token, body string
		want                            int
		fields                          []string // fieldErrors' field names, in order
	}{
		{name: "no bearer", method: "GET", path: tokens, want: 401},
		{name: "not a JWT", method: "GET", path: tokens, token: "abc", want: 401},
		{name: "forged signature", method: "GET", path: tokens, token: forged, want: 401},
		{name: "two dots only", method: "GET", path: tokens, token: "..", want: 401},
		{name: "unknown path", method: "GET", path: "/nope", token: e.owner, want: 404},
		{name: "trailing slash", method: "GET", path: tokens + "/", token: e.owner, want: 404},
		{name: "wrong method", method: "PUT", path: tokens, token: e.owner, want: 405},
		{name: "wrong method on rotate", method: "GET", path: vp + "/rotate", token: e.owner, want: 405},
		{name: "other organization", method: "GET", path: "/organizations/clxxxxxxxxxxxxxxxxxxxxxxx/tokens", token: e.owner, want: 403},
		{name: "unknown token", method: "GET", path: tokens + "/clnotthereatallxxxxxxxxxx", token: e.owner, want: 404},
		{name: "malformed JSON", method: "POST", path: tokens, token: e.owner, body: `{"name":`, want: 400},
		{name: "not an object", method: "POST", path: tokens, token: e.owner, body: `[1,2]`, want: 400},
		{name: "empty body", method: "POST", path: tokens, token: e.owner, body: ``, want: 400},
		{name: "trailing data", method: "POST", path: tokens, token: e.owner,
			body: `{"name":"a","role":"ORGANIZATION_MEMBER","scope":"ORGANIZATION"} {}`, want: 400},
		{name: "unknown field", method: "POST", path: tokens, token: e.owner,
			body: `{"name":"a","role":"ORGANIZATION_MEMBER","scope":"ORGANIZATION","type":"x"}`, want: 400, fields: []string{"type"}},
		{name: "wrong type", method: "POST", path: tokens, token: e.owner, body: `{"name":5}`, want: 400, fields: []string{"name"}},
		{name: "missing everything", method: "POST", path: tokens, token: e.owner, body: `{}`, want: 400,
			fields: []string{"name", "scope", "role"}},
		{name: "name too long, description too long", method: "POST", path: tokens, token: e.owner,
			body: `{"name":"` + strings.Repeat("n", 257) + `","description":"` + strings.Repeat("d", 501) + `","role":"ORGANIZATION_MEMBER","scope":"ORGANIZATION"}`,
			want: 400, fields: []string{"name", "description"}},
		{name: "bad scope", method: "POST", path: tokens, token: e.owner, body: `{"name":"a","role":"ORGANIZATION_MEMBER","scope":"TEAM"}`,
			want: 400, fields: []string{"scope"}},
		{name: "role not for scope", method: "POST", path: tokens, token: e.owner,
			body: `{"name":"a","role":"WORKSPACE_OWNER","scope":"ORGANIZATION"}`, want: 400, fields: []string{"role"}},
		{name: "workspace without entityId", method: "POST", path: tokens, token: e.owner,
			body: `{"name":"a","role":"WORKSPACE_OWNER","scope":"WORKSPACE"}`, want: 400, fields: []string{"entityId"}},
		{name: "unknown workspace", method: "POST", path: tokens, token: e.owner,
			body: `{"name":"a","role":"WORKSPACE_OWNER","scope":"WORKSPACE","entityId":"clnope"}`, want: 400, fields: []string{"entityId"}},
		{name: "unknown deployment", method: "POST", path: tokens, token: e.owner,
			body: `{"name":"a","role":"DEPLOYMENT_ADMIN","scope":"DEPLOYMENT","entityId":"clnope"}`, want: 400, fields: []string{"entityId"}},
		{name: "expiry 0", method: "POST", path: tokens, token: e.owner,
			body: `{"name":"a","role":"ORGANIZATION_MEMBER","scope":"ORGANIZATION","tokenExpiryPeriodInDays":0}`, want: 400, fields: []string{"tokenExpiryPeriodInDays"}},
		{name: "expiry 3651", method: "POST", path: tokens, token: e.owner,
			body: `{"name":"a","role":"ORGANIZATION_MEMBER","scope":"ORGANIZATION","tokenExpiryPeriodInDays":3651}`, want: 400, fields: []string{"tokenExpiryPeriodInDays"}},
		{name: "expiry not an integer", method: "POST", path: tokens, token: e.owner,
			body: `{"name":"a","role":"ORGANIZATION_MEMBER","scope":"ORGANIZATION","tokenExpiryPeriodInDays":1.5}`, want: 400, fields: []string{"tokenExpiryPeriodInDays"}},
		{name: "expiry huge", method: "POST", path: tokens, token: e.owner,
			body: `{"name":"a","role":"ORGANIZATION_MEMBER","scope":"ORGANIZATION","tokenExpiryPeriodInDays":1e300}`, want: 400, fields: []string{"tokenExpiryPeriodInDays"}},
		{name: "bad kind", method: "POST", path: tokens, token: e.owner,
			body: `{"name":"a","role":"ORGANIZATION_MEMBER","scope":"ORGANIZATION","kind":"SPECIAL"}`, want: 400, fields: []string{"kind"}},
		{name: "body over 1 MiB", method: "POST", path: tokens, token: e.owner,
			body: `{"name":"` + strings.Repeat("a", emulator.MaxBodyBytes) + `"}`, want: 413},
		{name: "limit 0", method: "GET", path: tokens + "?limit=0", token: e.owner, want: 400, fields: []string{"limit"}},
		{name: "limit 1001", method: "GET", path: tokens + "?limit=1001", token: e.owner, want: 400, fields: []string{"limit"}},
		{name: "limit negative", method: "GET", path: tokens + "?limit=-1", token: e.owner, want: 400, fields: []string{"limit"}},
		{name: "limit not a number", method: "GET", path: tokens + "?limit=ten", token: e.owner, want: 400, fields: []string{"limit"}},
		{name: "limit float", method: "GET", path: tokens + "?limit=1.0", token: e.owner, want: 400, fields: []string{"limit"}},
		{name: "limit repeated", method: "GET", path: tokens + "?limit=1&limit=2", token: e.owner, want: 400, fields: []string{"limit"}},
		{name: "offset negative and absurd limit", method: "GET", path: tokens + "?offset=-5&limit=99999999999999999999999", token: e.owner,
			want: 400, fields: []string{"offset", "limit"}},
		{name: "malformed query", method: "GET", path: tokens + "?limit=%zz", token: e.owner, want: 400},
		{name: "bad sort field", method: "GET", path: tokens + "?sorts=id:asc", token: e.owner, want: 400, fields: []string{"sorts"}},
		{name: "sort without direction", method: "GET", path: tokens + "?sorts=name", token: e.owner, want: 400, fields: []string{"sorts"}},
		{name: "bad bool", method: "GET", path: tokens + "?includeOnlyOrganizationTokens=yes", token: e.owner, want: 400,
			fields: []string{"includeOnlyOrganizationTokens"}},
		{name: "orgs limit", method: "GET", path: "/organizations?limit=0", token: e.owner, want: 400, fields: []string{"limit"}},
		{name: "update without name", method: "POST", path: vp, token: e.owner, body: `{"description":"x"}`, want: 400, fields: []string{"name"}},
		{name: "update unknown token", method: "POST", path: tokens + "/clnotthereatallxxxxxxxxxx", token: e.owner, body: `{"name":"x"}`, want: 404},
		{name: "roles empty", method: "POST", path: vp + "/roles", token: e.owner, body: `{"roles":[]}`, want: 400, fields: []string{"roles"}},
		{name: "roles missing", method: "POST", path: vp + "/roles", token: e.owner, body: `{}`, want: 400, fields: []string{"roles"}},
		{name: "roles bad entries", method: "POST", path: vp + "/roles", token: e.owner,
			body: `{"roles":[{"entityId":"` + e.org + `","entityType":"ORGANIZATION","role":"WORKSPACE_OWNER"},` +
				`{"entityId":"` + ws + `","entityType":"WORKSPACE","role":"WORKSPACE_OWNER"},` +
				`{"entityId":"` + ws + `","entityType":"WORKSPACE","role":"WORKSPACE_MEMBER"},` +
				`{"entityId":"x","entityType":"TEAM","role":"X"}]}`,
			want: 400, fields: []string{"roles[0].role", "roles[2]", "roles[3].entityType"}},
		{name: "roles without organization role", method: "POST", path: vp + "/roles", token: e.owner,
			body: `{"roles":[{"entityId":"` + ws + `","entityType":"WORKSPACE","role":"WORKSPACE_OWNER"}]}`, want: 400, fields: []string{"roles"}},
		{name: "roles unknown field", method: "POST", path: vp + "/roles", token: e.owner,
			body: `{"roles":[{"entityId":"` + e.org + `","entityType":"ORGANIZATION","role":"ORGANIZATION_OWNER","extra":1}]}`, want: 400, fields: []string{"extra"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var body []byte
			if tt.method == "POST" {
				body = []byte(tt.body)
			}
			r := e.do(tt.method, tt.path, tt.token, body)
			if r.status != tt.want {
				t.Fatalf("status = %d, want %d: %.300s", r.status, tt.want, r.body)
			}
			eb := r.errorBody(t)
			if eb.StatusCode != tt.want || eb.Message == "" || eb.RequestID == "" || eb.RequestID != r.header.Get(emulator.RequestIDHeader) {
				t.Errorf("error body = %+v, request id header %q", eb, r.header.Get(emulator.RequestIDHeader))
			}
			var fields []string
			for _, f := range eb.FieldErrors {
				fields = append(fields, f.Field)
				if f.Code == "" || f.Message == "" {
					t.Errorf("field error without code or message: %+v", f)
				}
			}
			if diff := cmp.Diff(tt.fields, fields); diff != "" {
				t.Errorf("fieldErrors (-want +got):\n%s", diff)
			}
			if tt.want == 405 && r.header.Get("Allow") == "" {
				t.Error("405 without Allow")
			}
			if strings.Contains(string(r.body), e.owner) {
				t.Error("the error body repeats the bearer token")
			}
		})
	}
	// None of the refused creates may have created anything.
	if n := len(e.emu.Tokens()); n != 2 {
		t.Errorf("%d tokens after refused requests, want 2 (owner, victim)", n)
	}
}
