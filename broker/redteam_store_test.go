package broker_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
)

// TestRedTeamRateLimitedFillsReplayCache: a request refused by its rule's
// rate limit must not take a place in the memory store's replay cache, or
// one repository held to 5/m fills it with 429 answers and every other
// repository is refused 503 busy. And a cache that does fill (a rule
// without a limit) makes /readyz say so.
func TestRedTeamRateLimitedFillsReplayCache(t *testing.T) {
	const size = 200
	e := newEnv(t, envOptions{replaySize: size, policy: func(ws, deps []string) string {
		return fmt.Sprintf(`
rules:
  - name: noisy
    match: {repository_id: "123456"}
    grant: {workspaces: [%[1]s], max_role: WORKSPACE_AUTHOR, max_ttl: 30m}
    rate_limit: {rate: 5/m, burst: 5}
  - name: victim
    match: {repository_id: "777"}
    grant: {workspaces: [%[1]s], max_role: WORKSPACE_AUTHOR, max_ttl: 30m}
`, ws[0])
	}})
	counts := map[string]int{}
	for range size {
		st, body, _ := e.post("/v1/exchange", e.mint(mainClaims()), `{}`)
		code := "ok"
		if st != http.StatusOK {
			code, _ = errorCode(t, body)
		}
		counts[fmt.Sprintf("%d %s", st, code)]++
	}
	victim := mainClaims()
	victim.Repository, victim.RepositoryID = "acme/other", "777"
	st, body, _ := e.post("/v1/exchange", e.mint(victim), `{}`)
	if st != http.StatusOK {
		t.Fatalf("%d exchanges of one rate-limited repository (%v), replay cache %d: another repository then got %d %s",
			size, counts, size, st, body)
	}
	if counts["200 ok"] != 5 {
		t.Errorf("the noisy repository: %v, want 5 ok (its burst) and 429s", counts)
	}
	t.Logf("victim: %d (noisy: %v)", st, counts)

	// The victim's rule has no limit: its own exchanges fill the cache.
	for n := 0; ; n++ {
		if n > size {
			t.Fatalf("%d exchanges did not fill a replay cache of %d", n, size)
		}
		st, body, _ := e.post("/v1/exchange", e.mint(victim), `{}`)
		if st == http.StatusServiceUnavailable {
			if code, _ := errorCode(t, body); code != "busy" {
				t.Errorf("exchange into a full cache: %d %s, want 503 busy", st, code)
			}
			break
		}
	}
	if rst, rbody := e.get("/readyz"); rst != http.StatusServiceUnavailable || !strings.Contains(rbody, "replay cache full") {
		t.Errorf("/readyz with the replay cache full: %d %q, want 503 replay cache full", rst, rbody)
	}
}
