package astro_test

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/astro-sts/astro-sts/internal/astro"
	"github.com/astro-sts/astro-sts/internal/emulator"
)

// startEmulator serves an emulator on loopback for one test.
func startEmulator(t *testing.T, cfg emulator.Config) (*emulator.Server, *emulator.Emulator) {
	t.Helper()
	srv, emu, err := emulator.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return srv, emu
}

// observed counts the attempts the client reports, per method and route.
type observed struct {
	mu    sync.Mutex
	calls []string
}

func (o *observed) observe(method, route string, status int, _ time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.calls = append(o.calls, fmt.Sprintf("%s %s %d", method, route, status))
}

func (o *observed) take() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	c := o.calls
	o.calls = nil
	return c
}

func fastConfig(url, token string, obs *observed) astro.Config {
	cfg := astro.Config{BaseURL: url, Token: token, BaseDelay: time.Millisecond, MaxDelay: 5 * time.Millisecond, MaxRetryAfter: 20 * time.Millisecond}
	if obs != nil {
		cfg.Observe = obs.observe
	}
	return cfg
}

// TestClientEndpoints walks every endpoint of the client against the
// emulator over real HTTP.
func TestClientEndpoints(t *testing.T) {
	srv, emu := startEmulator(t, emulator.Config{Seed: 3})
	obs := &observed{}
	c, err := astro.New(fastConfig(srv.URL, emu.OrganizationToken(), obs))
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	org, ws0, ws1, dep0 := emu.OrganizationID(), emu.WorkspaceIDs()[0], emu.WorkspaceIDs()[1], emu.DeploymentIDs()[0]
	days := 5

	// Create, one per scope.
	creates := []struct {
		name string
		req  astro.CreateTokenRequest
		role astro.TokenRole
	}{
		{"organization", astro.CreateTokenRequest{Name: "org", Role: astro.RoleOrganizationMember, Scope: astro.ScopeOrganization},
			astro.TokenRole{EntityID: org, EntityType: astro.EntityOrganization, Role: astro.RoleOrganizationMember}},
		{"workspace", astro.CreateTokenRequest{Name: "ws", Description: "d", Role: astro.RoleWorkspaceOwner, Scope: astro.ScopeWorkspace, EntityID: ws0, TokenExpiryPeriodInDays: &days},
			astro.TokenRole{EntityID: ws0, EntityType: astro.EntityWorkspace, Role: astro.RoleWorkspaceOwner}},
		{"deployment", astro.CreateTokenRequest{Name: "dep", Role: astro.RoleDeploymentAdmin, Scope: astro.ScopeDeployment, EntityID: dep0},
			astro.TokenRole{EntityID: dep0, EntityType: astro.EntityDeployment, Role: astro.RoleDeploymentAdmin}},
	}
	made := map[string]*astro.Token{}
	for _, tt := range creates {
		t.Run("create "+tt.name, func(t *testing.T) {
			tok, err := c.CreateToken(ctx, org, tt.req)
			if err != nil {
				t.Fatal(err)
			}
			if tok.Token == "" || tok.Name != tt.req.Name || tok.Scope != tt.req.Scope {
				t.Errorf("created %v", tok)
			}
			if diff := cmp.Diff([]astro.TokenRole{tt.role}, tok.Roles); diff != "" {
				t.Errorf("roles (-want +got):\n%s", diff)
			}
			if (tt.req.TokenExpiryPeriodInDays == nil) != (tok.EndAt == nil) {
				t.Errorf("endAt = %v for expiry %v", tok.EndAt, tt.req.TokenExpiryPeriodInDays)
			}
			made[tt.name] = tok
		})
	}
	orgTok, wsTok := made["organization"], made["workspace"]
	if orgTok == nil || wsTok == nil {
		t.Fatal("creates failed")
	}

	t.Run("get", func(t *testing.T) {
		got, err := c.GetToken(ctx, org, wsTok.ID)
		if err != nil {
			t.Fatal(err)
		}
		want := *wsTok
		want.Token = ""
		// lastUsedAt is not set: the workspace token has not been used.
		if diff := cmp.Diff(want, *got); diff != "" {
			t.Errorf("get (-want +got):\n%s", diff)
		}
	})

	t.Run("update", func(t *testing.T) {
		got, err := c.UpdateToken(ctx, org, wsTok.ID, astro.UpdateTokenRequest{Name: "renamed", Description: ""})
		if err != nil {
			t.Fatal(err)
		}
		if got.Name != "renamed" || got.Description != "" {
			t.Errorf("updated %+v", got)
		}
	})

	t.Run("list pages until done", func(t *testing.T) {
		for i := range 4 {
			if _, err := c.CreateToken(ctx, org, astro.CreateTokenRequest{Name: fmt.Sprintf("filler-%d", i), Role: astro.RoleWorkspaceMember, Scope: astro.ScopeWorkspace, EntityID: ws1}); err != nil {
				t.Fatal(err)
			}
		}
		obs.take()
		all, err := c.ListTokens(ctx, org, astro.ListTokensOptions{PageSize: 2})
		if err != nil {
			t.Fatal(err)
		}
		want := emu.Tokens()
		if diff := cmp.Diff(want, all, cmpopts.IgnoreFields(astro.Token{}, "LastUsedAt")); diff != "" {
			t.Errorf("list (-want +got):\n%s", diff)
		}
		// 8 tokens (owner, 3 created, 4 fillers) in pages of 2.
		if calls := obs.take(); len(calls) != 4 {
			t.Errorf("%d page requests, want 4: %v", len(calls), calls)
		}
	})

	t.Run("list filters and sorts", func(t *testing.T) {
		tests := []struct {
			opts astro.ListTokensOptions
			want []string
		}{
			{astro.ListTokensOptions{WorkspaceID: ws0}, []string{"renamed"}},
			{astro.ListTokensOptions{DeploymentID: dep0}, []string{"dep"}},
			{astro.ListTokensOptions{IncludeOnlyOrganizationTokens: true, Sorts: []string{"name:desc"}}, []string{"org", "astro-sts-emulator owner"}},
			{astro.ListTokensOptions{WorkspaceID: ws1, Sorts: []string{"name:desc"}, PageSize: 5000}, []string{"filler-3", "filler-2", "filler-1", "filler-0"}},
		}
		for _, tt := range tests {
			t.Run(fmt.Sprintf("%+v", tt.opts), func(t *testing.T) {
				got, err := c.ListTokens(ctx, org, tt.opts)
				if err != nil {
					t.Fatal(err)
				}
				var names []string
				for _, tok := range got {
					names = append(names, tok.Name)
				}
				if diff := cmp.Diff(tt.want, names); diff != "" {
					t.Errorf("names (-want +got):\n%s", diff)
				}
			})
		}
	})

	t.Run("list one page", func(t *testing.T) {
		p, err := c.ListTokensPage(ctx, org, astro.ListTokensOptions{}, 6, 3)
		if err != nil {
			t.Fatal(err)
		}
		if p.Offset != 6 || p.Limit != 3 || p.TotalCount != 8 || len(p.Tokens) != 2 {
			t.Errorf("page = offset %d limit %d total %d len %d", p.Offset, p.Limit, p.TotalCount, len(p.Tokens))
		}
	})

	t.Run("set roles, add to and remove from a workspace", func(t *testing.T) {
		sr, err := c.AddTokenToWorkspace(ctx, org, orgTok.ID, ws0, astro.RoleWorkspaceAuthor)
		if err != nil {
			t.Fatal(err)
		}
		want := &astro.SubjectRoles{OrganizationRole: astro.RoleOrganizationMember,
			WorkspaceRoles: []astro.WorkspaceRole{{WorkspaceID: ws0, Role: astro.RoleWorkspaceAuthor}}, DeploymentRoles: []astro.DeploymentRole{}}
		if diff := cmp.Diff(want, sr); diff != "" {
			t.Errorf("add (-want +got):\n%s", diff)
		}
		// Adding again with another role replaces the role there.
		sr, err = c.AddTokenToWorkspace(ctx, org, orgTok.ID, ws0, astro.RoleWorkspaceOwner)
		if err != nil {
			t.Fatal(err)
		}
		want.WorkspaceRoles[0].Role = astro.RoleWorkspaceOwner
		if diff := cmp.Diff(want, sr); diff != "" {
			t.Errorf("re-add (-want +got):\n%s", diff)
		}
		if _, err := c.AddTokenToWorkspace(ctx, org, orgTok.ID, ws1, astro.RoleWorkspaceMember); err != nil {
			t.Fatal(err)
		}
		// The Organization token now shows up under the workspace filter.
		inWS, err := c.ListTokens(ctx, org, astro.ListTokensOptions{WorkspaceID: ws0, IncludeOnlyOrganizationTokens: true})
		if err != nil || len(inWS) != 1 || inWS[0].ID != orgTok.ID {
			t.Errorf("workspace filter = %v, %v", inWS, err)
		}
		sr, err = c.RemoveTokenFromWorkspace(ctx, org, orgTok.ID, ws0)
		if err != nil {
			t.Fatal(err)
		}
		want.WorkspaceRoles = []astro.WorkspaceRole{{WorkspaceID: ws1, Role: astro.RoleWorkspaceMember}}
		if diff := cmp.Diff(want, sr); diff != "" {
			t.Errorf("remove (-want +got):\n%s", diff)
		}
		// Removing what is not there sends no set-roles request.
		obs.take()
		if _, err := c.RemoveTokenFromWorkspace(ctx, org, orgTok.ID, ws0); err != nil {
			t.Fatal(err)
		}
		if calls := obs.take(); !slices.Equal(calls, []string{"GET " + astro.RouteToken + " 200"}) {
			t.Errorf("idempotent remove sent %v", calls)
		}
		// The helpers refuse a token that is not an Organization token.
		if _, err := c.AddTokenToWorkspace(ctx, org, wsTok.ID, ws1, astro.RoleWorkspaceMember); !errors.Is(err, astro.ErrInvalidArgument) {
			t.Errorf("add a Workspace token = %v, want ErrInvalidArgument", err)
		}
		if _, err := c.AddTokenToWorkspace(ctx, org, orgTok.ID, ws1, astro.RoleOrganizationOwner); !errors.Is(err, astro.ErrInvalidArgument) {
			t.Errorf("add with an organization role = %v, want ErrInvalidArgument", err)
		}
		sr, err = c.SetTokenRoles(ctx, org, orgTok.ID, []astro.TokenRole{{EntityID: org, EntityType: astro.EntityOrganization, Role: astro.RoleOrganizationBillingAdmin}})
		if err != nil || sr.OrganizationRole != astro.RoleOrganizationBillingAdmin || len(sr.WorkspaceRoles) != 0 {
			t.Errorf("set roles = %+v, %v", sr, err)
		}
	})

	t.Run("rotate", func(t *testing.T) {
		before := wsTok.Token
		if _, err := c.WithToken(before).ListTokens(ctx, org, astro.ListTokensOptions{WorkspaceID: ws0}); err != nil {
			t.Fatalf("old value before rotate: %v", err)
		}
		rot, err := c.RotateToken(ctx, org, wsTok.ID)
		if err != nil {
			t.Fatal(err)
		}
		if rot.ID != wsTok.ID || rot.Token == "" || rot.Token == before || rot.LastRotatedAt == nil {
			t.Errorf("rotated %+v", rot)
		}
		_, err = c.WithToken(before).ListTokens(ctx, org, astro.ListTokensOptions{WorkspaceID: ws0})
		var ae *astro.APIError
		if !errors.As(err, &ae) || ae.StatusCode != http.StatusUnauthorized {
			t.Errorf("old value after rotate: %v, want 401", err)
		}
		if _, err := c.WithToken(rot.Token).ListTokens(ctx, org, astro.ListTokensOptions{WorkspaceID: ws0}); err != nil {
			t.Errorf("new value: %v", err)
		}
	})

	t.Run("delete, twice", func(t *testing.T) {
		if err := c.DeleteToken(ctx, org, made["deployment"].ID); err != nil {
			t.Fatal(err)
		}
		if err := c.DeleteToken(ctx, org, made["deployment"].ID); err != nil {
			t.Errorf("second delete = %v, want nil (404 counts as gone)", err)
		}
		if _, err := c.GetToken(ctx, org, made["deployment"].ID); !isStatus(err, 404) {
			t.Errorf("get after delete = %v", err)
		}
	})

	t.Run("organizations and workspaces", func(t *testing.T) {
		orgs, err := c.ListOrganizations(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(orgs) != 1 || orgs[0].ID != org || orgs[0].Product != "HOSTED" {
			t.Errorf("organizations = %+v", orgs)
		}
		wss, err := c.ListWorkspaces(ctx, org)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, w := range wss {
			ids = append(ids, w.ID)
		}
		if diff := cmp.Diff(emu.WorkspaceIDs(), ids); diff != "" {
			t.Errorf("workspaces (-want +got):\n%s", diff)
		}
	})
}

func isStatus(err error, status int) bool {
	var ae *astro.APIError
	return errors.As(err, &ae) && ae.StatusCode == status
}

// TestClientErrorClasses: every class of refusal from the emulator comes
// back as an *APIError with the status, message and request id, and never
// with the bearer token in its text.
func TestClientErrorClasses(t *testing.T) {
	srv, emu := startEmulator(t, emulator.Config{})
	owner := emu.OrganizationToken()
	c, err := astro.New(fastConfig(srv.URL, owner, nil))
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	org := emu.OrganizationID()
	wsTok, err := c.CreateToken(ctx, org, astro.CreateTokenRequest{Name: "ws", Role: astro.RoleWorkspaceMember, Scope: astro.ScopeWorkspace, EntityID: emu.WorkspaceIDs()[0]})
	if err != nil {
		t.Fatal(err)
	}
	zero := 0
	tests := []struct {
		name   string
		token  string
		call   func(c *astro.Client) error
		status int
		fields []string
	}{
		{"400 validation", owner, func(c *astro.Client) error {
			_, err := c.CreateToken(ctx, org, astro.CreateTokenRequest{Name: "x", Role: astro.RoleOrganizationMember, Scope: astro.ScopeOrganization, TokenExpiryPeriodInDays: &zero})
			return err
		}, 400, []string{"tokenExpiryPeriodInDays"}},
		{"400 bad sort", owner, func(c *astro.Client) error {
			_, err := c.ListTokens(ctx, org, astro.ListTokensOptions{Sorts: []string{"id:asc"}})
			return err
		}, 400, []string{"sorts"}},
		{"400 roles", owner, func(c *astro.Client) error {
			_, err := c.SetTokenRoles(ctx, org, wsTok.ID, nil)
			return err
		}, 400, []string{"roles"}},
		{"401 garbage token", "not-a-token", func(c *astro.Client) error {
			_, err := c.ListOrganizations(ctx)
			return err
		}, 401, nil},
		{"401 no token", "", func(c *astro.Client) error {
			_, err := c.ListWorkspaces(ctx, org)
			return err
		}, 401, nil},
		{"403 workspace token lists all", wsTok.Token, func(c *astro.Client) error {
			_, err := c.ListTokens(ctx, org, astro.ListTokensOptions{})
			return err
		}, 403, nil},
		{"403 workspace token rotates", wsTok.Token, func(c *astro.Client) error {
			_, err := c.RotateToken(ctx, org, wsTok.ID)
			return err
		}, 403, nil},
		{"403 other organization", owner, func(c *astro.Client) error {
			_, err := c.GetToken(ctx, "clsomeoneelsesorgxxxxxxxx", wsTok.ID)
			return err
		}, 403, nil},
		{"404 get", owner, func(c *astro.Client) error {
			_, err := c.GetToken(ctx, org, "clnosuchtokenxxxxxxxxxxxx")
			return err
		}, 404, nil},
		{"404 update", owner, func(c *astro.Client) error {
			_, err := c.UpdateToken(ctx, org, "clnosuchtokenxxxxxxxxxxxx", astro.UpdateTokenRequest{Name: "x"})
			return err
		}, 404, nil},
		{"404 rotate", owner, func(c *astro.Client) error {
			_, err := c.RotateToken(ctx, org, "clnosuchtokenxxxxxxxxxxxx")
			return err
		}, 404, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call(c.WithToken(tt.token))
			var ae *astro.APIError
			if !errors.As(err, &ae) {
				t.Fatalf("err = %v, want *APIError", err)
			}
			if ae.StatusCode != tt.status || ae.Message == "" || ae.RequestID == "" {
				t.Errorf("APIError = %+v, want status %d with message and request id", ae, tt.status)
			}
			var fields []string
			for _, f := range ae.FieldErrors {
				fields = append(fields, f.Field)
			}
			if diff := cmp.Diff(tt.fields, fields); diff != "" {
				t.Errorf("fieldErrors (-want +got):\n%s", diff)
			}
			if tt.token != "" && strings.Contains(err.Error(), tt.token) {
				t.Error("the error repeats the token")
			}
		})
	}

	t.Run("429 until attempts run out", func(t *testing.T) {
		obs := &observed{}
		cfg := fastConfig(srv.URL, owner, obs)
		cfg.MaxAttempts = 3
		c3, _ := astro.New(cfg)
		emu.Throttle(3, 0)
		_, err := c3.ListOrganizations(ctx)
		if !isStatus(err, 429) || len(obs.take()) != 3 {
			t.Errorf("err = %v", err)
		}
		if _, err := c3.ListOrganizations(ctx); err != nil {
			t.Errorf("after the burst: %v", err)
		}
	})
	t.Run("503 from an unhealthy Astro", func(t *testing.T) {
		srv2, emu2 := startEmulator(t, emulator.Config{ErrorRate: 1})
		obs := &observed{}
		c2, _ := astro.New(fastConfig(srv2.URL, emu2.OrganizationToken(), obs))
		_, err := c2.GetToken(ctx, emu2.OrganizationID(), "clx")
		if !isStatus(err, 503) || len(obs.take()) != astro.DefaultMaxAttempts {
			t.Errorf("err = %v", err)
		}
		// A create meets the same 503 once and stops.
		_, err = c2.CreateToken(ctx, emu2.OrganizationID(), astro.CreateTokenRequest{Name: "x", Role: astro.RoleOrganizationMember, Scope: astro.ScopeOrganization})
		if !isStatus(err, 503) || len(obs.take()) != 1 {
			t.Errorf("create err = %v", err)
		}
	})
}
