package idtoken_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/astro-sts/astro-sts/internal/clock"
	"github.com/astro-sts/astro-sts/internal/idtoken"
	"github.com/astro-sts/astro-sts/internal/issuer"
)

// BenchmarkVerify is one GitHub-shaped token verified with cached keys:
// the RS256 check (about 30 µs of CPU on the machine of
// docs/benchmarks.md) and everything around it, which is what to keep
// small. Its allocations are what the broker's garbage collector pays for
// per exchange.
func BenchmarkVerify(b *testing.B) {
	clk := clock.Stopped(t0)
	iss, err := issuer.Start(issuer.Config{Now: clk.Now})
	if err != nil {
		b.Fatal(err)
	}
	defer iss.Close()
	v, err := idtoken.New(idtoken.Config{
		Issuers: []string{iss.URL()}, Audience: audience, Now: clk.Now,
		HTTPClient: &http.Client{Timeout: 5 * time.Second},
	})
	if err != nil {
		b.Fatal(err)
	}
	tok, err := iss.Mint(issuer.Claims{Audience: audience})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	if _, err := v.Verify(ctx, tok); err != nil { // fetch the keys
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Verify(ctx, tok); err != nil {
			b.Fatal(err)
		}
	}
}
