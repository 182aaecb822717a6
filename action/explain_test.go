package action

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/astro-sts/astro-sts/internal/policy"
)

// websiteClaims are a push to main of a repository no rule trusts, with
// the claims GitHub sends.
func websiteClaims() map[string]any {
	return map[string]any{
		"iss": "https://token.actions.githubusercontent.com", "sub": "repo:acme/website:ref:refs/heads/main",
		"repository": "acme/website", "repository_id": "654321", "repository_owner": "acme", "repository_owner_id": "65",
		"ref": "refs/heads/main", "ref_type": "branch", "event_name": "push",
		"job_workflow_ref": "acme/website/.github/workflows/deploy.yml@refs/heads/main", "runner_environment": "github-hosted",
		"run_id": "2001", "run_attempt": "1", "iat": testNow.Unix(), "exp": testNow.Unix() + 300,
	}
}

// mintClaims makes the harness's token endpoint issue JWT-shaped tokens
// (unsigned: the broker here is a stand-in) with claims and a fresh jti.
func (h *harness) mintClaims(claims map[string]any) {
	h.ids.Mint = func(aud string) (string, error) {
		c := map[string]any{"aud": aud, "jti": rand.Text()}
		for k, v := range claims {
			c[k] = v
		}
		payload, err := json.Marshal(c)
		if err != nil {
			return "", err
		}
		enc := base64.RawURLEncoding.EncodeToString
		return enc([]byte(`{"alg":"RS256","kid":"k","typ":"JWT"}`)) + "." + enc(payload) + "." + enc([]byte("signature")), nil
	}
}

func withHeader(r cannedReply, name, value string) cannedReply {
	r.header = map[string]string{name: value}
	return r
}

func bodyReply(status int, body map[string]string) cannedReply {
	b, _ := json.Marshal(body)
	return cannedReply{status: status, body: string(b)}
}

// A refused exchange is explained in the job log and the step summary:
// the request id, the code, the job's own identity and a rule that trusts
// exactly it. Never the OIDC token.
func TestRefusalIsExplained(t *testing.T) {
	h := newHarness(t, map[string]string{InputRole: "WORKSPACE_AUTHOR", InputTTL: "20m"}, nil)
	h.mintClaims(websiteClaims())
	h.broker.on("/v1/exchange", bodyReply(403, map[string]string{"error": "denied", "message": "no policy rule allows this identity", "request_id": "req-1"}))
	err := Main(context.Background(), h.action(nil), h.deps())
	var be *BrokerError
	if !errors.As(err, &be) || be.Code != "denied" || be.RequestID != "req-1" {
		t.Fatalf("Main = %v, want the broker's denial", err)
	}
	if want := "the broker refused the exchange (403 denied, request id req-1): no policy rule allows this identity — no rule of the trust policy trusts this job: hand the rule in the step summary, and the request id, to your platform team"; err.Error() != want {
		t.Errorf("error\n%s\nwant\n%s", err, want)
	}
	h.checkNoLeak(err)

	rule := `  - name: "website-main"
    match:
      repository_owner_id: "65"
      repository_id: "654321"
      ref: "refs/heads/main"
      event_name: "push"
    grant:
      workspaces: ["REPLACE-WITH-WORKSPACE-ID"]
      max_role: WORKSPACE_AUTHOR
      max_ttl: 20m0s
`
	var log []string
	for _, line := range strings.Split(strings.TrimSpace(h.stdout.String()), "\n") {
		if !strings.HasPrefix(line, "::") {
			log = append(log, line)
		}
	}
	want := []string{
		"The broker refused this job's token exchange. Request id: req-1 (the broker's log explains the refusal under it).",
		"  code:    denied",
		"  message: no policy rule allows this identity",
		"This job's identity: the claims of its own OIDC token that trust policies match on (the token itself is never shown):",
		"  repository:          acme/website",
		"  repository_id:       654321",
		"  repository_owner_id: 65",
		"  ref:                 refs/heads/main",
		"  ref_type:            branch",
		"  event_name:          push",
		"  environment:         (not in the token)",
		"  job_workflow_ref:    acme/website/.github/workflows/deploy.yml@refs/heads/main",
		"  sub:                 repo:acme/website:ref:refs/heads/main",
		"  runner_environment:  github-hosted",
		"A rule that trusts exactly this job, for your platform team to review and add under `rules:` in the trust policy:",
	}
	want = append(want, strings.Split(strings.TrimSuffix(rule, "\n"), "\n")...)
	want = append(want, "Send them the request id req-1 with it.")
	if diff := cmp.Diff(want, log); diff != "" {
		t.Errorf("job log (-want +got):\n%s", diff)
	}

	sum := h.summary()
	for _, s := range []string{"### Astro API token refused", "| Request id | " + code("req-1") + " (the broker's log", "| Code | " + code("denied") + " |",
		"| " + code("repository_id") + " | " + code("654321") + " |", "| " + code("environment") + " | " + code("(not in the token)") + " |",
		"<pre lang=\"yaml\">\n" + htmlText(rule) + "</pre>\n"} {
		if !strings.Contains(sum, s) {
			t.Errorf("step summary lacks %q:\n%s", s, sum)
		}
	}

	// The rule is ready to paste: it parses, and allows this job's request
	// under its own name.
	p, err := policy.Parse([]byte("rules:\n" + rule))
	if err != nil {
		t.Fatal(err)
	}
	claims := policy.Claims{}
	for k, v := range websiteClaims() {
		if s, ok := v.(string); ok {
			claims[k] = s
		}
	}
	if d, err := p.Decide(claims, policy.Request{Role: "WORKSPACE_AUTHOR", TTL: 20 * time.Minute}); err != nil || d.Rule != "website-main" {
		t.Errorf("the suggested rule decides %+v, %v", d, err)
	}
	envs, outputs, state := h.files()
	if len(envs)+len(outputs)+len(state) > 0 {
		t.Errorf("a refusal wrote env %v, outputs %v, state %v", envs, outputs, state)
	}
}

