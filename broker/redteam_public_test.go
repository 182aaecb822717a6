package broker_test

import (
	"net/http"
	"strings"
	"testing"
)

// TestRedTeamAuditEchoesLongClaims: a signed token whose ref is 9,000
// bytes, from an identity no rule trusts (any workflow on GitHub), must
// not put 9,000 bytes of it into the audit line: every input the broker
// echoes in its logs is meant to be cut to a bounded length.
func TestRedTeamAuditEchoesLongClaims(t *testing.T) {
	e := newEnv(t, envOptions{})
	c := mainClaims()
	c.Ref = "refs/heads/" + strings.Repeat("Z", 9000)
	status, _, _ := e.post("/v1/exchange", e.mint(c), "")
	if status != http.StatusForbidden {
		t.Fatalf("status %d, want 403", status)
	}
	longest, field := 0, ""
	for _, rec := range e.audits("exchange") {
		for k, v := range rec {
			if s, ok := v.(string); ok && len(s) > longest {
				longest, field = len(s), k
			}
		}
	}
	if longest > 1024 {
		t.Errorf("the audit line echoes the claim %q uncut, %d bytes", field, longest)
	}
}

// TestRedTeamRedirectEchoesQuery: ServeMux's clean-path redirect of
// /v1//exchange answers 307 with the caller's whole query in Location, uncut.
func TestRedTeamRedirectEchoesQuery(t *testing.T) {
	e := newEnv(t, envOptions{})
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := client.Post(e.url+"/v1//exchange?"+strings.Repeat("x", 30000), "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if n := len(resp.Header.Get("Location")); n > 1024 {
		t.Errorf("%d answers with a %d-byte Location echoing the query", resp.StatusCode, n)
	}
}

// TestRedTeamTwoAuthorizationHeaders: a request with two Authorization
// headers is answered with the first; a proxy or log that reads the last
// sees another identity. A strict broker refuses the request.
func TestRedTeamTwoAuthorizationHeaders(t *testing.T) {
	e := newEnv(t, envOptions{})
	other := mainClaims()
	other.RepositoryID = "999"
	req, err := http.NewRequest(http.MethodPost, e.url+"/v1/exchange?dry_run=true", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Add("Authorization", "Bearer "+e.mint(mainClaims()))
	req.Header.Add("Authorization", "Bearer "+e.mint(other))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		t.Error("two Authorization headers are accepted (the first one decides), status 200")
	}
}
