package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/astro-sts/astro-sts/internal/brokerapi"
	"github.com/astro-sts/astro-sts/internal/testkit/testwait"
)

const policyCheckYAML = `
rules:
  - name: deploy-main
    match:
      repository_id: "74"
      ref: refs/heads/main
      event_name: [push, workflow_dispatch]
    grant:
      workspaces: [ws-prod]
      max_role: WORKSPACE_OPERATOR
      max_ttl: 30m
  - name: org-wide
    match:
      repository_owner_id: "65"
      environment: prod
    grant:
      workspaces: [ws-b, ws-a]
      max_role: WORKSPACE_ACCESSOR
      max_ttl: 10m
`

// policyCheckClaims has the shape of GitHub's documented example token
// (../shared/fixtures/github-oidc-claims.json), numbers included.
const policyCheckClaims = `{
  "jti": "example-id",
  "sub": "repo:octo-org/octo-repo:environment:prod",
  "environment": "prod",
  "aud": "https://github.com/octo-org",
  "ref": "refs/heads/main",
  "repository": "octo-org/octo-repo",
  "repository_owner": "octo-org",
  "repository_id": "74",
  "repository_owner_id": "65",
  "event_name": "workflow_dispatch",
  "iss": "https://token.actions.githubusercontent.com",
  "nbf": 1632492967,
  "exp": 1632493867,
  "iat": 1632493567
}`

