package emulator_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/astro-sts/astro-sts/internal/astro"
	"github.com/astro-sts/astro-sts/internal/emulator"
)

// Start serves an emulator on loopback; the client talks to it exactly as
// to Astro. A rotated value stops working at once.
func ExampleStart() {
	srv, emu, err := emulator.Start(emulator.Config{Workspaces: 1})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer srv.Close()

	ctx := context.Background()
	admin, err := astro.New(astro.Config{BaseURL: srv.URL, Token: emu.OrganizationToken()})
	if err != nil {
		fmt.Println(err)
		return
	}
	days := 1
	tok, err := admin.CreateToken(ctx, emu.OrganizationID(), astro.CreateTokenRequest{
		Name: "ci", Role: astro.RoleWorkspaceOperator, Scope: astro.ScopeWorkspace,
		EntityID: emu.WorkspaceIDs()[0], TokenExpiryPeriodInDays: &days,
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(tok.Scope, tok.Name, *tok.ExpiryPeriodInDays, "day")

	claims, _ := emulator.ParseClaims(tok.Token)
	fmt.Println(claims.Permissions[1] == "workspaceId:"+emu.WorkspaceIDs()[0])

	if _, err := admin.RotateToken(ctx, emu.OrganizationID(), tok.ID); err != nil {
		fmt.Println(err)
		return
	}
	_, err = admin.WithToken(tok.Token).ListOrganizations(ctx)
	var apiErr *astro.APIError
	fmt.Println(errors.As(err, &apiErr), apiErr.StatusCode)
	// Output:
	// WORKSPACE ci 1 day
	// true
	// true 401
}
