package emulator_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/astro-sts/astro-sts/internal/astro"
	"github.com/astro-sts/astro-sts/internal/emulator"
	"github.com/astro-sts/astro-sts/internal/testkit/testwait"
)

func TestNewRefusesBadConfig(t *testing.T) {
	tests := []struct {
		name string
		cfg  emulator.Config
	}{
		{"negative workspaces", emulator.Config{Workspaces: -1}},
		{"too many workspaces", emulator.Config{Workspaces: emulator.MaxWorkspaces + 1}},
		{"negative latency", emulator.Config{Latency: -time.Second}},
		{"negative create delay", emulator.Config{CreateDelay: -time.Second}},
		{"error rate above 1", emulator.Config{ErrorRate: 1.5}},
		{"negative error rate", emulator.Config{ErrorRate: -0.1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := emulator.New(tt.cfg); !errors.Is(err, emulator.ErrInvalidConfig) {
				t.Errorf("New = %v, want ErrInvalidConfig", err)
			}
		})
	}
}

func TestSeed(t *testing.T) {
	e := start(t, emulator.Config{Workspaces: 3})
	if got := len(e.emu.WorkspaceIDs()); got != 3 {
		t.Fatalf("%d workspaces, want 3", got)
	}
	if got := len(e.emu.DeploymentIDs()); got != 3 {
		t.Fatalf("%d deployments, want 3", got)
	}
	for _, id := range append(append([]string{e.org}, e.emu.WorkspaceIDs()...), e.emu.DeploymentIDs()...) {
		if !cuid.MatchString(id) {
			t.Errorf("id %q is not cuid-like", id)
		}
	}
	toks := e.emu.Tokens()
	if len(toks) != 1 || toks[0].Scope != astro.ScopeOrganization || toks[0].EndAt != nil ||
		toks[0].Roles[0] != (astro.TokenRole{EntityID: e.org, EntityType: astro.EntityOrganization, Role: astro.RoleOrganizationOwner}) {
		t.Errorf("seeded tokens = %+v", toks)
	}
	if toks[0].Token != "" {
		t.Error("Tokens() shows a value")
	}
	var page astro.WorkspacesPage
	if err := json.Unmarshal(e.do("GET", "/organizations/"+e.org+"/workspaces", e.owner, nil).body, &page); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, w := range page.Workspaces {
		got = append(got, w.ID)
		if w.OrganizationID != e.org {
			t.Errorf("workspace %s has organizationId %q", w.ID, w.OrganizationID)
		}
	}
	if diff := cmp.Diff(e.emu.WorkspaceIDs(), got); diff != "" || page.TotalCount != 3 {
		t.Errorf("workspaces (-want +got):\n%s\ntotalCount %d", diff, page.TotalCount)
	}

	// The same seed gives the same ids and the same owner value.
	a, _ := emulator.New(emulator.Config{Seed: 7, Now: e.clock.Now})
	b, _ := emulator.New(emulator.Config{Seed: 7, Now: e.clock.Now})
	if a.OrganizationID() != b.OrganizationID() || a.OrganizationToken() != b.OrganizationToken() {
		t.Error("Seed does not make the emulator reproducible")
	}
}

