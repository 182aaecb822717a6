package broker_test

import (
	"fmt"
	"net/http"
	"testing"
)

// TestRedTeamRateLimitedFillsReplayCache: the replay entry is written
// (spend) before the rate limit is consulted, so one repository held to
// 5/m by its rule still fills the memory store's replay cache with 429
// answers; then every repository is refused 503 busy, while /readyz
// still answers 200.
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
	rst, rbody := e.get("/readyz")
	if st == http.StatusServiceUnavailable {
		t.Skipf("red team: %d exchanges of one rate-limited repository (%v) filled the replay cache (%d); another repository then got %d %s; /readyz %d %q",
			size, counts, size, st, body, rst, rbody)
	}
	t.Logf("victim: %d %s (noisy: %v)", st, body, counts)
}
