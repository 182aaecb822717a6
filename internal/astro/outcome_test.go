package astro_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/astro-sts/astro-sts/internal/astro"
	"github.com/astro-sts/astro-sts/internal/emulator"
)

// Whether a failed create may have made a token, for each way it can fail
// against the emulator over HTTP.
func TestNotProcessed(t *testing.T) {
	srv, emu, err := emulator.Start(emulator.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	client := func(base string) *astro.Client {
		c, err := astro.New(astro.Config{BaseURL: base, Token: emu.OrganizationToken(), MaxAttempts: 1})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	ok := astro.CreateTokenRequest{Name: "n", Scope: astro.ScopeOrganization, Role: astro.RoleOrganizationMember}
	// A port nobody listens on: the connection is refused.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + ln.Addr().String() + "/v1"
	ln.Close()

	for _, tc := range []struct {
		name          string
		setup         func()
		base          string
		org           string
		req           astro.CreateTokenRequest
		timeout       time.Duration
		notProcessed  bool
		tokensCreated int
	}{
		{name: "refused before sending", org: "", req: ok, notProcessed: true},
		{name: "connection refused", base: closed, req: ok, notProcessed: true},
		{name: "400 validation", req: astro.CreateTokenRequest{Name: "n"}, notProcessed: true},
		{name: "429", setup: func() { emu.Throttle(1, time.Second) }, req: ok, notProcessed: true},
		{name: "502 after processing", setup: func() { emu.LoseAnswers(1) }, req: ok, tokensCreated: 1},
		{name: "timeout after processing", setup: func() { emu.SlowAnswers(5 * time.Second) }, req: ok, timeout: 100 * time.Millisecond, tokensCreated: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer emu.LoseAnswers(0)
			defer emu.SlowAnswers(0)
			defer emu.Throttle(0, 0)
			if tc.setup != nil {
				tc.setup()
			}
			base := tc.base
			if base == "" {
				base = srv.URL
			}
			org := emu.OrganizationID()
			if tc.name == "refused before sending" {
				org = tc.org
			}
			ctx := context.Background()
			if tc.timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tc.timeout)
				defer cancel()
			}
			before := len(emu.Tokens())
			_, err := client(base).CreateToken(ctx, org, tc.req)
			if err == nil {
				t.Fatal("create succeeded")
			}
			if got := astro.NotProcessed(err); got != tc.notProcessed {
				t.Errorf("NotProcessed(%v) = %v, want %v", err, got, tc.notProcessed)
			}
			if got := len(emu.Tokens()) - before; got != tc.tokensCreated {
				t.Errorf("%d tokens created, want %d", got, tc.tokensCreated)
			}
		})
	}
	if astro.NotProcessed(nil) || astro.NotProcessed(errors.New("other")) || astro.NotProcessed(&astro.APIError{StatusCode: http.StatusServiceUnavailable}) {
		t.Error("an error that proves nothing counts as not processed")
	}
}
