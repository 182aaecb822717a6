package idtoken_test

import (
	"context"
	"fmt"

	"github.com/astro-sts/astro-sts/internal/idtoken"
	"github.com/astro-sts/astro-sts/internal/issuer"
	"github.com/astro-sts/astro-sts/internal/store"
)

// The broker verifies a job's ID token, then spends its jti once.
func ExampleVerifier_Verify() {
	iss, err := issuer.Start(issuer.Config{}) // stands in for GitHub
	if err != nil {
		fmt.Println(err)
		return
	}
	defer iss.Close()

	v, err := idtoken.New(idtoken.Config{
		Issuers:  []string{iss.URL()},
		Audience: "https://sts.example",
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	replay := store.NewReplayGuard(0, nil)

	c := issuer.DefaultClaims()
	c.Audience = "https://sts.example"
	raw, _ := iss.Mint(c)

	claims, err := v.Verify(context.Background(), raw)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(claims.Repository, claims.RepositoryID, claims.Ref)
	fmt.Println(replay.Use(claims.Issuer, claims.JTI, claims.Expiry))
	fmt.Println(replay.Use(claims.Issuer, claims.JTI, claims.Expiry) != nil)

	_, err = v.Verify(context.Background(), "not a token")
	fmt.Println(err)
	// Output:
	// acme/dags 123456 refs/heads/main
	// <nil>
	// true
	// idtoken: malformed token: compact JWS must have 3 parts, got 1
}
