package policy_test

import (
	"errors"
	"fmt"
	"time"

	"github.com/astro-sts/astro-sts/internal/policy"
)

func ExamplePolicy_Decide() {
	p, err := policy.Parse([]byte(`
rules:
  - name: deploy-main
    match:
      repository_id: "123456"
      ref: refs/heads/main
      event_name: [push, workflow_dispatch]
    grant:
      workspaces: [clws0001]
      max_role: WORKSPACE_OPERATOR
      max_ttl: 30m
`))
	if err != nil {
		fmt.Println(err)
		return
	}
	claims := policy.Claims{"repository_id": "123456", "ref": "refs/heads/main", "event_name": "push"}

	d, err := p.Decide(claims, policy.Request{Role: "WORKSPACE_AUTHOR", TTL: 10 * time.Minute})
	fmt.Println(d.Rule, d.Scope, d.WorkspaceID, d.Role, d.TTL, err)

	_, err = p.Decide(claims, policy.Request{Role: "WORKSPACE_OWNER"})
	var widen *policy.WidenError
	fmt.Println(errors.As(err, &widen), err)

	claims["ref"] = "refs/heads/dev"
	_, err = p.Decide(claims, policy.Request{})
	fmt.Println(errors.Is(err, policy.ErrNoMatchingRule))
	// Output:
	// deploy-main WORKSPACE clws0001 WORKSPACE_AUTHOR 10m0s <nil>
	// true role WORKSPACE_OWNER exceeds WORKSPACE_OPERATOR allowed by rule "deploy-main"
	// true
}

func ExampleParse() {
	_, err := policy.Parse([]byte(`
rules:
  - name: too-broad
    match: {event_name: push}
    grant: {workspaces: [clws0001], max_role: WORKSPACE_OWNER, max_ttl: 48h}
`))
	fmt.Println(err)
	// Output:
	// rules[0] "too-broad".match: needs at least one identity constraint that pins an owner: repository, repository_id, repository_owner, repository_owner_id, sub, job_workflow_ref (an exact value, or a glob/regex whose fixed prefix includes the owner) (line 4)
	// rules[0] "too-broad".grant.max_ttl: 48h0m0s is not within 1m0s..24h0m0s (line 5)
}

func ExamplePolicy_Explain() {
	p, err := policy.Parse([]byte(`
rules:
  - name: deploy-main
    match:
      repository_id: "123456"
      ref: refs/heads/main
      event_name: [push, workflow_dispatch]
    grant: {workspaces: [clws0001], max_role: WORKSPACE_AUTHOR, max_ttl: 30m}
`))
	if err != nil {
		fmt.Println(err)
		return
	}
	claims := policy.Claims{"repository_id": "123456", "ref": "refs/heads/dev", "event_name": "push"}
	for _, m := range p.Explain(claims, 3) {
		fmt.Printf("rule %s (%d of %d hold): %s wants %s, the token has %s\n", m.Rule, m.Held, m.Of, m.Key, m.Expected, m.Actual)
	}
	// Output:
	// rule deploy-main (2 of 3 hold): ref wants "refs/heads/main", the token has "refs/heads/dev"
}

func ExampleSuggest() {
	claims := policy.Claims{
		"repository": "acme/website", "repository_id": "654321", "repository_owner_id": "65",
		"ref": "refs/heads/main", "environment": "production", "event_name": "push",
	}
	rule, err := policy.Suggest(claims, policy.Request{WorkspaceID: "clws0001", TTL: 15 * time.Minute})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Print(rule)
	// Output:
	//   - name: "website-production"
	//     match:
	//       repository_owner_id: "65"
	//       repository_id: "654321"
	//       environment: "production"
	//       event_name: "push"
	//     grant:
	//       workspaces: ["clws0001"]
	//       max_role: WORKSPACE_AUTHOR
	//       max_ttl: 15m0s
}