// Each kind of refusal says what it can: too_wide the rule's maximum and a
// rule for what was asked; an invalid token the identity only (no rule can
// fix it); failures and malformed inputs nothing but the request id.
func TestRefusalKinds(t *testing.T) {
	tests := []struct {
		name      string
		reply     cannedReply
		want      []string // in the job log
		wantNot   []string
		explained bool
		summary   []string // in the step summary
	}{
		{
			name: "too wide",
			reply: bodyReply(403, map[string]string{"error": "too_wide", "message": `role WORKSPACE_OWNER exceeds WORKSPACE_AUTHOR allowed by rule "deploy-main"`,
				"request_id": "req-1", "rule": "deploy-main", "field": "role", "allowed": "WORKSPACE_AUTHOR"}),
			want:      []string{"  rule deploy-main trusts this job, and allows at most role: WORKSPACE_AUTHOR", "      max_role: WORKSPACE_OWNER", "ask for less"},
			explained: true,
		},
		{
			name:      "wrong audience",
			reply:     bodyReply(401, map[string]string{"error": "token_invalid", "reason": "wrong_audience", "message": "the OIDC token is for another audience", "request_id": "req-1"}),
			want:      []string{"  code:    token_invalid (wrong_audience)", "  repository:          acme/website", "set the audience input"},
			wantNot:   []string{"A rule that trusts"},
			explained: true,
		},
		{
			// The broker decided against this job: explained, with when to
			// come back, and not retried. No rule to suggest: one trusts it.
			name: "rate limited",
			reply: withHeader(bodyReply(429, map[string]string{"error": "rate_limited", "request_id": "req-1",
				"message": `this repository has had its share of tokens from rule "deploy-main" (5 per 1m0s, burst 5); try again later`}), "Retry-After", "120"),
			want: []string{"  code:    rate_limited", "  retry after: 2m0s", "  repository:          acme/website",
				"(429 rate_limited, request id req-1)", "re-run the job after 2m0s: the action does not wait out"},
			wantNot:   []string{"A rule that trusts", "retrying in"},
			explained: true,
			summary:   []string{"| Code | " + code("rate_limited") + " |", "| Retry after | " + code("2m0s") + " |", "| " + code("repository_id") + " | " + code("654321") + " |"},
		},
		{
			// Astro throttles the broker: nothing about this job to explain.
			name: "Astro throttles the broker",
			reply: withHeader(bodyReply(429, map[string]string{"error": "upstream_unavailable", "reason": "astro_rate_limited",
				"message": "the Astro API is rate limiting; try again later"}), "Retry-After", "20"),
			want:    []string{"(429 upstream_unavailable/astro_rate_limited, request id req-1)", "the Astro API is throttling the broker"},
			wantNot: []string{"This job's identity", "retrying in"},
		},
		{
			name:    "store unavailable",
			reply:   bodyReply(503, map[string]string{"error": "store_unavailable", "message": "the broker cannot reach its shared state; try again"}),
			want:    []string{"(503 store_unavailable, request id req-4)", "retrying in", "cannot reach its shared store (Redis)", "gave up after 4 attempts"},
			wantNot: []string{"This job's identity"},
		},
		{
			name:    "bad request",
			reply:   bodyReply(400, map[string]string{"error": "bad_request", "message": "ttl is too short", "request_id": "req-1"}),
			want:    []string{"(400 bad_request, request id req-1)"},
			wantNot: []string{"This job's identity"},
		},
		{
			name:    "the broker fails",
			reply:   bodyReply(502, map[string]string{"error": "upstream_unavailable", "reason": "astro_error", "message": "the Astro API failed; try again"}),
			want:    []string{"(502 upstream_unavailable/astro_error, request id req-4)"},
			wantNot: []string{"This job's identity"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, map[string]string{InputRole: "WORKSPACE_OWNER"}, nil)
			h.mintClaims(websiteClaims())
			h.broker.on("/v1/exchange", tt.reply)
			err := Main(context.Background(), h.action(nil), h.deps())
			if err == nil {
				t.Fatal("Main succeeded")
			}
			out := h.stdout.String() + err.Error()
			for _, w := range tt.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			for _, w := range tt.wantNot {
				if strings.Contains(out, w) {
					t.Errorf("output has %q:\n%s", w, out)
				}
			}
			if got := strings.Contains(h.summary(), "### Astro API token refused"); got != tt.explained {
				t.Errorf("summary explains: %v, want %v", got, tt.explained)
			}
			for _, w := range tt.summary {
				if !strings.Contains(h.summary(), w) {
					t.Errorf("summary lacks %q:\n%s", w, h.summary())
				}
			}
			h.checkNoLeak(err)
		})
	}
}

