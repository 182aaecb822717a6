package broker_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/astro-sts/astro-sts/internal/brokerapi"
)

// postWithID is post with an X-Request-Id header (several when ids has
// more than one).
func (e *testEnv) postWithID(path, bearer, body string, ids ...string) (int, []byte, http.Header) {
	e.t.Helper()
	req, err := http.NewRequest(http.MethodPost, e.url+path, strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	for _, id := range ids {
		req.Header.Add(brokerapi.RequestIDHeader, id)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	var b json.RawMessage
	_ = json.NewDecoder(resp.Body).Decode(&b)
	return resp.StatusCode, b, resp.Header
}

// logRecords returns the broker's log records whose msg is msg (any, if
// empty) and whose request_id is id.
func (e *testEnv) logRecords(msg, id string) []map[string]any {
	e.t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(e.logs.String()), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			e.t.Fatalf("log line is not JSON: %q", line)
		}
		if rec["request_id"] == id && (msg == "" || rec["msg"] == msg) {
			out = append(out, rec)
		}
	}
	return out
}

// The caller's request id is used only if it is one well-formed id;
// otherwise the broker makes its own. Either way every answer carries it.
func TestRequestID(t *testing.T) {
	e := newEnv(t, envOptions{})
	tests := []struct {
		name string
		ids  []string
		keep bool
	}{
		{"none", nil, false},
		{"well-formed", []string{"gh-run_987.attempt-1"}, true},
		{"64 characters", []string{strings.Repeat("a", 64)}, true},
		{"65 characters", []string{strings.Repeat("a", 65)}, false},
		{"a space", []string{"a b"}, false},
		{"a quote and a brace", []string{`x"}`}, false},
		{"non-ASCII", []string{"café"}, false},
		{"two of them", []string{"one", "two"}, false},
		{"empty", []string{""}, false},
	}
	seen := map[string]bool{}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body, h := e.postWithID("/v1/exchange", "", "", tt.ids...)
			id := h.Get(brokerapi.RequestIDHeader)
			if status != http.StatusUnauthorized {
				t.Fatalf("status %d", status)
			}
			if tt.keep && id != tt.ids[0] {
				t.Errorf("id %q, want the caller's %q", id, tt.ids[0])
			}
			if !tt.keep {
				if len(id) < 16 || seen[id] || (len(tt.ids) > 0 && id == tt.ids[0]) {
					t.Errorf("id %q: want a new random one", id)
				}
				seen[id] = true
			}
			if eb := errorBody(t, body); eb.RequestID != id || eb.Error != brokerapi.CodeTokenMissing {
				t.Errorf("body %s, want request_id %q", body, id)
			}
			if n := len(e.logRecords("request failed", id)); n != 1 {
				t.Errorf("%d 'request failed' records with the id, want 1", n)
			}
			if n := len(e.logRecords("exchange", id)); n != 1 {
				t.Errorf("%d audit records with the id, want 1", n)
			}
		})
	}
	for _, path := range []string{"/healthz", "/metrics", "/nope"} {
		resp, err := http.Get(e.url + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.Header.Get(brokerapi.RequestIDHeader) == "" {
			t.Errorf("GET %s: no %s", path, brokerapi.RequestIDHeader)
		}
	}
}

// A request no rule trusts gets "denied" and nothing more; the broker's log
// explains it, at Info, under the request id: the closest rules and, for
// each, the first match entry that failed.
func TestDenialIsExplainedToTheOperatorOnly(t *testing.T) {
	e := newEnv(t, envOptions{})
	c := mainClaims()
	c.Ref, c.Workflow = "refs/heads/dev", "deploy"
	status, body, h := e.postWithID("/v1/exchange", e.mint(c), "", "denied-1")
	if status != http.StatusForbidden {
		t.Fatalf("status %d: %s", status, body)
	}
	want := brokerapi.ErrorBody{Error: brokerapi.CodeDenied, Message: "no policy rule allows this identity", RequestID: "denied-1"}
	if diff := cmp.Diff(want, errorBody(t, body)); diff != "" {
		t.Errorf("body (-want +got):\n%s", diff)
	}
	if h.Get(brokerapi.RequestIDHeader) != "denied-1" {
		t.Errorf("header id %q", h.Get(brokerapi.RequestIDHeader))
	}
	for _, secret := range []string{"deploy-main", "refs/heads/main", "both-workspaces", "preview"} {
		if strings.Contains(string(body), secret) {
			t.Errorf("the answer shows the policy's %q: %s", secret, body)
		}
	}

	var got []string
	for _, rec := range e.logRecords("denial explained", "denied-1") {
		if rec["level"] != "INFO" {
			t.Errorf("level %v, want INFO", rec["level"])
		}
		got = append(got, strings.Join([]string{rec["rule"].(string), rec["key"].(string), rec["expected"].(string), rec["actual"].(string)}, " | "))
	}
	wantLines := []string{
		`deploy-main | ref | "refs/heads/main" | "refs/heads/dev"`,
		`both-workspaces | workflow | "preview" | "deploy"`,
		`deployment-only | workflow | "deploy-only" | "deploy"`,
	}
	if diff := cmp.Diff(wantLines, got); diff != "" {
		t.Errorf("explanation (-want +got):\n%s", diff)
	}
	audit := e.logRecords("exchange", "denied-1")
	if len(audit) != 1 || audit[0]["code"] != brokerapi.CodeDenied || audit[0]["outcome"] != "deny" {
		t.Errorf("audit records %v", audit)
	}
}

