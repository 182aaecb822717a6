package broker_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/astro-sts/astro-sts/broker"
	"github.com/astro-sts/astro-sts/internal/brokerapi"
)

// TestCheckRunIDRefused: a check_run_id that is not a short decimal number
// is refused as a malformed claim before anything is minted. A long one
// would otherwise crowd what revoking and reaping need out of the token's
// 500-byte description; a control character would reach the token's name.
func TestCheckRunIDRefused(t *testing.T) {
	e := newEnv(t, envOptions{})
	for _, tc := range []struct{ name, id string }{
		{"400 digits", strings.Repeat("9", 400)},
		{"21 digits", strings.Repeat("9", 21)},
		{"control characters", "1\n##[error]x\n::add-mask::y"},
		{"not digits", "12a"},
		{"empty", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(e.emu.Tokens())
			c := mainClaims()
			c.Extra = map[string]any{"check_run_id": tc.id}
			status, body, _ := e.post("/v1/exchange", e.mint(c), "")
			if eb := errorBody(t, body); status != http.StatusUnauthorized || eb.Error != brokerapi.CodeTokenInvalid || eb.Reason != brokerapi.ReasonBadClaims {
				t.Errorf("exchange: %d %s, want 401 %s/%s", status, body, brokerapi.CodeTokenInvalid, brokerapi.ReasonBadClaims)
			}
			if after := len(e.emu.Tokens()); after != before {
				t.Errorf("%d tokens in Astro after the refusal, want %d", after, before)
			}
		})
	}
	// The longest accepted one keeps the token findable by its run.
	c := mainClaims()
	c.Extra = map[string]any{"check_run_id": strings.Repeat("9", 20)}
	r := e.exchange(c, "")
	tok, err := e.astroToken(r.TokenID)
	if err != nil {
		t.Fatal(err)
	}
	if m, ok := broker.ParseMarker(tok.Description); !ok || m.CheckRunID != strings.Repeat("9", 20) || m.Nonce == "" {
		t.Errorf("marker %+v (ok %v) of %q", m, ok, tok.Description)
	}
	if status, body, _ := e.post("/v1/revoke", e.mint(c), fmt.Sprintf(`{"token_id":%q}`, r.TokenID)); status/100 != 2 {
		t.Errorf("own revoke: %d %s", status, body)
	}
}

// TestRevokeByAnotherJobOfTheRun: the run (repository, run, attempt) is
// the unit of trust, not the job. Any job of the run may revoke a token
// minted for another of its jobs (as docs/security.md says): the action's
// post step revokes its own job's token, and a stricter check would only
// leave tokens for the reaper when a job's check run changes.
func TestRevokeByAnotherJobOfTheRun(t *testing.T) {
	e := newEnv(t, envOptions{})
	c := mainClaims()
	c.Extra = map[string]any{"check_run_id": "31337000001"}
	r := e.exchange(c, "")
	other := mainClaims()
	other.Extra = map[string]any{"check_run_id": "31337000002"}
	if status, body, _ := e.post("/v1/revoke", e.mint(other), fmt.Sprintf(`{"token_id":%q}`, r.TokenID)); status/100 != 2 {
		t.Errorf("revoke by another job of the run: %d %s, want 2xx", status, body)
	}
	if _, err := e.astroToken(r.TokenID); err == nil {
		t.Error("the token is still there")
	}
	// Another attempt of the same run is not the same run.
	r = e.exchange(c, "")
	again := mainClaims()
	again.RunAttempt = "2"
	if status, body, _ := e.post("/v1/revoke", e.mint(again), fmt.Sprintf(`{"token_id":%q}`, r.TokenID)); status/100 == 2 {
		t.Errorf("revoke by attempt 2: %d %s, want a refusal", status, body)
	}
}