func writePolicyTemp(t *testing.T, name, data string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestPolicyCheck(t *testing.T) {
	pol := writePolicyTemp(t, "policy.yaml", policyCheckYAML)
	sum := sha256.Sum256([]byte(policyCheckYAML))
	digest := hex.EncodeToString(sum[:])
	claims := writePolicyTemp(t, "claims.json", policyCheckClaims)
	pushClaims := writePolicyTemp(t, "push.json", strings.Replace(policyCheckClaims, `"workflow_dispatch"`, `"schedule"`, 1))
	otherRepo := writePolicyTemp(t, "other.json", `{"repository_id": "75", "repository_owner_id": "66", "ref": "refs/heads/main"}`)
	reqFile := writePolicyTemp(t, "req.json", `{"role": "WORKSPACE_MEMBER"}`)
	severalDepsYAML := "rules:\n  - name: deps\n    match: {repository_id: \"74\"}\n    grant: {deployments: [d1, d2], max_ttl: 5m}\n"
	severalDeps := writePolicyTemp(t, "deps.yaml", severalDepsYAML)
	severalDepsSum := sha256.Sum256([]byte(severalDepsYAML))
	severalDepsDigest := hex.EncodeToString(severalDepsSum[:])
	cleanYAML := "rules:\n  - name: narrow\n    match: {repository_owner_id: \"65\", repository_id: \"74\", ref: refs/heads/main, event_name: push}\n    grant: {deployments: [d1], max_ttl: 5m}\n"
	cleanPolicy := writePolicyTemp(t, "clean.yaml", cleanYAML)
	cleanSum := sha256.Sum256([]byte(cleanYAML))
	cleanDigest := hex.EncodeToString(cleanSum[:])
	tokenFile := writePolicyTemp(t, "token.jwt", unsignedJWT(t, policyCheckClaims)+"\n")
	badPolicy := writePolicyTemp(t, "bad.yaml", "rules:\n  - name: r\n    match: {event_name: push}\n    grant: {workspaces: [ws], max_role: WORKSPACE_GOD, max_ttl: 5m}\n")

	tests := []struct {
		name       string
		args       []string
		wantCode   int
		wantStdout string
		wantErr    []string // substrings of the returned error
	}{
		{
			name:     "allow with the grant's defaults",
			args:     []string{"check", "--policy", pol, "--claims", claims},
			wantCode: 0,
			wantStdout: `allow: rule "deploy-main"
  scope:      WORKSPACE
  workspace:  ws-prod
  role:       WORKSPACE_OPERATOR
  ttl:        30m0s
  policy:     sha256 ` + digest + "\n",
		},
		{
			name:     "allow narrowed",
			args:     []string{"check", "--policy", pol, "--claims", claims, "--request", `{"role": "WORKSPACE_AUTHOR", "ttl": "5m", "workspace_id": "ws-prod"}`},
			wantCode: 0,
			wantStdout: `allow: rule "deploy-main"
  scope:      WORKSPACE
  workspace:  ws-prod
  role:       WORKSPACE_AUTHOR
  ttl:        5m0s
  policy:     sha256 ` + digest + "\n",
		},
		{
			name:     "deny too wide, request from a file",
			args:     []string{"check", "--policy", pol, "--claims", pushClaims, "--request", "@" + reqFile},
			wantCode: 1,
			wantStdout: `deny (too_wide): role WORKSPACE_MEMBER exceeds WORKSPACE_ACCESSOR allowed by rule "org-wide"
  policy:     sha256 ` + digest + "\n",
			wantErr: []string{"policy check: denied"},
		},
		{
			name:     "Organization scope",
			args:     []string{"check", "--policy", pol, "--claims", pushClaims},
			wantCode: 0,
			wantStdout: `allow: rule "org-wide"
  scope:      ORGANIZATION
  workspaces: ws-a, ws-b (with ORGANIZATION_MEMBER)
  role:       WORKSPACE_ACCESSOR
  ttl:        10m0s
  policy:     sha256 ` + digest + "\n",
		},
		{
			name:     "deny: no rule matches",
			args:     []string{"check", "--policy", pol, "--claims", otherRepo},
			wantCode: 1,
			wantStdout: `deny (denied): no policy rule allows this identity
  closest:    rule "deploy-main" (1 of 3 entries hold): repository_id wants "74", the token has "75"
  closest:    rule "org-wide" (0 of 2 entries hold): repository_owner_id wants "65", the token has "66"
  policy:     sha256 ` + digest + "\n",
			wantErr: []string{"denied (denied)", "no rule matches"},
		},
		{
			name:     "deny: widening",
			args:     []string{"check", "--policy", pol, "--claims", claims, "--request", `{"role": "WORKSPACE_OWNER"}`},
			wantCode: 1,
			wantStdout: `deny (too_wide): role WORKSPACE_OWNER exceeds WORKSPACE_OPERATOR allowed by rule "deploy-main"
  policy:     sha256 ` + digest + "\n",
			wantErr: []string{"denied"},
		},
		{
			name:     "deny: the grant needs more than the request says",
			args:     []string{"check", "--policy", severalDeps, "--claims", claims},
			wantCode: 1,
			wantStdout: `deny (bad_request): the request is malformed: policy: bad request: rule "deps" grants several Deployments: ask for one with deployment_id
  policy:     sha256 ` + severalDepsDigest + "\n",
		},
		// Malformed whatever the policy: bad usage, as the broker's 400
		// before any rule.
		{"request for a Workspace and a Deployment", []string{"check", "--policy", pol, "--claims", claims, "--request", `{"workspace_id": "ws-prod", "deployment_id": "dep"}`}, 2, "", []string{"not both"}},
		{"request for an unknown role", []string{"check", "--policy", pol, "--claims", claims, "--request", `{"role": "ROOT"}`}, 2, "", []string{`unknown role "ROOT"`}},
		{
			name:     "a real token's claims, unverified",
			args:     []string{"check", "--policy", pol, "--token", tokenFile},
			wantCode: 0,
			wantStdout: `allow: rule "deploy-main"
  scope:      WORKSPACE
  workspace:  ws-prod
  role:       WORKSPACE_OPERATOR
  ttl:        30m0s
  policy:     sha256 ` + digest + "\n",
		},
		{"a token that is not one", []string{"check", "--policy", pol, "--token", writePolicyTemp(t, "t.jwt", "not.a-token")}, 2, "", []string{"not an ID token"}},
		{"both --claims and --token", []string{"check", "--policy", pol, "--claims", claims, "--token", tokenFile}, 2, "", []string{"one of --claims or --token"}},
		{
			name:     "bad policy file: every problem",
			args:     []string{"check", "--policy", badPolicy, "--claims", claims},
			wantCode: 2,
			wantErr:  []string{"the policy does not load", "identity constraint", `"WORKSPACE_GOD"`},
		},
		{"missing policy file", []string{"check", "--policy", filepath.Join(t.TempDir(), "nope.yaml"), "--claims", claims}, 2, "", []string{"no such file"}},
		{"missing claims file", []string{"check", "--policy", pol, "--claims", filepath.Join(t.TempDir(), "nope.json")}, 2, "", []string{"no such file"}},
		{"request with an unknown field", []string{"check", "--policy", pol, "--claims", claims, "--request", `{"roles": "x"}`}, 2, "", []string{`unknown field "roles"`}},
		{"request with a bad ttl", []string{"check", "--policy", pol, "--claims", claims, "--request", `{"ttl": "30"}`}, 2, "", []string{`ttl "30"`}},
		// The broker refuses these (400) before the policy sees them: a zero
		// TTL must not print "allow" with the grant's maximum.
		{"request with a zero ttl", []string{"check", "--policy", pol, "--claims", claims, "--request", `{"ttl": "0s"}`}, 2, "", []string{`ttl "0s" is not a positive duration`}},
		{"request with a negative ttl", []string{"check", "--policy", pol, "--claims", claims, "--request", `{"ttl": "-5m"}`}, 2, "", []string{`ttl "-5m" is not a positive duration`}},
		{"request with trailing data", []string{"check", "--policy", pol, "--claims", claims, "--request", `{} {}`}, 2, "", []string{"a single JSON object"}},
		// Decoded as the broker decodes a body: exact keys, each once; a
		// ttl of at least a minute.
		{"request with a key in the wrong case", []string{"check", "--policy", pol, "--claims", claims, "--request", `{"ROLE": "WORKSPACE_AUTHOR"}`}, 2, "", []string{`unknown field "ROLE"`}},
		{"request with a duplicate key", []string{"check", "--policy", pol, "--claims", claims, "--request", `{"ttl": "5m", "ttl": "10m"}`}, 2, "", []string{`duplicate field "ttl"`}},
		{"request with a ttl below the minimum", []string{"check", "--policy", pol, "--claims", claims, "--request", `{"ttl": "1ns"}`}, 2, "", []string{`ttl "1ns" is below the minimum of 1m0s`}},
		{"claims not an object", []string{"check", "--policy", pol, "--claims", writePolicyTemp(t, "c.json", `["a"]`)}, 2, "", []string{"not a JSON object"}},
		{"missing claims flag", []string{"check", "--policy", pol}, 2, "", []string{"--policy and one of --claims or --token are required"}},
		{"stray argument", []string{"check", "--policy", pol, "--claims", claims, "extra"}, 2, "", []string{`unexpected argument "extra"`}},
		{"unknown subcommand", []string{"frobnicate"}, 2, "", []string{`unknown command "frobnicate"`}},
		{"no subcommand", nil, 2, "", []string{"say check, validate, test or schema"}},
		{"validate ok, with a warning", []string{"validate", "--policy", pol}, 0, "ok: 2 rules, 0 rotations (sha256 " + digest + ")\n", nil},
		{"validate --strict fails on a warning", []string{"validate", "--strict", "--policy", pol}, 1, "ok: 2 rules, 0 rotations (sha256 " + digest + ")\n", []string{"1 warnings (--strict)"}},
		{"validate --strict passes without one", []string{"validate", "--strict", "--policy", cleanPolicy}, 0, "ok: 1 rules, 0 rotations (sha256 " + cleanDigest + ")\n", nil},
		{"validate bad", []string{"validate", "--policy", badPolicy}, 1, "", []string{"policy validate", `rules[0] "r".match: needs at least one identity constraint`, `rules[0] "r".grant.max_role`}},
		{"validate without --policy", []string{"validate"}, 2, "", []string{"--policy is required"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := runPolicy(context.Background(), tt.args, nil, &stdout, &stderr)
			if code := exitCode(err, io.Discard); code != tt.wantCode {
				t.Fatalf("exit code %d, want %d (err %v, stderr %s)", code, tt.wantCode, err, stderr.String())
			}
			if diff := cmp.Diff(tt.wantStdout, stdout.String()); diff != "" {
				t.Errorf("stdout (-want +got):\n%s", diff)
			}
			for _, w := range tt.wantErr {
				if err == nil || !strings.Contains(err.Error(), w) {
					t.Errorf("error %v lacks %q", err, w)
				}
			}
		})
	}
}

// unsignedJWT wraps a claims payload in a JWT with an empty signature: all
// --token needs, since it never verifies.
func unsignedJWT(t *testing.T, payload string) string {
	t.Helper()
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"RS256","kid":"k"}`)) + "." + enc([]byte(payload)) + "."
}

// validate's warnings go to stderr, one per line, whatever the exit code.
func TestPolicyValidateWarnings(t *testing.T) {
	pol := writePolicyTemp(t, "policy.yaml", policyCheckYAML)
	var stdout, stderr bytes.Buffer
	if err := runPolicy(context.Background(), []string{"validate", "--policy", pol}, nil, &stdout, &stderr); err != nil {
		t.Fatal(err)
	}
	want := `warning: rules[1] "org-wide": binds no event_name: pull_request_target and workflow_run runs, which carry the repository's identity for code it may not have reviewed, match too` + "\n"
	if diff := cmp.Diff(want, stderr.String()); diff != "" {
		t.Errorf("stderr (-want +got):\n%s", diff)
	}
}

