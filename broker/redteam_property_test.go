package broker_test

import (
	"fmt"
	"strings"
	"testing"
)

// TestRedTeamRepoPropertyConfusion: which claim does a rule on
// repo_property_astro-team see when the token carries look-alikes?
func TestRedTeamRepoPropertyConfusion(t *testing.T) {
	e := newEnv(t, envOptions{policy: func(ws, _ []string) string {
		return fmt.Sprintf(`rules:
  - name: team
    match:
      repository_id: "123456"
      repo_property_astro-team: data
    grant: {workspaces: [%s], max_role: WORKSPACE_AUTHOR, max_ttl: 30m}
`, ws[0])
	}})
	cases := []struct {
		name  string
		extra map[string]any
		want  int
	}{
		{"exact", map[string]any{"repo_property_astro-team": "data"}, 200},
		{"both cases", map[string]any{"repo_property_astro-team": "data", "repo_property_Astro-Team": "ops"}, 401},
		{"both cases reversed", map[string]any{"repo_property_astro-team": "ops", "repo_property_Astro-Team": "data"}, 401},
		{"upper prefix", map[string]any{"REPO_PROPERTY_astro-team": "data"}, 403},
		{"capitalised only", map[string]any{"repo_property_Astro-Team": "data"}, 403},
		{"long s", map[string]any{"repo_property_a\u017ftro-team": "data"}, 403},
		{"long s and exact", map[string]any{"repo_property_a\u017ftro-team": "ops", "repo_property_astro-team": "data"}, 401},
		{"trailing space", map[string]any{"repo_property_astro-team ": "data"}, 403},
		{"NUL", map[string]any{"repo_property_astro-team\x00": "data"}, 403},
		{"array", map[string]any{"repo_property_astro-team": []any{"data"}}, 403},
		{"number", map[string]any{"repo_property_astro-team": 1}, 403},
		{"bool", map[string]any{"repo_property_astro-team": true}, 403},
		{"null", map[string]any{"repo_property_astro-team": nil}, 403},
		{"object", map[string]any{"repo_property_astro-team": map[string]any{"data": "data"}}, 403},
		{"long name 1k", map[string]any{"repo_property_" + strings.Repeat("x", 1000): "data", "repo_property_astro-team": "data"}, 200},
		{"long name 100k", map[string]any{"repo_property_" + strings.Repeat("x", 100000): "data", "repo_property_astro-team": "data"}, 401},
	}
	for _, tc := range cases {
		c := mainClaims()
		c.Extra = tc.extra
		status, body, _ := e.post("/v1/exchange", e.mint(c), "")
		msg := string(body)
		if len(msg) > 160 {
			msg = msg[:160]
		}
		t.Logf("%-20s -> %d %s", tc.name, status, strings.TrimSpace(msg))
		if status != tc.want {
			t.Errorf("%s: %d, want %d", tc.name, status, tc.want)
		}
	}
}
