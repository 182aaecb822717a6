package action

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"unicode"

	"github.com/astro-sts/astro-sts/internal/policy"
)

// hostile is text someone else chose (a claim, a broker field, an input),
// built to start workflow commands: after every way to end a line that the
// runner (LF, CR) or the log viewer (NEL, U+2028, U+2029) knows, a command;
// in the middle of the line, legacy "##[" commands, bare and hidden behind
// invisible characters or characters ICU's collation ignores; and "%0A", which the runner decodes to a line break
// in a command's data. tag, near the start, tells the copies apart.
func hostile(tag string) string {
	return "::set-output name=token::FAKE-" + tag +
		"\n::add-mask::FAKE\r::stop-commands::FAKE\r\n  ::save-state name=TOKEN_ID::FAKE" +
		" x##[set-output name=token]FAKE %0A::set-env name=X::FAKE" +
		"\u2028::add-path::FAKE\u0085::add-mask::FAKE\u2029\t::stop-commands::FAKE" +
		" ##\u200b[add-mask]FAKE #\u00ad#[stop-commands]FAKE ##\ufe0f[add-mask]FAKE" +
		" #\u0640#[set-output name=token]FAKE #\u0591\u05a2#[add-mask]FAKE\n\u180a::add-mask::FAKE"
}

// hostileLine is [hostile] without CR and LF, for the fields of a
// successful answer, which the action refuses with a line break.
func hostileLine(tag string) string {
	return strings.NewReplacer("\r", " ", "\n", " ").Replace(hostile(tag))
}

func hostileJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// Nothing the action prints from a claim, a broker answer or an input can
// be a workflow command: every line of the job log and of the step summary
// is checked as the runner reads it, for every path that prints such text.
// The action runs as cmd/astro-sts runs it: Main, its error reported with
// ReportError, then Post with the environment the runner gives the post
// step.
func TestNoWorkflowCommandFromUntrustedText(t *testing.T) {
	claims := websiteClaims()
	for _, name := range IdentityClaims() {
		claims[name] = hostile(name)
	}
	tests := []struct {
		name    string
		inputs  map[string]string
		replies map[string][]cannedReply // by path suffix
		post    bool
		// shown are tags of hostile text that must reach the log: the test
		// checks that the text is printed, not that it is dropped.
		shown []string
	}{
		{
			name: "denied: the claims table, the suggested rule, the broker's fields",
			replies: map[string][]cannedReply{"/v1/exchange": {withHeader(bodyReply(403, map[string]string{
				"error": "denied", "reason": hostile("reason"), "message": hostile("message"), "request_id": hostile("body-id"),
			}), "X-Request-Id", hostileLine("request-id"))}},
			shown: append(IdentityClaims(), "reason", "message", "request-id"),
		},
		{
			name: "too wide: the rule, the field, the maximum",
			replies: map[string][]cannedReply{"/v1/exchange": {bodyReply(403, map[string]string{
				"error": "too_wide", "message": hostile("message"), "rule": hostile("rule"), "field": hostile("field"), "allowed": hostile("allowed"),
			})}},
			shown: []string{"message", "rule", "field", "allowed", "environment"},
		},
		{
			name: "rate limited",
			replies: map[string][]cannedReply{"/v1/exchange": {withHeader(bodyReply(429, map[string]string{
				"error": "rate_limited", "message": hostile("message"),
			}), "Retry-After", "60")}},
			shown: []string{"message", "sub"},
		},
		{
			name:    "the broker fails, and is retried",
			replies: map[string][]cannedReply{"/v1/exchange": {bodyReply(503, map[string]string{"error": hostile("code"), "message": hostile("message")})}},
			shown:   []string{"code", "message"},
		},
		{
			name: "exchanged, and the revoke fails",
			replies: map[string][]cannedReply{
				"/v1/exchange": {{status: 200, body: hostileJSON(t, map[string]string{
					"token": astroToken, "token_id": hostileLine("token-id"), "organization_id": hostileLine("org"),
					"workspace_id": hostileLine("workspace"), "role": hostileLine("role"), "rule": hostileLine("rule"),
					"expires_at": "2030-01-02T03:19:05Z",
				})}},
				"/v1/revoke": {bodyReply(403, map[string]string{"error": "forbidden", "message": hostile("revoke-message")})},
			},
			post:  true,
			shown: []string{"token-id", "workspace", "role", "rule", "revoke-message"},
		},
		{
			name:   "dry run",
			inputs: map[string]string{InputDryRun: "true"},
			replies: map[string][]cannedReply{"/v1/exchange": {{status: 200, body: hostileJSON(t, map[string]any{
				"dry_run": true, "decision": "allow", "rule": hostile("rule"), "scope": hostile("scope"),
				"workspace_roles": map[string]string{hostile("ws-a"): "WORKSPACE_AUTHOR", hostile("ws-b"): "WORKSPACE_AUTHOR"},
				"role":            hostile("role"), "ttl": hostile("ttl"),
			})}}},
			shown: []string{"ws-a"}, // the rest is past the line's 500 characters
		},
		{
			name:   "rotated",
			inputs: map[string]string{InputMode: "rotate", InputRotation: "airflow-ci"},
			replies: map[string][]cannedReply{"/v1/rotate": {{status: 200, body: hostileJSON(t, map[string]any{
				"name": hostile("name"), "token_id": hostile("token-id"), "strategy": hostile("strategy"), "rotated_at": hostile("at"),
				"sinks": []map[string]string{{"kind": hostile("kind"), "target": hostile("target"), "version": hostile("version")}},
			})}}},
			shown: []string{"name", "token-id", "strategy"},
		},
		{
			name:   "a rotation fails in a sink",
			inputs: map[string]string{InputMode: "rotate", InputRotation: "airflow-ci"},
			replies: map[string][]cannedReply{"/v1/rotate": {{status: 502, body: hostileJSON(t, map[string]any{
				"error": "sink_failed", "message": hostile("message"),
				"sinks": []map[string]string{{"kind": "github", "target": hostile("target"), "version": "", "error": hostile("sink-error")}},
			})}}},
			shown: []string{"message"},
		},
		{
			name:   "inputs the action refuses",
			inputs: map[string]string{InputRole: hostile("role-input"), InputTTL: hostile("ttl-input"), InputExportEnv: hostile("export-input")},
			shown:  []string{"role-input", "ttl-input", "export-input"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, tt.inputs, nil)
			h.mintClaims(claims)
			for path, rs := range tt.replies {
				h.broker.on(path, rs...)
			}
			if err := Main(context.Background(), h.action(nil), h.deps()); err != nil {
				ReportError(h.action(nil), err)
			}
			if tt.post {
				postEnv, err := h.runner.PostEnv()
				if err != nil {
					t.Fatal(err)
				}
				if err := Post(context.Background(), h.action(postEnv), h.deps()); err != nil {
					t.Fatalf("Post: %v", err)
				}
			}
			out := h.stdout.String()
			for _, tag := range tt.shown {
				if !strings.Contains(out, "FAKE-"+tag) {
					t.Errorf("the log does not show the %s text at all", tag)
				}
			}
			if tt.name == "denied: the claims table, the suggested rule, the broker's fields" {
				checkRuleFromLog(t, out, claims)
			}
			secrets := append([]string{astroToken}, h.ids.Issued()...)
			checkNoCommands(t, "job log", out, secrets)
			checkNoCommands(t, "step summary", h.summary(), nil)
		})
	}
}