// TestValueLifecycle: a rotated, deleted or expired value gets 401 at
// once; rotation keeps the record.
func TestValueLifecycle(t *testing.T) {
	e := start(t, emulator.Config{})
	ws := e.emu.WorkspaceIDs()[0]
	list := "/organizations/" + e.org + "/tokens?workspaceId=" + ws

	tok := e.create(astro.CreateTokenRequest{Name: "life", Description: "keep me", Role: astro.RoleWorkspaceOwner,
		Scope: astro.ScopeWorkspace, EntityID: ws, TokenExpiryPeriodInDays: intp(2)})
	if r := e.do("GET", list, tok.Token, nil); r.status != 200 {
		t.Fatalf("fresh value: %d %s", r.status, r.body)
	}
	e.clock.Advance(90 * time.Second)
	var used astro.Token
	json.Unmarshal(e.do("GET", e.tokensPath()+"/"+tok.ID, e.owner, nil).body, &used)
	if used.LastUsedAt == nil || !used.LastUsedAt.Equal(tok.CreatedAt) {
		t.Errorf("lastUsedAt = %v, want %v", used.LastUsedAt, tok.CreatedAt)
	}

	r := e.do("POST", e.tokensPath()+"/"+tok.ID+"/rotate", e.owner, nil)
	var rotated astro.Token
	if err := json.Unmarshal(r.body, &rotated); err != nil || r.status != 200 {
		t.Fatalf("rotate: %d %s", r.status, r.body)
	}
	if rotated.Token == "" || rotated.Token == tok.Token {
		t.Fatal("rotate did not return a new value")
	}
	if rotated.ID != tok.ID || rotated.Name != tok.Name || rotated.Description != tok.Description ||
		!cmp.Equal(rotated.Roles, tok.Roles) || !rotated.EndAt.Equal(*tok.EndAt) || !rotated.StartAt.Equal(tok.StartAt) {
		t.Errorf("rotate changed the record:\nbefore %+v\nafter  %+v", tok, rotated)
	}
	if rotated.LastRotatedAt == nil || !rotated.LastRotatedAt.Equal(e.clock.Now().Truncate(time.Second)) {
		t.Errorf("lastRotatedAt = %v", rotated.LastRotatedAt)
	}
	if r := e.do("GET", list, tok.Token, nil); r.status != 401 {
		t.Errorf("old value after rotate: %d, want 401", r.status)
	}
	if r := e.do("GET", list, rotated.Token, nil); r.status != 200 {
		t.Errorf("new value after rotate: %d %s", r.status, r.body)
	}
	c, _ := emulator.ParseClaims(rotated.Token)
	if c.Expiry != tok.EndAt.Unix() {
		t.Errorf("rotated exp = %d, want endAt %d", c.Expiry, tok.EndAt.Unix())
	}

	// Expiry: endAt <= now is 401.
	e.clock.Advance(2*24*time.Hour - 90*time.Second - time.Second)
	if r := e.do("GET", list, rotated.Token, nil); r.status != 200 {
		t.Errorf("one second before endAt: %d", r.status)
	}
	e.clock.Advance(time.Second)
	if r := e.do("GET", list, rotated.Token, nil); r.status != 401 || !strings.Contains(string(r.body), "expired") {
		t.Errorf("at endAt: %d %s, want 401 expired", r.status, r.body)
	}

	// Delete: 401 at once, and the record is gone.
	other := e.create(astro.CreateTokenRequest{Name: "gone", Role: astro.RoleWorkspaceOwner, Scope: astro.ScopeWorkspace, EntityID: ws})
	if r := e.do("DELETE", e.tokensPath()+"/"+other.ID, other.Token, nil); r.status != 204 {
		t.Fatalf("self delete: %d %s", r.status, r.body)
	}
	if r := e.do("GET", list, other.Token, nil); r.status != 401 {
		t.Errorf("deleted value: %d, want 401", r.status)
	}
	for _, tk := range e.emu.Tokens() {
		if tk.ID == other.ID {
			t.Error("deleted token still in Tokens()")
		}
	}
}