func TestPolicyCheckJSON(t *testing.T) {
	pol := writePolicyTemp(t, "policy.yaml", policyCheckYAML)
	claims := writePolicyTemp(t, "claims.json", policyCheckClaims)
	var stdout bytes.Buffer
	err := runPolicy(context.Background(), []string{"check", "--json", "--policy", pol, "--claims", claims, "--request", `{"role":"WORKSPACE_OWNER"}`}, nil, &stdout, io.Discard)
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != 1 {
		t.Fatalf("err = %v, want exit 1", err)
	}
	var got map[string]any
	if err := json.Unmarshal(stdout.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	delete(got, "policy_sha256")
	want := map[string]any{"decision": "deny", "code": "too_wide", "rule": "deploy-main", "field": "role", "allowed": "WORKSPACE_OPERATOR",
		"message": `role WORKSPACE_OWNER exceeds WORKSPACE_OPERATOR allowed by rule "deploy-main"`}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestPolicyHelp(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"check", "--help"}, {"validate", "-h"}} {
		var stdout, stderr bytes.Buffer
		err := runPolicy(context.Background(), args, nil, &stdout, &stderr)
		if !errors.Is(err, errHelp) {
			t.Errorf("%v: err = %v, want errHelp", args, err)
		}
		if stdout.Len()+stderr.Len() == 0 {
			t.Errorf("%v printed no help", args)
		}
	}
}

