package policy_test

import (
	"strings"
	"testing"

	"github.com/astro-sts/astro-sts/internal/policy"
)

// TestSubDashFormSquat: the "-" form of the immutable sub (repo:acme-65/...)
// is also a valid classic sub of an owner named "acme-65", who matches it
// with any owner id. The broker matches what the token says, so validate
// must warn, say why, and point at the id claims.
func TestSubDashFormSquat(t *testing.T) {
	p, err := policy.Parse([]byte(`rules:
  - name: acme
    match:
      sub: {regex: "repo:acme-65/.*"}
      ref: refs/heads/main
      event_name: push
    grant: {workspaces: [ws1], max_role: WORKSPACE_AUTHOR, max_ttl: 30m}
`))
	if err != nil {
		t.Fatal(err)
	}
	squatter := policy.Claims{
		"sub": "repo:acme-65/evil:ref:refs/heads/main", "repository": "acme-65/evil",
		"repository_owner": "acme-65", "repository_owner_id": "999", "repository_id": "4242",
		"ref": "refs/heads/main", "event_name": "push",
	}
	d, err := p.Decide(squatter, policy.Request{})
	var ws []string
	for _, w := range p.Warnings() {
		ws = append(ws, w.String())
	}
	t.Logf("squatter owner acme-65 id 999: decision %+v err %v; warnings %q", d, err, ws)
	all := strings.Join(ws, "\n")
	for _, want := range []string{"registered by someone else", `classic sub of an owner named "acme-65"`, "repository_owner_id"} {
		if !strings.Contains(all, want) {
			t.Errorf("sub {regex: repo:acme-65/.*} lets owner \"acme-65\" (id 999) in (decision err %v), and the warnings %q do not say %q", err, ws, want)
		}
	}
}