// TestAuthorization pins the emulator's permission model: who may do what
// to which token.
func TestAuthorization(t *testing.T) {
	e := start(t, emulator.Config{})
	ws0, ws1 := e.emu.WorkspaceIDs()[0], e.emu.WorkspaceIDs()[1]
	dep0 := e.emu.DeploymentIDs()[0]

	wsOwner := e.create(astro.CreateTokenRequest{Name: "ws0 owner", Role: astro.RoleWorkspaceOwner, Scope: astro.ScopeWorkspace, EntityID: ws0})
	wsMember := e.create(astro.CreateTokenRequest{Name: "ws0 member", Role: astro.RoleWorkspaceMember, Scope: astro.ScopeWorkspace, EntityID: ws0})
	depTok := e.create(astro.CreateTokenRequest{Name: "dep0", Role: astro.RoleDeploymentAdmin, Scope: astro.ScopeDeployment, EntityID: dep0})
	orgMember := e.create(astro.CreateTokenRequest{Name: "org member", Role: astro.RoleOrganizationMember, Scope: astro.ScopeOrganization})
	if r := e.doJSON("POST", e.tokensPath()+"/"+orgMember.ID+"/roles", e.owner, astro.SetRolesRequest{Roles: []astro.TokenRole{
		{EntityID: e.org, EntityType: astro.EntityOrganization, Role: astro.RoleOrganizationMember},
		{EntityID: ws0, EntityType: astro.EntityWorkspace, Role: astro.RoleWorkspaceOwner},
	}}); r.status != 200 {
		t.Fatalf("set roles: %d %s", r.status, r.body)
	}
	target0 := e.create(astro.CreateTokenRequest{Name: "target ws0", Role: astro.RoleWorkspaceMember, Scope: astro.ScopeWorkspace, EntityID: ws0})
	target1 := e.create(astro.CreateTokenRequest{Name: "target ws1", Role: astro.RoleWorkspaceMember, Scope: astro.ScopeWorkspace, EntityID: ws1})
	targetOrg := e.create(astro.CreateTokenRequest{Name: "target org", Role: astro.RoleOrganizationMember, Scope: astro.ScopeOrganization})

	tp := e.tokensPath()
	createWS := func(ws string) string {
		return fmt.Sprintf(`{"name":"n","role":"WORKSPACE_MEMBER","scope":"WORKSPACE","entityId":%q}`, ws)
	}
	tests := []struct {
		name          string
		caller        astro.Token
		method, path  string
		body          string
		want          int
		wantOrgMember int // the same request by the org member with WORKSPACE_OWNER on ws0
	}{
		{"list all", wsOwner, "GET", tp, "", 403, 403},
		{"list own workspace", wsOwner, "GET", tp + "?workspaceId=" + ws0, "", 200, 200},
		{"list own deployment", wsOwner, "GET", tp + "?deploymentId=" + dep0, "", 200, 200},
		{"list other workspace", wsOwner, "GET", tp + "?workspaceId=" + ws1, "", 403, 403},
		{"get own workspace token", wsOwner, "GET", tp + "/" + target0.ID, "", 200, 200},
		{"get other workspace token", wsOwner, "GET", tp + "/" + target1.ID, "", 403, 403},
		{"get org token without workspace role", wsOwner, "GET", tp + "/" + targetOrg.ID, "", 403, 403},
		{"create in own workspace", wsOwner, "POST", tp, createWS(ws0), 200, 200},
		{"create in other workspace", wsOwner, "POST", tp, createWS(ws1), 403, 403},
		{"create org token", wsOwner, "POST", tp, `{"name":"n","role":"ORGANIZATION_MEMBER","scope":"ORGANIZATION"}`, 403, 403},
		{"create deployment token in own workspace", wsOwner, "POST", tp,
			fmt.Sprintf(`{"name":"n","role":"DEPLOYMENT_ADMIN","scope":"DEPLOYMENT","entityId":%q}`, dep0), 200, 200},
		{"update own workspace token", wsOwner, "POST", tp + "/" + target0.ID, `{"name":"renamed"}`, 200, 200},
		{"update other workspace token", wsOwner, "POST", tp + "/" + target1.ID, `{"name":"renamed"}`, 403, 403},
		{"update org token", wsOwner, "POST", tp + "/" + targetOrg.ID, `{"name":"renamed"}`, 403, 403},
		{"move token to other workspace", wsOwner, "POST", tp + "/" + target0.ID + "/roles",
			fmt.Sprintf(`{"roles":[{"entityId":%q,"entityType":"WORKSPACE","role":"WORKSPACE_OWNER"}]}`, ws1), 400, 400},
		{"promote in own workspace", wsOwner, "POST", tp + "/" + target0.ID + "/roles",
			fmt.Sprintf(`{"roles":[{"entityId":%q,"entityType":"WORKSPACE","role":"WORKSPACE_OPERATOR"}]}`, ws0), 200, 200},
		{"rotate other workspace token", wsOwner, "POST", tp + "/" + target1.ID + "/rotate", "", 403, 403},
		{"workspaces", wsOwner, "GET", "/organizations/" + e.org + "/workspaces", "", 200, 200},
		{"organizations", wsOwner, "GET", "/organizations", "", 200, 200},
	}
	for _, tt := range tests {
		for _, caller := range []struct {
			label string
			tok   astro.Token
			want  int
		}{{"workspace owner", wsOwner, tt.want}, {"org member", orgMember, tt.wantOrgMember}} {
			t.Run(caller.label+"/"+tt.name, func(t *testing.T) {
				var body []byte
				if tt.method == "POST" {
					body = []byte(tt.body)
				}
				if r := e.do(tt.method, tt.path, caller.tok.Token, body); r.status != caller.want {
					t.Errorf("status = %d, want %d: %s", r.status, caller.want, r.body)
				}
			})
		}
	}

	// A Workspace member reads but does not change; a Deployment token
	// manages no tokens at all.
	weaker := []struct {
		name         string
		caller       astro.Token
		method, path string
		body         string
		want         int
	}{
		{"member lists own workspace", wsMember, "GET", tp + "?workspaceId=" + ws0, "", 200},
		{"member reads own workspace token", wsMember, "GET", tp + "/" + target0.ID, "", 200},
		{"member creates", wsMember, "POST", tp, createWS(ws0), 403},
		{"member rotates", wsMember, "POST", tp + "/" + target0.ID + "/rotate", "", 403},
		{"member deletes", wsMember, "DELETE", tp + "/" + target0.ID, "", 403},
		{"deployment token lists its deployment", depTok, "GET", tp + "?deploymentId=" + dep0, "", 403},
		{"deployment token reads itself", depTok, "GET", tp + "/" + depTok.ID, "", 403},
		{"deployment token sees no workspace", depTok, "GET", "/organizations/" + e.org + "/workspaces", "", 200},
	}
	for _, tt := range weaker {
		t.Run(tt.name, func(t *testing.T) {
			var body []byte
			if tt.method == "POST" {
				body = []byte(tt.body)
			}
			if r := e.do(tt.method, tt.path, tt.caller.Token, body); r.status != tt.want {
				t.Errorf("status = %d, want %d: %s", r.status, tt.want, r.body)
			}
		})
	}
	var wsPage astro.WorkspacesPage
	json.Unmarshal(e.do("GET", "/organizations/"+e.org+"/workspaces", wsOwner.Token, nil).body, &wsPage)
	if wsPage.TotalCount != 1 || wsPage.Workspaces[0].ID != ws0 {
		t.Errorf("a Workspace token sees workspaces %+v, want only its own", wsPage)
	}
}