// checkRuleFromLog takes the suggested rule as the job log shows it, as
// the workflow's author would copy it, and checks that the policy parser
// reads back the hostile claims exactly: the rule trusts this job.
func checkRuleFromLog(t *testing.T, out string, claims map[string]any) {
	t.Helper()
	var rule []string
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "  - name: ") || len(rule) > 0 && strings.HasPrefix(line, "    ") {
			rule = append(rule, line)
		}
	}
	p, err := policy.Parse([]byte("rules:\n" + strings.Join(rule, "\n") + "\n"))
	if err != nil {
		t.Fatalf("the rule in the log does not parse: %v\n%s", err, strings.Join(rule, "\n"))
	}
	c := policy.Claims{}
	for k, v := range claims {
		if s, ok := v.(string); ok {
			c[k] = s
		}
	}
	if _, err := p.Decide(c, policy.Request{}); err != nil {
		t.Errorf("the rule in the log refuses the job it was written for: %v", err)
	}
}

// checkNoCommands fails the test for a line of out that the runner would
// read as a workflow command the action did not mean to write. Lines end
// where the runner ends them (LF, CR) and, stricter, where a viewer might
// (NEL, U+2028, U+2029). A line may hold "##[" nowhere, not even with
// invisible characters taken out; it may start with "::" (after white
// space and invisible characters, as the runner trims) only for the
// action's own commands: add-mask of one of secrets, and error, warning and
// notice annotations whose data, decoded as the runner decodes it, holds
// no line break. secrets nil allows no command at all.
func checkNoCommands(t *testing.T, where, out string, secrets []string) {
	t.Helper()
	lines := strings.FieldsFunc(out, func(r rune) bool {
		return r == '\n' || r == '\r' || r == '\u0085' || r == '\u2028' || r == '\u2029'
	})
	invisible := func(r rune) bool {
		return unicode.Is(unicode.Cf, r) || unicode.Is(unicode.Other_Default_Ignorable_Code_Point, r) || unicode.Is(unicode.Variation_Selector, r)
	}
	errorLines := 0
	for i, line := range lines {
		bare := strings.Map(func(r rune) rune {
			if invisible(r) {
				return -1
			}
			return r
		}, line)
		if strings.Contains(bare, "##[") || strings.Contains(culture(line), "##[") {
			t.Errorf("%s line %d holds a legacy workflow command: %q", where, i+1, line)
		}
		rest, ok := strings.CutPrefix(strings.TrimLeftFunc(bare, unicode.IsSpace), "::")
		if !ok && strings.HasPrefix(strings.TrimLeft(culture(line), " \t"), "::") {
			t.Errorf("%s line %d starts with :: for a culture-aware search: %q", where, i+1, line)
		}
		if !ok {
			continue
		}
		name, data, _ := strings.Cut(rest, "::")
		switch {
		case secrets == nil:
			t.Errorf("%s line %d is a workflow command: %q", where, i+1, line)
		case name == "add-mask":
			known := false
			for _, s := range secrets {
				known = known || data == s
			}
			if !known {
				t.Errorf("%s line %d masks what is not a secret: %q", where, i+1, line)
			}
		case name == "error" || name == "warning" || name == "notice":
			if name == "error" {
				errorLines++
			}
			// The runner's UnescapeData, in its order.
			decoded := strings.NewReplacer("%0D", "\r").Replace(data)
			decoded = strings.NewReplacer("%0A", "\n").Replace(decoded)
			decoded = strings.NewReplacer("%25", "%").Replace(decoded)
			if strings.ContainsAny(decoded, "\r\n") {
				t.Errorf("%s line %d: the runner decodes a line break in the annotation: %q", where, i+1, line)
			}
		default:
			t.Errorf("%s line %d is a workflow command: %q", where, i+1, line)
		}
	}
	if errorLines > 1 {
		t.Errorf("%s has %d error annotations, want at most the step's own", where, errorLines)
	}
}

// culture is line as the runner's culture-aware search may see it, at
// worst: ICU's collation weighs hundreds of non-ASCII code points (marks,
// U+0640 ARABIC TATWEEL, ...) as nothing, and some ASCII controls too, so
// every character but printable ASCII and the tab is taken out.
func culture(line string) string {
	return strings.Map(func(r rune) rune {
		if r == '\t' || r >= ' ' && r <= '~' {
			return r
		}
		return -1
	}, line)
}

