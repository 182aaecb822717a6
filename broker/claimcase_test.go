package broker_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/astro-sts/astro-sts/internal/brokerapi"
)

// TestClaimNamesDifferingByCase: a payload with two claim names that
// differ only by case is refused as malformed, and the message says so
// rather than only "not a JWT", which such a token plainly is.
func TestClaimNamesDifferingByCase(t *testing.T) {
	e := newEnv(t, envOptions{})
	c := mainClaims()
	c.Extra = map[string]any{"Repository_ID": "999"}
	status, body, _ := e.post("/v1/exchange", e.mint(c), "")
	eb := errorBody(t, body)
	if status != http.StatusUnauthorized || eb.Reason != brokerapi.ReasonMalformed || !strings.Contains(eb.Message, "differ only by case") {
		t.Errorf("exchange: %d %s, want 401 %s saying the names differ only by case", status, body, brokerapi.ReasonMalformed)
	}
}