// TestList pins filtering, sorting and paging of GET /tokens.
func TestList(t *testing.T) {
	e := start(t, emulator.Config{})
	ws0, ws1 := e.emu.WorkspaceIDs()[0], e.emu.WorkspaceIDs()[1]
	dep1 := e.emu.DeploymentIDs()[1]
	mk := func(name string, req astro.CreateTokenRequest) string {
		e.clock.Advance(time.Second)
		req.Name = name
		return e.create(req).ID
	}
	owner := e.emu.Tokens()[0].ID // named "astro-sts-emulator owner"
	c := mk("charlie", astro.CreateTokenRequest{Role: astro.RoleWorkspaceOwner, Scope: astro.ScopeWorkspace, EntityID: ws0})
	a := mk("alpha", astro.CreateTokenRequest{Role: astro.RoleWorkspaceOwner, Scope: astro.ScopeWorkspace, EntityID: ws1})
	d := mk("delta", astro.CreateTokenRequest{Role: astro.RoleDeploymentAdmin, Scope: astro.ScopeDeployment, EntityID: dep1})
	b := mk("bravo", astro.CreateTokenRequest{Role: astro.RoleOrganizationMember, Scope: astro.ScopeOrganization})
	if r := e.doJSON("POST", e.tokensPath()+"/"+b+"/roles", e.owner, astro.SetRolesRequest{Roles: []astro.TokenRole{
		{EntityID: e.org, EntityType: astro.EntityOrganization, Role: astro.RoleOrganizationMember},
		{EntityID: ws0, EntityType: astro.EntityWorkspace, Role: astro.RoleWorkspaceMember},
		{EntityID: dep1, EntityType: astro.EntityDeployment, Role: astro.RoleDeploymentAdmin},
	}}); r.status != 200 {
		t.Fatalf("roles: %d %s", r.status, r.body)
	}

	tests := []struct {
		query     string
		ids       []string
		total     int
		limit     int
		offset    int
		wantLimit int
	}{
		{query: "", ids: []string{owner, c, a, d, b}, total: 5, wantLimit: 20},
		{query: "?workspaceId=" + ws0, ids: []string{c, b}, total: 2, wantLimit: 20},
		{query: "?workspaceId=" + ws1, ids: []string{a}, total: 1, wantLimit: 20},
		{query: "?deploymentId=" + dep1, ids: []string{d, b}, total: 2, wantLimit: 20},
		{query: "?includeOnlyOrganizationTokens=true", ids: []string{owner, b}, total: 2, wantLimit: 20},
		{query: "?includeOnlyOrganizationTokens=true&workspaceId=" + ws0, ids: []string{b}, total: 1, wantLimit: 20},
		{query: "?workspaceId=clnosuchworkspacexxxxxxxx", ids: []string{}, total: 0, wantLimit: 20},
		{query: "?sorts=name:asc", ids: []string{a, owner, b, c, d}, total: 5, wantLimit: 20},
		{query: "?sorts=name:desc", ids: []string{d, c, b, owner, a}, total: 5, wantLimit: 20},
		{query: "?sorts=createdAt:desc&limit=2", ids: []string{b, d}, total: 5, wantLimit: 2},
		{query: "?sorts=createdAt:desc&limit=2&offset=2", ids: []string{a, c}, total: 5, wantLimit: 2, offset: 2},
		{query: "?sorts=createdAt:desc&limit=2&offset=4", ids: []string{owner}, total: 5, wantLimit: 2, offset: 4},
		{query: "?limit=1000&offset=999999999999999999", ids: []string{}, total: 5, wantLimit: 1000, offset: 999999999999999999},
		// A second sort key applies to ties of the first (all descriptions
		// but the owner's are empty).
		{query: "?sorts=updatedAt:desc&sorts=name:asc", ids: []string{b, d, a, c, owner}, total: 5, wantLimit: 20},
		{query: "?sorts=description:asc&sorts=tokenStartAt:desc", ids: []string{b, d, a, c, owner}, total: 5, wantLimit: 20},
	}
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			r := e.do("GET", e.tokensPath()+tt.query, e.owner, nil)
			var page astro.TokensPage
			if err := json.Unmarshal(r.body, &page); err != nil || r.status != 200 {
				t.Fatalf("%d %s", r.status, r.body)
			}
			ids := []string{}
			for _, tk := range page.Tokens {
				ids = append(ids, tk.ID)
			}
			names := map[string]string{owner: "owner", a: "alpha", b: "bravo", c: "charlie", d: "delta"}
			name := func(ids []string) (out []string) {
				for _, id := range ids {
					out = append(out, names[id])
				}
				return out
			}
			if diff := cmp.Diff(name(tt.ids), name(ids)); diff != "" {
				t.Errorf("order (-want +got):\n%s", diff)
			}
			if page.TotalCount != tt.total || page.Limit != tt.wantLimit || page.Offset != tt.offset {
				t.Errorf("totalCount/limit/offset = %d/%d/%d, want %d/%d/%d", page.TotalCount, page.Limit, page.Offset, tt.total, tt.wantLimit, tt.offset)
			}
		})
	}
}

