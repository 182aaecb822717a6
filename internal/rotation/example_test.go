package rotation_test

import (
	"context"
	"fmt"

	"github.com/astro-sts/astro-sts/internal/astro"
	"github.com/astro-sts/astro-sts/internal/emulator"
	"github.com/astro-sts/astro-sts/internal/policy"
	"github.com/astro-sts/astro-sts/internal/rotation"
	"github.com/astro-sts/astro-sts/internal/sink"
	"github.com/astro-sts/astro-sts/internal/testkit/githubtest"
)

// A replace rotation of a Workspace token into a repository secret, against
// the Astro emulator and the local GitHub secrets API. The result names
// every sink; the value is only in the secret.
func ExampleRotator_Rotate() {
	esrv, emu, err := emulator.Start(emulator.Config{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer esrv.Close()
	gh, err := githubtest.Start(githubtest.Config{Tokens: []string{"ghp_example"}})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer gh.Close()
	gh.AddRepository("acme/dags")

	ctx := context.Background()
	org := emu.OrganizationID()
	ac, err := astro.New(astro.Config{BaseURL: esrv.URL, Token: emu.OrganizationToken()})
	if err != nil {
		fmt.Println(err)
		return
	}
	managed, err := ac.CreateToken(ctx, org, astro.CreateTokenRequest{
		Name: "airflow-ci", Scope: astro.ScopeWorkspace, Role: astro.RoleWorkspaceAuthor, EntityID: emu.WorkspaceIDs()[0]})
	if err != nil {
		fmt.Println(err)
		return
	}
	p, err := policy.Parse(fmt.Appendf(nil, `
rotations:
  - name: airflow-ci
    token_id: %s
    strategy: replace
    allow: {repository_id: "123456", event_name: [schedule]}
    github:
      - {repository: acme/dags, secret: ASTRO_API_TOKEN}
`, managed.ID))
	if err != nil {
		fmt.Println(err)
		return
	}
	r, _ := p.Rotation("airflow-ci")

	sinkCfg := sink.Config{GitHub: sink.GitHubConfig{Token: "ghp_example", APIURL: gh.URL()}}
	if err := rotation.CheckRotation(r, sinkCfg); err != nil {
		fmt.Println(err)
		return
	}
	rt, err := rotation.New(rotation.Config{Astro: ac, OrganizationID: org, Sinks: rotation.NewSinks(sinkCfg, nil, nil)})
	if err != nil {
		fmt.Println(err)
		return
	}
	res, err := rt.Rotate(ctx, r)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(res.Name, res.Strategy, "new token:", res.TokenID != managed.ID)
	for _, s := range res.Sinks {
		fmt.Println(s.Kind, s.Target, s.Status)
	}
	value, _ := gh.Secret(githubtest.RepoTarget("acme/dags"), "ASTRO_API_TOKEN")
	claims, _ := emulator.ParseClaims(value)
	fmt.Println("the secret holds the replacement:", claims.APITokenID == res.TokenID)
	_, err = ac.GetToken(ctx, org, managed.ID)
	fmt.Println("the old token is gone:", err != nil)
	// Output:
	// airflow-ci replace new token: true
	// github repo acme/dags secret ASTRO_API_TOKEN written
	// the secret holds the replacement: true
	// the old token is gone: true
}
