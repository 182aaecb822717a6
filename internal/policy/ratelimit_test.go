package policy_test

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/astro-sts/astro-sts/internal/policy"
)

const limitedPolicy = `
rate_limit: {rate: 30/h, burst: 10}   # the default for every rule
rules:
  - name: deploy-main
    match: {repository_id: "123456", ref: refs/heads/main}
    grant: {workspaces: [ws-prod], max_role: WORKSPACE_OPERATOR, max_ttl: 30m}
    rate_limit: {rate: 5/m}
  - name: nightly
    match: {repository_id: "123456", event_name: schedule}
    grant: {workspaces: [ws-prod], max_role: WORKSPACE_AUTHOR, max_ttl: 30m}
    rate_limit: none
  - name: preview
    match: {repository_id: "123456"}
    grant: {workspaces: [ws-dev], max_role: WORKSPACE_AUTHOR, max_ttl: 1h}
`

// TestRateLimitDecisions: the deciding rule's own limit, else the
// default; none lifts the default; a policy without limits has none.
func TestRateLimitDecisions(t *testing.T) {
	p := mustParse(t, limitedPolicy)
	tests := []struct {
		claims policy.Claims
		rule   string
		want   policy.RateLimit
	}{
		{policy.Claims{"repository_id": "123456", "ref": "refs/heads/main"}, "deploy-main", policy.RateLimit{Rate: 5, Period: time.Minute, Burst: 5}},
		{policy.Claims{"repository_id": "123456", "event_name": "schedule"}, "nightly", policy.RateLimit{}},
		{policy.Claims{"repository_id": "123456", "ref": "refs/heads/dev"}, "preview", policy.RateLimit{Rate: 30, Period: time.Hour, Burst: 10}},
	}
	for _, tt := range tests {
		t.Run(tt.rule, func(t *testing.T) {
			d, err := p.Decide(tt.claims, policy.Request{})
			if err != nil {
				t.Fatal(err)
			}
			if d.Rule != tt.rule {
				t.Fatalf("rule %q decided, want %q", d.Rule, tt.rule)
			}
			if diff := cmp.Diff(tt.want, d.RateLimit); diff != "" {
				t.Errorf("rate limit (-want +got):\n%s", diff)
			}
		})
	}
	d, err := mustParse(t, basePolicy).Decide(mainClaims(), policy.Request{})
	if err != nil {
		t.Fatal(err)
	}
	if !d.RateLimit.IsZero() {
		t.Errorf("a policy without rate_limit limits to %s", d.RateLimit)
	}
}

func TestRateLimitSyntax(t *testing.T) {
	policyWith := func(top, rule string) string {
		src := "rules:\n  - name: r\n    match: {repository_id: '1'}\n    grant: {workspaces: [ws], max_role: WORKSPACE_MEMBER, max_ttl: 5m}\n"
		if rule != "" {
			src += "    rate_limit: " + rule + "\n"
		}
		if top != "" {
			src = "rate_limit: " + top + "\n" + src
		}
		return src
	}
	accepts := []struct {
		top, rule string
		want      policy.RateLimit
	}{
		{"{rate: 30/h}", "", policy.RateLimit{Rate: 30, Period: time.Hour, Burst: 30}},
		{"{rate: 1/s, burst: 1}", "", policy.RateLimit{Rate: 1, Period: time.Second, Burst: 1}},
		{"{rate: 10/15m, burst: 3}", "", policy.RateLimit{Rate: 10, Period: 15 * time.Minute, Burst: 3}},
		{"{rate: 100/24h}", "", policy.RateLimit{Rate: 100, Period: 24 * time.Hour, Burst: 100}},
		{"{rate: 30/h}", "{rate: 2/m, burst: 4}", policy.RateLimit{Rate: 2, Period: time.Minute, Burst: 4}},
		{"{rate: 30/h}", "none", policy.RateLimit{}},
		{"", "{rate: 7/m}", policy.RateLimit{Rate: 7, Period: time.Minute, Burst: 7}},
	}
	for _, tt := range accepts {
		src := policyWith(tt.top, tt.rule)
		p, err := policy.Parse([]byte(src))
		if err != nil {
			t.Errorf("%s: %v", src, err)
			continue
		}
		d, err := p.Decide(policy.Claims{"repository_id": "1"}, policy.Request{})
		if err != nil {
			t.Fatal(err)
		}
		if d.RateLimit != tt.want {
			t.Errorf("top %q rule %q: %+v, want %+v", tt.top, tt.rule, d.RateLimit, tt.want)
		}
	}

	refuses := []struct {
		top, rule string
		want      string
	}{
		{"none", "", `rate_limit: none is only for a rule`},
		{"{burst: 3}", "", `rate_limit: rate is required`},
		{"{rate: 30}", "", `rate_limit.rate: "30" is not COUNT/PERIOD`},
		{"{rate: 30/day}", "", `period is not s, m, h or a duration`},
		{"{rate: 0/h}", "", `count is not a whole number from 1 to 1000000`},
		{"{rate: -1/h}", "", `count is not a whole number`},
		{"{rate: 2000000/h}", "", `count is not a whole number`},
		{"{rate: 5/500ms}", "", `period 500ms is not within 1s..24h0m0s`},
		{"{rate: 5/48h}", "", `period 48h0m0s is not within`},
		{"{rate: 5/m, burst: 0}", "", `rate_limit.burst: "0" is not a whole number`},
		{"{rate: 5/m, burst: many}", "", `rate_limit.burst: "many" is not a whole number`},
		{"{rate: 5/m, bursts: 2}", "", `rate_limit: unknown key "bursts"`},
		{"[5/m]", "", `rate_limit: must be a mapping`},
		{"", "{rate: 5/m, burst: 1.5}", `rules[0] "r".rate_limit.burst: must be a string, not !!float`},
		{"", "off", `rules[0] "r".rate_limit: must be a mapping`},
	}
	for _, tt := range refuses {
		src := policyWith(tt.top, tt.rule)
		_, err := policy.Parse([]byte(src))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("top %q rule %q: %v, want an error containing %q", tt.top, tt.rule, err, tt.want)
		}
	}
}

func TestRateLimitString(t *testing.T) {
	for _, tt := range []struct {
		l    policy.RateLimit
		want string
	}{
		{policy.RateLimit{}, "none"},
		{policy.RateLimit{Rate: 30, Period: time.Hour, Burst: 10}, "30/1h0m0s, burst 10"},
	} {
		if got := tt.l.String(); got != tt.want {
			t.Errorf("%+v: %q, want %q", tt.l, got, tt.want)
		}
	}
}