// No answer at all: the error names the request id the action sent last,
// which the broker's log has if the request arrived.
func TestCallErrorNamesTheRequestID(t *testing.T) {
	h := newHarness(t, nil, nil)
	h.broker.on("/v1/exchange", cannedReply{hangUp: true})
	err := Main(context.Background(), h.action(nil), h.deps())
	var ce *CallError
	if !errors.As(err, &ce) {
		t.Fatalf("Main = %v, want a CallError", err)
	}
	calls := h.broker.Calls()
	if ce.RequestID == "" || ce.RequestID != calls[len(calls)-1].RequestID || !strings.Contains(err.Error(), "(last request id "+ce.RequestID+")") {
		t.Errorf("error %v; last request id sent %q", err, calls[len(calls)-1].RequestID)
	}
}

// Every attempt sends its own well-formed request id.
func TestRequestIDs(t *testing.T) {
	h := newHarness(t, nil, nil)
	h.broker.on("/v1/exchange", errReply(503, "busy", "try again"), errReply(503, "busy", "try again"), exchangeOK(astroToken))
	if err := Main(context.Background(), h.action(nil), h.deps()); err != nil {
		t.Fatal(err)
	}
	wellFormed := regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)
	seen := map[string]bool{}
	for _, c := range h.broker.Calls() {
		if !wellFormed.MatchString(c.RequestID) || seen[c.RequestID] {
			t.Errorf("request id %q: not well-formed or sent twice", c.RequestID)
		}
		seen[c.RequestID] = true
	}
	if len(seen) != 3 {
		t.Errorf("%d request ids for 3 attempts", len(seen))
	}
}