// TestKnobs: the 429 burst, the error rate and the latency.
func TestKnobs(t *testing.T) {
	t.Run("throttle", func(t *testing.T) {
		e := start(t, emulator.Config{})
		e.emu.Throttle(2, 1500*time.Millisecond)
		for i := range 2 {
			r := e.do("GET", e.tokensPath(), e.owner, nil)
			if r.status != 429 || r.header.Get("Retry-After") != "2" || r.errorBody(t).StatusCode != 429 {
				t.Fatalf("request %d: %d Retry-After %q %s", i, r.status, r.header.Get("Retry-After"), r.body)
			}
		}
		if r := e.do("GET", e.tokensPath(), e.owner, nil); r.status != 200 {
			t.Errorf("after the burst: %d", r.status)
		}
	})
	t.Run("error rate 1", func(t *testing.T) {
		e := start(t, emulator.Config{ErrorRate: 1})
		r := e.do("POST", e.tokensPath(), e.owner, []byte(`{"name":"x","role":"ORGANIZATION_MEMBER","scope":"ORGANIZATION"}`))
		if r.status != 503 || r.errorBody(t).StatusCode != 503 {
			t.Fatalf("%d %s", r.status, r.body)
		}
		if n := len(e.emu.Tokens()); n != 1 {
			t.Errorf("an injected 503 processed the create: %d tokens", n)
		}
	})
	t.Run("error rate 0.5", func(t *testing.T) {
		e := start(t, emulator.Config{ErrorRate: 0.5})
		fails := 0
		for range 200 {
			if e.do("GET", "/organizations", e.owner, nil).status == 503 {
				fails++
			}
		}
		if fails < 60 || fails > 140 {
			t.Errorf("%d of 200 failed at rate 0.5", fails)
		}
	})
	t.Run("latency", func(t *testing.T) {
		e := start(t, emulator.Config{Latency: 50 * time.Millisecond})
		begin := time.Now()
		e.do("GET", "/organizations", e.owner, nil)
		if d := time.Since(begin); d < 50*time.Millisecond {
			t.Errorf("answered in %v with 50ms latency", d)
		}
	})
}