// TestPolicyCheckRateLimit: the deciding rule's rate limit is part of what
// a check shows, in text and JSON.
func TestPolicyCheckRateLimit(t *testing.T) {
	pol := writePolicyTemp(t, "policy.yaml", "rate_limit: {rate: 30/h, burst: 10}\n"+policyCheckYAML)
	claims := writePolicyTemp(t, "claims.json", policyCheckClaims)
	var text, js bytes.Buffer
	if err := runPolicy(context.Background(), []string{"check", "--policy", pol, "--claims", claims}, nil, &text, io.Discard); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(text.String(), "  rate limit: 30/1h0m0s, burst 10 per repository\n") {
		t.Errorf("output lacks the rate limit:\n%s", text.String())
	}
	if err := runPolicy(context.Background(), []string{"check", "--json", "--policy", pol, "--claims", claims}, nil, &js, io.Discard); err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(js.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	if got["rate_limit"] != "30/1h0m0s, burst 10" {
		t.Errorf("rate_limit = %v, want 30/1h0m0s, burst 10", got["rate_limit"])
	}
}

// TestPolicyCheckRefusesWhatTheBrokerRefuses: each request body the broker
// (run through serve, over HTTP, with a verified ID token a rule trusts)
// refuses with 400 or 413 whatever the policy, `policy check --request`
// refuses with exit 2 and the message of the broker's answer; and a body
// the broker takes, the check takes too.
func TestPolicyCheckRefusesWhatTheBrokerRefuses(t *testing.T) {
	w := newE2EWorld(t)
	waitServing(t, w.brokerURL)
	ws, dep := w.emu.WorkspaceIDs()[0], "clxxxxxxxxxxxxxxxxxxxxxxx"
	tests := []struct {
		name, body string
		status     int // the broker's answer
	}{
		{"a key in the wrong case", `{"ROLE": "WORKSPACE_AUTHOR"}`, http.StatusBadRequest},
		{"a duplicate key", `{"role": "WORKSPACE_MEMBER", "role": "WORKSPACE_OWNER"}`, http.StatusBadRequest},
		{"an unknown key", `{"roles": "WORKSPACE_AUTHOR"}`, http.StatusBadRequest},
		{"a ttl below the minimum", `{"ttl": "30s"}`, http.StatusBadRequest},
		{"a ttl of a nanosecond", `{"ttl": "1ns"}`, http.StatusBadRequest},
		{"a zero ttl", `{"ttl": "0s"}`, http.StatusBadRequest},
		{"a ttl without a unit", `{"ttl": "30"}`, http.StatusBadRequest},
		{"a ttl that is a number", `{"ttl": 900}`, http.StatusBadRequest},
		{"an unknown role", `{"role": "ROOT"}`, http.StatusBadRequest},
		{"a Workspace and a Deployment", fmt.Sprintf(`{"workspace_id": %q, "deployment_id": %q}`, ws, dep), http.StatusBadRequest},
		{"not an object", `["role"]`, http.StatusBadRequest},
		{"two objects", `{} {}`, http.StatusBadRequest},
		{"not JSON", `{"role": `, http.StatusBadRequest},
		{"over the size limit", `{"role": "` + strings.Repeat("A", 70<<10) + `"}`, http.StatusRequestEntityTooLarge},
		{"a good request", fmt.Sprintf(`{"workspace_id": %q, "role": "WORKSPACE_MEMBER", "ttl": "1m"}`, ws), http.StatusOK},
		{"an empty body", ``, http.StatusOK},
	}
	pol := writePolicyTemp(t, "policy.yaml", e2ePolicy(ws))
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := w.trustedClaims()
			c.Audience = w.brokerURL
			idToken, err := w.iss.Mint(c)
			if err != nil {
				t.Fatal(err)
			}
			status, answer := postExchange(t, w.brokerURL, idToken, tt.body)
			if status != tt.status {
				t.Fatalf("the broker answered %d %s, want %d", status, answer.Message, tt.status)
			}

			tokenFile := writePolicyTemp(t, "id.jwt", idToken)
			reqFile := writePolicyTemp(t, "req.json", tt.body)
			var stdout bytes.Buffer
			err = runPolicy(context.Background(), []string{"check", "--policy", pol, "--token", tokenFile, "--request", "@" + reqFile}, nil, &stdout, io.Discard)
			code := exitCode(err, io.Discard)
			if status == http.StatusOK {
				if code != 0 {
					t.Errorf("the broker allowed it; policy check: exit %d, %v", code, err)
				}
				return
			}
			if code != 2 || stdout.Len() != 0 {
				t.Errorf("policy check: exit %d, stdout %q; want exit 2 and no decision", code, stdout.String())
			}
			if want := "policy check: --request: " + answer.Message; err == nil || err.Error() != want {
				t.Errorf("policy check: %v\nwant the broker's message: %s", err, want)
			}
		})
	}
}

// waitServing waits until the broker started by serve is ready: it
// refuses ID tokens issued before then, and up to idtoken.FutureLeeway
// after its start (a restart must not reopen replay).
func waitServing(t *testing.T, url string) {
	t.Helper()
	testwait.Until(t, 30*time.Second, "the broker at "+url+" to be ready", func() bool {
		resp, err := http.Get(url + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

// postExchange sends an exchange and returns the status and, for an error,
// the error body.
func postExchange(t *testing.T, brokerURL, idToken, body string) (int, brokerapi.ErrorBody) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, brokerURL+"/v1/exchange", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+idToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var eb brokerapi.ErrorBody
	if resp.StatusCode != http.StatusOK {
		if err := json.NewDecoder(resp.Body).Decode(&eb); err != nil {
			t.Fatalf("%d: the error body: %v", resp.StatusCode, err)
		}
	}
	return resp.StatusCode, eb
}