// dry-run: true asks the broker to decide, prints the decision and the
// rule, and exports nothing.
func TestDryRunInput(t *testing.T) {
	allowed := cannedReply{status: 200, body: `{"dry_run": true, "decision": "allow", "rule": "deploy-main", "scope": "WORKSPACE",
		"organization_id": "org_1", "workspace_id": "ws_1", "role": "WORKSPACE_AUTHOR", "ttl": "30m0s"}`}
	t.Run("allowed", func(t *testing.T) {
		h := newHarness(t, map[string]string{InputDryRun: "true"}, nil)
		h.broker.on("/v1/exchange", allowed)
		if err := Main(context.Background(), h.action(nil), h.deps()); err != nil {
			t.Fatal(err)
		}
		calls := h.broker.Calls()
		if len(calls) != 1 || calls[0].Query != "dry_run=true" {
			t.Fatalf("calls %+v, want one with dry_run=true", calls)
		}
		want := `Dry run: the broker would mint a Workspace token for ws_1, role WORKSPACE_AUTHOR, for 30m0s, under rule "deploy-main". Nothing was minted or exported, and the OIDC token was not spent (request id req-1).`
		if !strings.Contains(h.stdout.String(), want+"\n") {
			t.Errorf("stdout %q lacks %q", h.stdout.String(), want)
		}
		if s := h.summary(); !strings.Contains(s, "dry run, allowed") || !strings.Contains(s, "| Rule | "+code("deploy-main")+" |") || !strings.Contains(s, "| Request id | "+code("req-1")+" |") {
			t.Errorf("summary:\n%s", s)
		}
		envs, outputs, state := h.files()
		if len(envs)+len(outputs)+len(state) > 0 {
			t.Errorf("a dry run wrote env %v, outputs %v, state %v", envs, outputs, state)
		}
		h.checkNoLeak(nil)
	})
	t.Run("needs no runner files but the summary", func(t *testing.T) {
		h := newHarness(t, map[string]string{InputDryRun: "true"}, nil)
		h.broker.on("/v1/exchange", allowed)
		env := h.runner.Env()
		delete(env, "GITHUB_ENV")
		delete(env, "GITHUB_STATE")
		delete(env, "GITHUB_OUTPUT")
		if err := Main(context.Background(), h.action(env), h.deps()); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("denied", func(t *testing.T) {
		h := newHarness(t, map[string]string{InputDryRun: "true"}, nil)
		h.mintClaims(websiteClaims())
		h.broker.on("/v1/exchange", bodyReply(403, map[string]string{"error": "denied", "message": "no policy rule allows this identity", "request_id": "req-1"}))
		err := Main(context.Background(), h.action(nil), h.deps())
		var be *BrokerError
		if !errors.As(err, &be) || be.Code != "denied" {
			t.Fatalf("Main = %v", err)
		}
		if !strings.Contains(h.stdout.String(), `  - name: "website-main"`) || !strings.Contains(h.summary(), "### Astro API token refused") {
			t.Errorf("a denied dry run is not explained:\n%s", h.stdout.String())
		}
		h.checkNoLeak(err)
	})
	t.Run("a broker that minted instead", func(t *testing.T) {
		h := newHarness(t, map[string]string{InputDryRun: "true"}, nil)
		h.broker.on("/v1/exchange", exchangeOK(astroToken))
		err := Main(context.Background(), h.action(nil), h.deps())
		var ce *CallError
		if !errors.As(err, &ce) || !strings.Contains(err.Error(), "may not support dry_run") {
			t.Fatalf("Main = %v", err)
		}
		if strings.Contains(h.stdout.String()+h.summary()+err.Error(), astroToken) {
			t.Error("the minted token shows")
		}
	})
	t.Run("not in rotate mode", func(t *testing.T) {
		h := newHarness(t, map[string]string{InputDryRun: "true", InputMode: "rotate", InputRotation: "airflow-ci"}, nil)
		err := Main(context.Background(), h.action(nil), h.deps())
		if err == nil || !strings.Contains(err.Error(), "input dry-run: only applies to mode: exchange") {
			t.Fatalf("Main = %v", err)
		}
	})
	t.Run("not a boolean", func(t *testing.T) {
		h := newHarness(t, map[string]string{InputDryRun: "yes"}, nil)
		err := Main(context.Background(), h.action(nil), h.deps())
		if err == nil || !strings.Contains(err.Error(), `input dry-run: "yes" is not a boolean`) {
			t.Fatalf("Main = %v", err)
		}
	})
}

// htmlText leaves letters, digits, spaces and line feeds, and writes the
// rest as character references that read back as the same text.
// code is how the step summary shows a value: see md.
func code(s string) string { return "<code>" + htmlText(s) + "</code>" }

func TestHTMLText(t *testing.T) {
	for in, want := range map[string]string{
		"deploy main 2":                     "deploy main 2",
		"https://evil.example/a":            "https&#58;&#47;&#47;evil&#46;example&#47;a",
		"a|b`c<d>&e\n@f#1 \u0640\U0001F600": "a&#124;b&#96;c&#60;d&#62;&#38;e\n&#64;f&#35;1 &#1600;&#128512;",
	} {
		if got := htmlText(in); got != want {
			t.Errorf("htmlText(%q) = %q, want %q", in, got, want)
		}
	}
}