// TestConcurrent runs creates, reads, rotations and deletes in parallel;
// with -race it proves the locking, and the final count proves no update
// was lost.
func TestConcurrent(t *testing.T) {
	e := start(t, emulator.Config{})
	const workers, each = 8, 10
	var wg sync.WaitGroup
	errs := make(chan string, workers*each)
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				r := e.doJSON("POST", e.tokensPath(), e.owner, astro.CreateTokenRequest{
					Name: fmt.Sprintf("w%d-%d", w, i), Role: astro.RoleOrganizationMember, Scope: astro.ScopeOrganization})
				var tok astro.Token
				if json.Unmarshal(r.body, &tok); r.status != 200 {
					errs <- fmt.Sprintf("create: %d", r.status)
					continue
				}
				if r := e.do("POST", e.tokensPath()+"/"+tok.ID+"/rotate", e.owner, nil); r.status != 200 {
					errs <- fmt.Sprintf("rotate: %d", r.status)
				}
				if i%2 == 0 {
					if r := e.do("DELETE", e.tokensPath()+"/"+tok.ID, e.owner, nil); r.status != 204 {
						errs <- fmt.Sprintf("delete: %d", r.status)
					}
				}
				e.do("GET", e.tokensPath()+"?limit=1000", e.owner, nil)
			}
		})
	}
	wg.Wait()
	close(errs)
	for msg := range errs {
		t.Error(msg)
	}
	if got, want := len(e.emu.Tokens()), 1+workers*each/2; got != want {
		t.Errorf("%d tokens, want %d", got, want)
	}
}

// TestCloseLeaksNothing: Close waits for the serving goroutine.
func TestCloseLeaksNothing(t *testing.T) {
	before := runtime.NumGoroutine()
	for range 5 {
		srv, emu, err := emulator.Start(emulator.Config{})
		if err != nil {
			t.Fatal(err)
		}
		(&env{t: t, srv: srv, emu: emu, org: emu.OrganizationID()}).do("GET", "/organizations", emu.OrganizationToken(), nil)
		if err := srv.Close(); err != nil {
			t.Fatal(err)
		}
		if err := srv.Close(); err != nil {
			t.Fatalf("second Close: %v", err)
		}
	}
	// Idle keep-alive connections of the test's client can linger briefly.
	testwait.For(2*time.Second, func() bool { return runtime.NumGoroutine() <= before+2 })
	if n := runtime.NumGoroutine(); n > before+2 {
		t.Errorf("%d goroutines after Close, %d before", n, before)
	}
}