// A request wider than the rule that trusts it is told the field, the rule
// and the most it allows; the log says the same under the request id.
func TestTooWideSaysTheMaximum(t *testing.T) {
	e := newEnv(t, envOptions{})
	for _, tc := range []struct {
		body  string
		field string
		want  string
	}{
		{`{"role":"WORKSPACE_OWNER"}`, "role", "WORKSPACE_OPERATOR"},
		{`{"ttl":"2h"}`, "ttl", "30m0s"},
		{`{"workspace_id":"clnotgranted"}`, "workspace_id", e.emu.WorkspaceIDs()[0]},
	} {
		t.Run(tc.field, func(t *testing.T) {
			status, body, h := e.post("/v1/exchange", e.mint(mainClaims()), tc.body)
			if status != http.StatusForbidden {
				t.Fatalf("status %d: %s", status, body)
			}
			eb := errorBody(t, body)
			if eb.Error != brokerapi.CodeTooWide || eb.Rule != "deploy-main" || eb.Field != tc.field || eb.Allowed != tc.want {
				t.Errorf("body %s", body)
			}
			recs := e.logRecords("denial explained", h.Get(brokerapi.RequestIDHeader))
			if len(recs) != 1 || recs[0]["key"] != tc.field || recs[0]["expected"] != "at most "+tc.want {
				t.Errorf("explanation %v", recs)
			}
		})
	}
}

// A rotation the identity may not trigger is explained like an exchange.
func TestRotationDenialIsExplained(t *testing.T) {
	e := newEnv(t, envOptions{rotator: failingRotator{}})
	c := mainClaims()
	c.EventName = "push"
	status, body, h := e.post("/v1/rotate", e.mint(c), `{"name":"airflow-ci"}`)
	if status != http.StatusForbidden {
		t.Fatalf("status %d: %s", status, body)
	}
	if eb := errorBody(t, body); eb.Error != brokerapi.CodeDenied || strings.Contains(string(body), "schedule") {
		t.Errorf("body %s", body)
	}
	recs := e.logRecords("denial explained", h.Get(brokerapi.RequestIDHeader))
	if len(recs) != 1 || recs[0]["op"] != "rotate" || recs[0]["rule"] != "airflow-ci" || recs[0]["key"] != "event_name" ||
		recs[0]["expected"] != `"schedule"` || recs[0]["actual"] != `"push"` {
		t.Errorf("explanation %v", recs)
	}
}

// A dry run decides without minting and without spending the token: the
// same token then exchanges for real. A refusal is the exchange's refusal.
func TestDryRun(t *testing.T) {
	e := newEnv(t, envOptions{})
	before := len(e.emu.Tokens())
	tok := e.mint(mainClaims())
	status, body, _ := e.post("/v1/exchange?dry_run=true", tok, `{"role":"WORKSPACE_AUTHOR","ttl":"10m"}`)
	if status != http.StatusOK {
		t.Fatalf("dry run: %d %s", status, body)
	}
	var got brokerapi.DryRunResponse
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&got); err != nil {
		t.Fatal(err)
	}
	want := brokerapi.DryRunResponse{DryRun: true, Decision: "allow", Rule: "deploy-main", Scope: "WORKSPACE",
		OrganizationID: e.emu.OrganizationID(), WorkspaceID: e.emu.WorkspaceIDs()[0], Role: "WORKSPACE_AUTHOR", TTL: "10m0s"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("dry run (-want +got):\n%s", diff)
	}
	if strings.Contains(string(body), `"token"`) || len(e.emu.Tokens()) != before {
		t.Fatalf("a dry run minted: %s", body)
	}
	// Not spent: the same ID token still exchanges, once.
	if status, body, _ := e.post("/v1/exchange", tok, ""); status != http.StatusOK {
		t.Fatalf("the dry-run token does not exchange: %d %s", status, body)
	}
	if status, _, _ := e.post("/v1/exchange?dry_run=false", tok, ""); status != http.StatusUnauthorized {
		t.Errorf("the token exchanged twice: %d", status)
	}

	other := mainClaims()
	other.RepositoryID = "666"
	status, body, h := e.post("/v1/exchange?dry_run=true", e.mint(other), "")
	if eb := errorBody(t, body); status != http.StatusForbidden || eb.Error != brokerapi.CodeDenied {
		t.Errorf("denied dry run: %d %s", status, body)
	}
	if len(e.logRecords("denial explained", h.Get(brokerapi.RequestIDHeader))) == 0 {
		t.Error("a denied dry run is not explained in the log")
	}

	for _, q := range []string{"dry_run=yes", "dry_run=true&dry_run=true", "dry_run="} {
		status, body, _ := e.post("/v1/exchange?"+q, e.mint(mainClaims()), "")
		if eb := errorBody(t, body); status != http.StatusBadRequest || eb.Error != brokerapi.CodeBadRequest {
			t.Errorf("%s: %d %s", q, status, body)
		}
	}

	var dry []map[string]any
	for _, rec := range e.audits("exchange") {
		if rec["dry_run"] == true {
			dry = append(dry, rec)
		}
	}
	if len(dry) != 2 || dry[0]["outcome"] != "allow" || dry[0]["rule"] != "deploy-main" || dry[1]["outcome"] != "deny" {
		t.Errorf("dry-run audit records: %v", dry)
	}
	if m := e.metrics(); !strings.Contains(m, `astro_sts_exchanges_total{outcome="dry_run",rule="deploy-main"} 1`) {
		t.Errorf("metrics lack the dry run:\n%s", m)
	}
}
