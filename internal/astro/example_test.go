package astro_test

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/astro-sts/astro-sts/internal/astro"
	"github.com/astro-sts/astro-sts/internal/emulator"
)

// A broker's life cycle of one short-lived token: create it, give the
// Organization token a Workspace role, and delete it again. The emulator
// stands in for https://api.astronomer.io/v1.
func ExampleClient() {
	srv, emu, err := emulator.Start(emulator.Config{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer srv.Close()

	ctx := context.Background()
	c, err := astro.New(astro.Config{BaseURL: srv.URL, Token: emu.OrganizationToken()})
	if err != nil {
		fmt.Println(err)
		return
	}
	org, ws := emu.OrganizationID(), emu.WorkspaceIDs()[0]

	days := 1
	tok, err := c.CreateToken(ctx, org, astro.CreateTokenRequest{
		Name: "gh-run-42", Role: astro.RoleOrganizationMember, Scope: astro.ScopeOrganization,
		TokenExpiryPeriodInDays: &days,
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(tok.Scope, tok.Name, tok.EndAt.Sub(tok.StartAt))
	// A Token prints without its value, so it is safe in a log line.
	fmt.Println(strings.Contains(fmt.Sprint(tok), tok.Token))

	roles, err := c.AddTokenToWorkspace(ctx, org, tok.ID, ws, astro.RoleWorkspaceOperator)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(roles.OrganizationRole, roles.WorkspaceRoles[0].Role)

	// Delete twice: the second 404 counts as already gone.
	fmt.Println(c.DeleteToken(ctx, org, tok.ID), c.DeleteToken(ctx, org, tok.ID))

	_, err = c.GetToken(ctx, org, tok.ID)
	var apiErr *astro.APIError
	if errors.As(err, &apiErr) {
		fmt.Println(apiErr.StatusCode, apiErr.Message)
	}
	// Output:
	// ORGANIZATION gh-run-42 24h0m0s
	// false
	// ORGANIZATION_MEMBER WORKSPACE_OPERATOR
	// <nil> <nil>
	// 404 API token not found
}
