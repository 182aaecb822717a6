package broker_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/astro-sts/astro-sts/broker"
)

// TestRedTeamCheckRunIDLongLeaksToken: a check_run_id of 400 digits (no
// bound, no digit check) is written first in the marker (url.Values sorts
// its keys), and Description's cut at 500 bytes removes repository_id and
// run_id: the minted token is neither revocable by its own run nor reaped.
func TestRedTeamCheckRunIDLongLeaksToken(t *testing.T) {
	e := newEnv(t, envOptions{})
	c := mainClaims()
	c.Extra = map[string]any{"check_run_id": strings.Repeat("9", 400)}
	r := e.exchange(c, "")
	tok, err := e.astroToken(r.TokenID)
	if err != nil {
		t.Fatal(err)
	}
	_, ok := broker.ParseMarker(tok.Description)
	status, body, _ := e.post("/v1/revoke", e.mint(c), fmt.Sprintf(`{"token_id":%q}`, r.TokenID))
	e.clock.Advance(48 * time.Hour)
	n, rerr := e.broker.Reap(context.Background())
	_, gone := e.astroToken(r.TokenID)
	t.Logf("description %d bytes, marker parses %v; own revoke %d %s; reaped %d (%v); token still there: %v",
		len(tok.Description), ok, status, strings.TrimSpace(string(body)), n, rerr, gone == nil)
	if !ok || status != http.StatusOK || gone == nil {
		t.Skip("red team: a check_run_id of 400 bytes makes the minted token unrevokable and unreapable")
	}
}

// TestRedTeamCheckRunIDOtherJobRevokes: revoke compares repository, run and
// attempt, not check_run_id: another job of the same run revokes this job's
// token.
func TestRedTeamCheckRunIDOtherJobRevokes(t *testing.T) {
	e := newEnv(t, envOptions{})
	r := e.exchange(mainClaims(), "")
	other := mainClaims()
	other.Extra = map[string]any{"check_run_id": "31337000002"}
	status, body, _ := e.post("/v1/revoke", e.mint(other), fmt.Sprintf(`{"token_id":%q}`, r.TokenID))
	t.Logf("revoke by job 31337000002 of job 31337000001's token: %d %s", status, strings.TrimSpace(string(body)))
	if status/100 == 2 {
		t.Skip("red team: another job of the same run attempt revokes the token (check_run_id not compared)")
	}
}

// TestRedTeamCheckRunIDControl: newlines and workflow commands in
// check_run_id reach the token's name and the audit record unchanged.
func TestRedTeamCheckRunIDControl(t *testing.T) {
	e := newEnv(t, envOptions{})
	c := mainClaims()
	c.Extra = map[string]any{"check_run_id": "1\n##[error]x\n::add-mask::y"}
	r := e.exchange(c, "")
	tok, err := e.astroToken(r.TokenID)
	if err != nil {
		t.Fatal(err)
	}
	recs := e.audits("exchange")
	t.Logf("name %q; audit check_run_id %q", tok.Name, recs[len(recs)-1]["check_run_id"])
	if strings.Contains(tok.Name, "\n") {
		t.Skip("red team: check_run_id control characters reach the token name")
	}
}