// FuzzCleanText: whatever the text, what the cleaning functions return
// cannot start or hide a workflow command, nor end a line. cleanText cleans
// a field, logLine a whole line, md a summary cell.
func FuzzCleanText(f *testing.F) {
	f.Add(hostile("seed"), 300)
	f.Add("x##[set-output name=token]FAKE", 500)
	f.Add(" \t::add-mask::x", 10)
	f.Add("\u2028::error::x\u0085::warning::y\r\n##[add-mask]z", 64)
	f.Add("#\u200b#\u00ad[stop-commands]x", 3)
	f.Add("##", 2)
	f.Add("\xff\xfe::", 1)
	f.Add("prod#\u0640#[set-output name=token]x #\u0591\u05a2#[add-mask]y", 100)
	f.Add("\u0640::set-output name=token::x", 100)
	f.Add(":\u1cd3:add-mask::x [a] ##\\[b", 100)
	f.Fuzz(func(t *testing.T, s string, limit int) {
		limit = max(0, min(limit, 1000))
		for name, out := range map[string]string{"cleanText": cleanText(s, limit), "logLine": logLine(s), "md": md(s)} {
			// Every "[" follows a printable ASCII character other than "#":
			// no "#", "#", "[" with only characters ICU may ignore between.
			prev := rune(-1)
			for _, r := range out {
				if r == '[' && (prev == '#' || prev < ' ' || prev > '~') {
					t.Fatalf("%s(%q) = %q holds a [ after %q", name, s, out, prev)
				}
				prev = r
			}
			if strings.Contains(culture(out), "##[") {
				t.Fatalf("%s(%q) = %q holds ##[ for a culture-aware search", name, s, out)
			}
			if strings.HasPrefix(strings.TrimLeftFunc(out, unicode.IsSpace), "::") {
				t.Fatalf("%s(%q) = %q starts with ::", name, s, out)
			}
			if name == "logLine" {
				// The line's first character after its spaces is printable
				// ASCII other than ":", so no search finds "::" at its start.
				if rest := strings.TrimLeft(out, " "); rest != "" && (rest[0] == ':' || rest[0] < '!' || rest[0] > '~') {
					t.Fatalf("logLine(%q) = %q starts with %q", s, out, rest[0])
				}
			}
			if strings.ContainsAny(out, "\r\n\u0085\u2028\u2029") {
				t.Fatalf("%s(%q) = %q breaks the line", name, s, out)
			}
			for _, r := range out {
				if unicode.Is(unicode.Cf, r) || unicode.Is(unicode.Other_Default_Ignorable_Code_Point, r) || unicode.Is(unicode.Variation_Selector, r) {
					t.Fatalf("%s(%q) = %q holds the invisible %U", name, s, out, r)
				}
			}
		}
	})
}

// FuzzSuggestedRuleInTheLog: the log prints the suggested rule through
// logLine, and the workflow's author copies it from there: every line must
// come out unchanged, or the copy would not match the job's claims.
func FuzzSuggestedRuleInTheLog(f *testing.F) {
	f.Add("x##[set-output name=token]FAKE", "refs/heads/\u00a0main", "push\ufe0f", "1\u200b")
	f.Add("::add-mask::x", "\u2028::error::y", "##\U000e0100[add-mask]z", "\U000e0001")
	f.Fuzz(func(t *testing.T, env, ref, event, repoID string) {
		c := policy.Claims{"repository": "acme/dags", "repository_id": repoID, "repository_owner_id": "65",
			"environment": env, "ref": ref, "event_name": event}
		rule, err := policy.Suggest(c, policy.Request{})
		if err != nil {
			return
		}
		for _, line := range strings.Split(strings.TrimSuffix(rule, "\n"), "\n") {
			if got := logLine(line); got != line {
				t.Fatalf("the log changes a line of the rule:\n%q\n%q", line, got)
			}
		}
	})
}
