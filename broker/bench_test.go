package broker_test

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/astro-sts/astro-sts/internal/astro"
)

// The broker's cost is measured against its floor: the one upstream call
// every exchange makes. Both benchmarks run against the same kind of
// emulator over loopback HTTP, in the same run, so their ratio (reported in
// docs/benchmarks.md) is the price of verify + decide + record + the extra
// HTTP hop, independent of the machine.

// BenchmarkBaselineCreateToken is the floor: the Astro client creating a
// Workspace token directly, as the broker's mint step does.
func BenchmarkBaselineCreateToken(b *testing.B) {
	e := newEnv(b, envOptions{})
	days := 1
	req := astro.CreateTokenRequest{
		Name: "bench", Role: astro.RoleWorkspaceOperator, Scope: astro.ScopeWorkspace,
		EntityID: e.emu.WorkspaceIDs()[0], TokenExpiryPeriodInDays: &days,
	}
	ctx := context.Background()
	for b.Loop() {
		if _, err := e.astroOrg.CreateToken(ctx, e.emu.OrganizationID(), req); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkExchange is a whole exchange over HTTP: verify the OIDC token
// (RS256 signature, claims, replay guard), decide by policy, mint, audit.
// OIDC tokens are minted before the timer starts: minting is GitHub's cost.
func BenchmarkExchange(b *testing.B) {
	e := newEnv(b, envOptions{replaySize: 1 << 20})
	client := &http.Client{}
	run := func(tok string) {
		req, _ := http.NewRequest(http.MethodPost, e.url+"/v1/exchange", strings.NewReader(`{"role":"WORKSPACE_AUTHOR"}`))
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b.Fatalf("status %d", resp.StatusCode)
		}
	}
	toks := make([]string, b.N)
	for i := range toks {
		toks[i] = e.mint(mainClaims())
	}
	run(e.mint(mainClaims())) // warm the issuer's discovery and JWKS cache
	b.ResetTimer()
	for i := range b.N {
		run(toks[i])
	}
}

// BenchmarkDeny is a refused exchange: verification and policy only, no
// upstream call. It shows what an untrusted caller can cost the broker.
func BenchmarkDeny(b *testing.B) {
	e := newEnv(b, envOptions{replaySize: 1 << 20})
	other := mainClaims()
	other.RepositoryID = "666"
	toks := make([]string, b.N)
	for i := range toks {
		toks[i] = e.mint(other)
	}
	client := &http.Client{}
	b.ResetTimer()
	for i := range b.N {
		req, _ := http.NewRequest(http.MethodPost, e.url+"/v1/exchange", nil)
		req.Header.Set("Authorization", "Bearer "+toks[i])
		resp, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			b.Fatalf("status %d", resp.StatusCode)
		}
	}
}
