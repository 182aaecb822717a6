package action

import (
	"bytes"
	"context"
	"errors"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/sethvargo/go-githubactions"
)

func TestMainExchange(t *testing.T) {
	tests := []struct {
		name       string
		inputs     map[string]string
		wantPath   string
		wantAud    string // "{broker}" is the broker's URL
		wantBody   map[string]any
		wantEnv    map[string]string
		wantState  map[string]string
		wantOutput map[string]string
	}{
		{
			name:      "defaults: empty inputs are unset",
			wantPath:  "/v1/exchange",
			wantAud:   "{broker}",
			wantBody:  map[string]any{},
			wantEnv:   map[string]string{"ASTRO_API_TOKEN": astroToken},
			wantState: map[string]string{"TOKEN_ID": "tok_1"},
		},
		{
			name: "narrowing fields are sent",
			inputs: map[string]string{
				InputWorkspaceID: "ws_1", InputDeploymentID: "dep_1",
				InputRole: "WORKSPACE_OPERATOR", InputTTL: "10m",
			},
			wantPath: "/v1/exchange",
			wantAud:  "{broker}",
			wantBody: map[string]any{
				"workspace_id": "ws_1", "deployment_id": "dep_1",
				"role": "WORKSPACE_OPERATOR", "ttl": "10m",
			},
			wantEnv:   map[string]string{"ASTRO_API_TOKEN": astroToken},
			wantState: map[string]string{"TOKEN_ID": "tok_1"},
		},
		{
			name:      "path prefix and trailing slash; audience drops the slash",
			inputs:    map[string]string{InputBrokerURL: "{broker}/sts/"},
			wantPath:  "/sts/v1/exchange",
			wantAud:   "{broker}/sts",
			wantBody:  map[string]any{},
			wantEnv:   map[string]string{"ASTRO_API_TOKEN": astroToken},
			wantState: map[string]string{"TOKEN_ID": "tok_1"},
		},
		{
			name:      "explicit audience",
			inputs:    map[string]string{InputAudience: "astro-sts"},
			wantPath:  "/v1/exchange",
			wantAud:   "astro-sts",
			wantBody:  map[string]any{},
			wantEnv:   map[string]string{"ASTRO_API_TOKEN": astroToken},
			wantState: map[string]string{"TOKEN_ID": "tok_1"},
		},
		{
			name:      "other env-name",
			inputs:    map[string]string{InputEnvName: "ASTRO_TOKEN_STAGING"},
			wantPath:  "/v1/exchange",
			wantAud:   "{broker}",
			wantBody:  map[string]any{},
			wantEnv:   map[string]string{"ASTRO_TOKEN_STAGING": astroToken},
			wantState: map[string]string{"TOKEN_ID": "tok_1"},
		},
		{
			name:      "export-env false and revoke false",
			inputs:    map[string]string{InputExportEnv: "false", InputRevoke: "FALSE"},
			wantPath:  "/v1/exchange",
			wantAud:   "{broker}",
			wantBody:  map[string]any{},
			wantEnv:   map[string]string{},
			wantState: map[string]string{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, tt.inputs, nil)
			h.broker.on("/v1/exchange", exchangeOK(astroToken))
			err := Main(context.Background(), h.action(nil), h.deps())
			if err != nil {
				t.Fatalf("Main: %v", err)
			}
			calls := h.broker.Calls()
			if len(calls) != 1 {
				t.Fatalf("broker calls = %d, want 1", len(calls))
			}
			got := calls[0]
			want := brokerCall{
				Path:      tt.wantPath,
				JTI:       got.JTI,
				Aud:       strings.ReplaceAll(tt.wantAud, "{broker}", h.brokerURL),
				Body:      tt.wantBody,
				RequestID: got.RequestID, // TestRequestIDs
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("broker request (-want +got):\n%s", diff)
			}
			envs, outputs, state := h.files()
			if diff := cmp.Diff(tt.wantEnv, envs); diff != "" {
				t.Errorf("GITHUB_ENV (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantState, state); diff != "" {
				t.Errorf("GITHUB_STATE (-want +got):\n%s", diff)
			}
			wantOut := map[string]string{
				"token": astroToken, "token-id": "tok_1", "expires-at": "2030-01-02T03:19:05Z",
				"workspace-id": "ws_1", "deployment-id": "", "role": "WORKSPACE_AUTHOR",
			}
			if diff := cmp.Diff(wantOut, outputs); diff != "" {
				t.Errorf("GITHUB_OUTPUT (-want +got):\n%s", diff)
			}
			h.checkNoLeak(nil, astroToken)
		})
	}
}

// maskOrderWriter records, when the add-mask command for secret goes by,
// whether the secret had already reached any of files.
type maskOrderWriter struct {
	bytes.Buffer
	secret  string
	files   []string
	seen    bool
	lateFor []string
}

func (w *maskOrderWriter) Write(p []byte) (int, error) {
	if !w.seen && strings.Contains(string(p), "::add-mask::"+w.secret+"\n") {
		w.seen = true
		for _, f := range w.files {
			if b, _ := os.ReadFile(f); strings.Contains(string(b), w.secret) {
				w.lateFor = append(w.lateFor, f)
			}
		}
	}
	return w.Buffer.Write(p)
}

func TestMainMasksBeforeAnyWrite(t *testing.T) {
	h := newHarness(t, nil, nil)
	h.broker.on("/v1/exchange", exchangeOK(astroToken))
	w := &maskOrderWriter{secret: astroToken, files: []string{h.runner.EnvFile, h.runner.OutputFile, h.runner.StateFile, h.runner.SummaryFile}}
	env := h.runner.Env()
	a := githubactions.New(githubactions.WithGetenv(func(k string) string { return env[k] }), githubactions.WithWriter(w))
	if err := Main(context.Background(), a, h.deps()); err != nil {
		t.Fatal(err)
	}
	if !w.seen {
		t.Fatalf("no ::add-mask:: for the token; stdout:\n%s", w.String())
	}
	if len(w.lateFor) > 0 {
		t.Errorf("the token reached %v before it was masked", w.lateFor)
	}
	h.stdout = w.Buffer
	h.checkNoLeak(nil, astroToken)
	envs, _, _ := h.files()
	if envs["ASTRO_API_TOKEN"] != astroToken {
		t.Errorf("token not exported")
	}
}

func TestMainRefusesMultilineTokenAfterMaskingEachLine(t *testing.T) {
	const tok = "line-one-secret\nline-two-secret"
	h := newHarness(t, nil, nil)
	h.broker.on("/v1/exchange", exchangeOK(tok))
	err := Main(context.Background(), h.action(nil), h.deps())
	var ce *CallError
	if !errors.As(err, &ce) {
		t.Fatalf("err = %v, want a *CallError", err)
	}
	out := h.stdout.String()
	for _, want := range []string{"::add-mask::line-one-secret%0Aline-two-secret\n", "::add-mask::line-one-secret\n", "::add-mask::line-two-secret\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("stdout lacks %q:\n%s", want, out)
		}
	}
	envs, outputs, state := h.files()
	if len(envs)+len(outputs)+len(state) != 0 {
		t.Errorf("wrote file commands for a refused answer: env %v outputs %v state %v", envs, outputs, state)
	}
	h.checkNoLeak(err, "line-one-secret", "line-two-secret")
}

func TestMainRetries(t *testing.T) {
	tests := []struct {
		name         string
		idFailFirst  int
		idFailStatus int
		replies      []cannedReply
		wantCalls    int
		wantIDReqs   int
		wantStatus   int // of the *BrokerError, 0 for success
		wantErrText  string
	}{
		{
			name:       "503 twice then success, each with a fresh OIDC token",
			replies:    []cannedReply{errReply(503, "unavailable", "not ready"), errReply(503, "unavailable", "not ready"), exchangeOK(astroToken)},
			wantCalls:  3,
			wantIDReqs: 3,
		},
		{
			name:        "403 is not retried",
			replies:     []cannedReply{errReply(403, "forbidden", "role WORKSPACE_OWNER exceeds the rule's maximum WORKSPACE_AUTHOR")},
			wantCalls:   1,
			wantIDReqs:  1,
			wantStatus:  403,
			wantErrText: "the broker refused the exchange (403 forbidden, request id req-1): role WORKSPACE_OWNER exceeds the rule's maximum WORKSPACE_AUTHOR — ask your platform team to extend the trust policy, or request a narrower role, workspace or ttl",
		},
		{
			name:       "429 is not retried",
			replies:    []cannedReply{{status: 429, body: `{"error":"rate_limited","message":"slow down"}`, header: map[string]string{"Retry-After": "7"}}},
			wantCalls:  1,
			wantIDReqs: 1,
			wantStatus: 429,
		},
		{
			name:        "500 until the attempts run out",
			replies:     []cannedReply{errReply(500, "internal", "astro api failed")},
			wantCalls:   brokerAttempts,
			wantIDReqs:  brokerAttempts,
			wantStatus:  500,
			wantErrText: "the broker failed the exchange (500 internal, request id req-4): astro api failed — gave up after 4 attempts: re-run the job, and tell your platform team if it persists",
		},
		{
			name:         "the token endpoint's 503s are retried",
			idFailFirst:  2,
			idFailStatus: 503,
			replies:      []cannedReply{exchangeOK(astroToken)},
			wantCalls:    1,
			wantIDReqs:   3,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, nil, nil)
			h.ids.FailFirst, h.ids.FailStatus = tt.idFailFirst, tt.idFailStatus
			h.broker.on("/v1/exchange", tt.replies...)
			err := Main(context.Background(), h.action(nil), h.deps())

			calls := h.broker.Calls()
			if len(calls) != tt.wantCalls {
				t.Errorf("broker calls = %d, want %d", len(calls), tt.wantCalls)
			}
			jtis := map[string]bool{}
			for _, c := range calls {
				jtis[c.JTI] = true
			}
			if len(jtis) != len(calls) {
				t.Errorf("a jti was reused across %d calls", len(calls))
			}
			if got := h.ids.Requests(); got != tt.wantIDReqs {
				t.Errorf("token endpoint requests = %d, want %d", got, tt.wantIDReqs)
			}
			if tt.wantStatus == 0 {
				if err != nil {
					t.Fatalf("Main: %v", err)
				}
			} else {
				var be *BrokerError
				if !errors.As(err, &be) || be.Status != tt.wantStatus {
					t.Fatalf("err = %v, want a *BrokerError with status %d", err, tt.wantStatus)
				}
				if tt.wantErrText != "" {
					if diff := cmp.Diff(tt.wantErrText, err.Error()); diff != "" {
						t.Errorf("error (-want +got):\n%s", diff)
					}
				}
				if strings.Contains(err.Error(), "\n") {
					t.Errorf("error is not one line: %q", err)
				}
				_, outputs, _ := h.files()
				if len(outputs) != 0 {
					t.Errorf("outputs set after a failure: %v", outputs)
				}
				h.checkNoLeak(err)
				return
			}
			h.checkNoLeak(err, astroToken)
		})
	}
}

// TestMainRetryHonoursRetryAfter: a 503's Retry-After sets the wait
// before the next attempt when it is longer than the backoff (1ms here).
// The wait is read from the log line, not timed.
func TestMainRetryHonoursRetryAfter(t *testing.T) {
	h := newHarness(t, nil, nil)
	h.broker.on("/v1/exchange",
		cannedReply{status: 503, body: `{"error":"unavailable","message":"starting"}`, header: map[string]string{"Retry-After": "1"}},
		exchangeOK(astroToken))
	if err := Main(context.Background(), h.action(nil), h.deps()); err != nil {
		t.Fatalf("Main: %v", err)
	}
	if n := len(h.broker.Calls()); n != 2 {
		t.Errorf("broker calls = %d, want 2", n)
	}
	if want := "The broker answered 503 to the exchange; retrying in 1s (attempt 2 of 4)."; !strings.Contains(h.stdout.String(), want) {
		t.Errorf("stdout lacks %q:\n%s", want, h.stdout.String())
	}
	h.checkNoLeak(nil, astroToken)
}

func TestMainIDTokenEndpointRefuses(t *testing.T) {
	h := newHarness(t, nil, nil)
	h.ids.FailFirst, h.ids.FailStatus = 10, http.StatusForbidden
	err := Main(context.Background(), h.action(nil), h.deps())
	var ie *IDTokenError
	if !errors.As(err, &ie) || ie.Status != http.StatusForbidden {
		t.Fatalf("err = %v, want an *IDTokenError with status 403", err)
	}
	if got := h.ids.Requests(); got != 1 {
		t.Errorf("token endpoint requests = %d, want 1 (a 403 is not retried)", got)
	}
	if n := len(h.broker.Calls()); n != 0 {
		t.Errorf("broker called %d times without an OIDC token", n)
	}
}

// TestMainIDTokenEndpointGivesUp: the runner's token endpoint gets 3
// attempts in all, as docs/action.md says.
func TestMainIDTokenEndpointGivesUp(t *testing.T) {
	h := newHarness(t, nil, nil)
	h.ids.FailFirst, h.ids.FailStatus = 10, http.StatusServiceUnavailable
	err := Main(context.Background(), h.action(nil), h.deps())
	var ie *IDTokenError
	if !errors.As(err, &ie) || ie.Status != http.StatusServiceUnavailable || ie.Attempts != 3 {
		t.Fatalf("err = %#v, want an *IDTokenError with status 503 after 3 attempts", err)
	}
	if got := h.ids.Requests(); got != 3 {
		t.Errorf("token endpoint requests = %d, want 3", got)
	}
	if n := len(h.broker.Calls()); n != 0 {
		t.Errorf("broker called %d times without an OIDC token", n)
	}
}

func TestMainNoIDToken(t *testing.T) {
	h := newHarness(t, nil, nil)
	env := h.runner.Env()
	delete(env, "ACTIONS_ID_TOKEN_REQUEST_URL")
	delete(env, "ACTIONS_ID_TOKEN_REQUEST_TOKEN")
	err := Main(context.Background(), h.action(env), h.deps())
	if !errors.Is(err, ErrNoIDToken) {
		t.Fatalf("err = %v, want ErrNoIDToken", err)
	}
	if !strings.Contains(err.Error(), "add `permissions: id-token: write` to the job") {
		t.Errorf("message does not say what to do: %v", err)
	}
	if n := len(h.broker.Calls()); n != 0 {
		t.Errorf("broker called %d times", n)
	}
}

func TestMainInputErrors(t *testing.T) {
	tests := []struct {
		name       string
		inputs     map[string]string
		wantInputs []string // the inputs blamed, in order
		wantIs     error
	}{
		{name: "plain http to another host", inputs: map[string]string{InputBrokerURL: "http://sts.example.com"}, wantInputs: []string{InputBrokerURL}, wantIs: ErrInsecureBrokerURL},
		{name: "not http at all", inputs: map[string]string{InputBrokerURL: "ftp://127.0.0.1"}, wantInputs: []string{InputBrokerURL}, wantIs: ErrInsecureBrokerURL},
		{name: "missing broker-url", inputs: map[string]string{InputBrokerURL: ""}, wantInputs: []string{InputBrokerURL}},
		{name: "credentials in the URL", inputs: map[string]string{InputBrokerURL: "https://user:pw@sts.example.com"}, wantInputs: []string{InputBrokerURL}},
		{name: "bad mode", inputs: map[string]string{InputMode: "mint"}, wantInputs: []string{InputMode}},
		{name: "rotation outside rotate mode", inputs: map[string]string{InputRotation: "airflow-ci"}, wantInputs: []string{InputRotation}},
		{name: "rotate mode without rotation, with a role", inputs: map[string]string{InputMode: "rotate", InputRole: "WORKSPACE_AUTHOR"}, wantInputs: []string{InputRotation, InputRole}},
		{
			name:       "every problem at once",
			inputs:     map[string]string{InputTTL: "15", InputRole: "workspace_author", InputWorkspaceID: "ws 1", InputEnvName: "GITHUB_TOKEN", InputExportEnv: "yes", InputRevoke: "no"},
			wantInputs: []string{InputWorkspaceID, InputRole, InputTTL, InputEnvName, InputExportEnv, InputRevoke},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, tt.inputs, nil)
			err := Main(context.Background(), h.action(nil), h.deps())
			if err == nil {
				t.Fatal("Main succeeded")
			}
			var got []string
			var es inputErrors
			if !errors.As(err, &es) {
				t.Fatalf("err = %v (%T), want input errors", err, err)
			}
			for _, e := range es {
				var ie *InputError
				if errors.As(e, &ie) {
					got = append(got, ie.Input)
				}
			}
			if diff := cmp.Diff(tt.wantInputs, got); diff != "" {
				t.Errorf("inputs blamed (-want +got):\n%s\n%v", diff, err)
			}
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Errorf("err = %v, want errors.Is %v", err, tt.wantIs)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error is not one line: %q", err)
			}
			if n := h.ids.Requests() + len(h.broker.Calls()); n != 0 {
				t.Errorf("made %d requests despite bad inputs", n)
			}
		})
	}
}

func TestMainNotInRunner(t *testing.T) {
	h := newHarness(t, nil, nil)
	env := h.runner.Env()
	delete(env, "GITHUB_ENV")
	err := Main(context.Background(), h.action(env), h.deps())
	if !errors.Is(err, ErrNotInRunner) || !strings.Contains(err.Error(), "GITHUB_ENV") {
		t.Fatalf("err = %v, want ErrNotInRunner naming GITHUB_ENV", err)
	}
	if n := h.ids.Requests(); n != 0 {
		t.Errorf("asked for %d OIDC tokens", n)
	}
}

func TestMainSummary(t *testing.T) {
	tests := []struct {
		name     string
		env      map[string]string
		wantNote bool
	}{
		{name: "no key pair", wantNote: false},
		{name: "ASTRONOMER_KEY_ID set", env: map[string]string{"ASTRONOMER_KEY_ID": "kid", "ASTRONOMER_KEY_SECRET": "ksecret"}, wantNote: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, nil, tt.env)
			h.broker.on("/v1/exchange", exchangeOK(astroToken))
			if err := Main(context.Background(), h.action(nil), h.deps()); err != nil {
				t.Fatal(err)
			}
			want := "### Astro API token issued\n\n" +
				"| | |\n|---|---|\n" +
				"| Organization | " + code("org_1") + " |\n" +
				"| Workspace | " + code("ws_1") + " |\n" +
				"| Role | " + code("WORKSPACE_AUTHOR") + " |\n" +
				"| Expires | " + code("2030-01-02T03:19:05Z") + " (in 15m0s) |\n" +
				"| Rule | " + code("deploy-main") + " |\n" +
				"| Token id | " + code("tok_1") + " |\n" +
				"| Exported as | " + code("ASTRO_API_TOKEN") + " |\n" +
				"| Revocation | by the post step; the broker reaps it at expiry otherwise |\n"
			if tt.wantNote {
				want += "\n> [!NOTE]\n> ASTRONOMER_KEY_ID/ASTRONOMER_KEY_SECRET are set in this job: ASTRO_API_TOKEN takes precedence over them, so the astro CLI and deploy-action use the token from astro-sts. Remove the key pair from the workflow.\n"
			}
			if diff := cmp.Diff(want+"\n", h.summary()); diff != "" {
				t.Errorf("summary (-want +got):\n%s", diff)
			}
			if got := strings.Contains(h.stdout.String(), "::notice::ASTRONOMER_KEY_ID"); got != tt.wantNote {
				t.Errorf("notice printed = %v, want %v", got, tt.wantNote)
			}
			h.checkNoLeak(nil, astroToken)
		})
	}
}

func TestMainRotate(t *testing.T) {
	ok := cannedReply{status: 200, body: `{"name":"airflow-ci","token_id":"tok_9","strategy":"rotate","rotated_at":"2030-01-02T03:04:05Z",
		"sinks":[{"kind":"vault","target":"secret/data/astro","version":7},{"kind":"github","target":"octo-org/airflow:ASTRO_API_TOKEN","version":null}]}`}
	failed := cannedReply{status: 502, body: `{"error":"sink_failed","message":"1 of 2 sinks failed",
		"sinks":[{"kind":"vault","target":"secret/data/astro","version":"8"},{"kind":"github","target":"octo-org/airflow:ASTRO_API_TOKEN","version":"","error":"PUT secret: 403 | bad\ncredentials"}]}`}
	tests := []struct {
		name        string
		replies     []cannedReply
		wantCalls   int
		wantErr     bool
		wantSummary string
	}{
		{
			name:      "success",
			replies:   []cannedReply{ok},
			wantCalls: 1,
			wantSummary: "### Astro API token rotated: " + code("airflow-ci") + "\n\n| | |\n|---|---|\n" +
				"| Token id | " + code("tok_9") + " |\n| Strategy | " + code("rotate") + " |\n| Rotated at | " + code("2030-01-02T03:04:05Z") + " |\n" +
				"\n| Sink | Target | Version | Result |\n|---|---|---|---|\n" +
				"| " + code("vault") + " | " + code("secret/data/astro") + " | " + code("7") + " | updated |\n" +
				"| " + code("github") + " | " + code("octo-org/airflow:ASTRO_API_TOKEN") + " | – | updated |\n\n",
		},
		{
			name:      "503 is retried",
			replies:   []cannedReply{errReply(503, "unavailable", "starting"), ok},
			wantCalls: 2,
			wantSummary: "### Astro API token rotated: " + code("airflow-ci") + "\n\n| | |\n|---|---|\n" +
				"| Token id | " + code("tok_9") + " |\n| Strategy | " + code("rotate") + " |\n| Rotated at | " + code("2030-01-02T03:04:05Z") + " |\n" +
				"\n| Sink | Target | Version | Result |\n|---|---|---|---|\n" +
				"| " + code("vault") + " | " + code("secret/data/astro") + " | " + code("7") + " | updated |\n" +
				"| " + code("github") + " | " + code("octo-org/airflow:ASTRO_API_TOKEN") + " | – | updated |\n\n",
		},
		{
			name:      "a failed sink: not retried, reported per sink",
			replies:   []cannedReply{failed, ok},
			wantCalls: 1,
			wantErr:   true,
			wantSummary: "### Astro API token rotation failed: " + code("airflow-ci") + "\n\n" +
				"The broker answered 502 (" + code("sink_failed") + "): " + code("1 of 2 sinks failed") + ".\n" +
				"\n| Sink | Target | Version | Result |\n|---|---|---|---|\n" +
				"| " + code("vault") + " | " + code("secret/data/astro") + " | " + code("8") + " | updated |\n" +
				"| " + code("github") + " | " + code("octo-org/airflow:ASTRO_API_TOKEN") + " | – | failed: " + code("PUT secret: 403 | bad credentials") + " |\n\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, map[string]string{InputMode: "rotate", InputRotation: "airflow-ci"}, nil)
			h.broker.on("/v1/rotate", tt.replies...)
			err := Main(context.Background(), h.action(nil), h.deps())
			if (err != nil) != tt.wantErr {
				t.Fatalf("Main: err = %v, want error %v", err, tt.wantErr)
			}
			if tt.wantErr {
				var be *BrokerError
				if !errors.As(err, &be) || len(be.Sinks) != 2 || be.Rotation != "airflow-ci" {
					t.Errorf("err = %#v, want a *BrokerError with the sinks", err)
				}
			}
			calls := h.broker.Calls()
			if len(calls) != tt.wantCalls {
				t.Fatalf("broker calls = %d, want %d", len(calls), tt.wantCalls)
			}
			for _, c := range calls {
				if diff := cmp.Diff(brokerCall{Path: "/v1/rotate", JTI: c.JTI, Aud: h.brokerURL, Body: map[string]any{"name": "airflow-ci"}, RequestID: c.RequestID}, c); diff != "" {
					t.Errorf("request (-want +got):\n%s", diff)
				}
			}
			if diff := cmp.Diff(tt.wantSummary, h.summary()); diff != "" {
				t.Errorf("summary (-want +got):\n%s", diff)
			}
			envs, outputs, state := h.files()
			if len(envs)+len(outputs)+len(state) != 0 {
				t.Errorf("rotate mode wrote env %v outputs %v state %v", envs, outputs, state)
			}
		})
	}
}

// TestRotateRetriesOnlyWhatTheBrokerCannotHaveDone: a rotation is not
// idempotent, so a request the broker read but did not answer is not
// repeated (a second rotation would invalidate the first one's value),
// while a connection that was never made is.
func TestRotateRetriesOnlyWhatTheBrokerCannotHaveDone(t *testing.T) {
	rotateInputs := map[string]string{InputMode: "rotate", InputRotation: "airflow-ci"}
	t.Run("no answer after the request: not retried", func(t *testing.T) {
		h := newHarness(t, rotateInputs, nil)
		h.broker.on("/v1/rotate", cannedReply{hangUp: true}, cannedReply{status: 200, body: `{"name":"airflow-ci","token_id":"tok_9","sinks":[]}`})
		err := Main(context.Background(), h.action(nil), h.deps())
		var ce *CallError
		if !errors.As(err, &ce) || ce.Attempts != 1 {
			t.Fatalf("err = %v, want a *CallError after 1 attempt", err)
		}
		if n := len(h.broker.Calls()); n != 1 {
			t.Errorf("broker calls = %d, want 1", n)
		}
	})
	t.Run("connection refused: retried", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		closed := "http://" + ln.Addr().String()
		ln.Close()
		in := maps.Clone(rotateInputs)
		in[InputBrokerURL] = closed
		h := newHarness(t, in, nil)
		err = Main(context.Background(), h.action(nil), h.deps())
		var ce *CallError
		if !errors.As(err, &ce) || ce.Attempts != brokerAttempts {
			t.Fatalf("err = %v, want a *CallError after %d attempts", err, brokerAttempts)
		}
		if got := h.ids.Requests(); got != brokerAttempts {
			t.Errorf("OIDC tokens requested = %d, want one per attempt (%d)", got, brokerAttempts)
		}
	})
}

func TestPost(t *testing.T) {
	tests := []struct {
		name        string
		inputs      map[string]string
		state       string // STATE_TOKEN_ID
		replies     []cannedReply
		wantCalls   int
		wantWarning string // substring of a ::warning:: line; "" for none
	}{
		{name: "revokes", state: "tok_1", replies: []cannedReply{{status: 204}}, wantCalls: 1},
		{name: "retries 503 with fresh tokens", state: "tok_1", replies: []cannedReply{errReply(503, "unavailable", "x"), {status: 204}}, wantCalls: 2},
		{name: "no such token of this run: warning", state: "tok_1", replies: []cannedReply{errReply(404, "not_found", "this run has no token of that id to revoke")}, wantCalls: 1, wantWarning: "::warning::Could not revoke Astro token tok_1: the broker refused the revoke (404 not_found, request id req-1): this run has no token of that id to revoke"},
		{name: "job no longer trusted: warning", state: "tok_1", replies: []cannedReply{errReply(403, "denied", "no policy rule allows this identity")}, wantCalls: 1, wantWarning: "reaper deletes the token"},
		{name: "revokes over budget: warning, no retry", state: "tok_1", replies: []cannedReply{errReply(429, "rate_limited", "this repository has had its share of revokes")}, wantCalls: 1, wantWarning: "reaper deletes it"},
		{name: "broker down: warning", state: "tok_1", replies: []cannedReply{errReply(502, "bad_gateway", "x")}, wantCalls: brokerAttempts, wantWarning: "reaper deletes it"},
		{name: "revoke false: nothing", state: "tok_1", inputs: map[string]string{InputRevoke: "false"}, wantCalls: 0},
		{name: "no state: nothing", wantCalls: 0},
		{name: "rotate mode: nothing", inputs: map[string]string{InputMode: "rotate", InputRotation: "airflow-ci"}, wantCalls: 0},
		{name: "bad input: warning", state: "tok_1", inputs: map[string]string{InputBrokerURL: "http://sts.example.com"}, wantCalls: 0, wantWarning: "input broker-url: must use https"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t, tt.inputs, nil)
			h.broker.on("/v1/revoke", tt.replies...)
			env := h.runner.Env()
			if tt.state != "" {
				env["STATE_TOKEN_ID"] = tt.state
			}
			if err := Post(context.Background(), h.action(env), h.deps()); err != nil {
				t.Fatalf("Post: %v", err)
			}
			calls := h.broker.Calls()
			if len(calls) != tt.wantCalls {
				t.Fatalf("broker calls = %d, want %d", len(calls), tt.wantCalls)
			}
			for _, c := range calls {
				if diff := cmp.Diff(brokerCall{Path: "/v1/revoke", JTI: c.JTI, Aud: h.brokerURL, Body: map[string]any{"token_id": tt.state}, RequestID: c.RequestID}, c); diff != "" {
					t.Errorf("request (-want +got):\n%s", diff)
				}
			}
			out := h.stdout.String()
			hasWarning := strings.Contains(out, "::warning::")
			if hasWarning != (tt.wantWarning != "") || !strings.Contains(out, tt.wantWarning) {
				t.Errorf("stdout = %q, want warning %q", out, tt.wantWarning)
			}
			h.checkNoLeak(nil)
		})
	}
}

// TestMainThenPost runs both steps as the runner would: the post step sees
// what the main step saved only through GITHUB_STATE.
func TestMainThenPost(t *testing.T) {
	h := newHarness(t, nil, nil)
	h.broker.on("/v1/exchange", exchangeOK(astroToken)).on("/v1/revoke", cannedReply{status: 204})
	if err := Main(context.Background(), h.action(nil), h.deps()); err != nil {
		t.Fatal(err)
	}
	postEnv, err := h.runner.PostEnv()
	if err != nil {
		t.Fatal(err)
	}
	if err := Post(context.Background(), h.action(postEnv), h.deps()); err != nil {
		t.Fatal(err)
	}
	calls := h.broker.Calls()
	var got []string
	for _, c := range calls {
		got = append(got, c.Path+" "+c.JTI)
	}
	if len(calls) != 2 || calls[1].Path != "/v1/revoke" || calls[1].Body["token_id"] != "tok_1" {
		t.Fatalf("calls = %v, want an exchange then a revoke of tok_1", got)
	}
	if calls[0].JTI == calls[1].JTI {
		t.Errorf("the post step reused the main step's OIDC token")
	}
	if !strings.Contains(h.stdout.String(), "Revoked Astro token tok_1.") {
		t.Errorf("stdout lacks the revoke line:\n%s", h.stdout.String())
	}
	h.checkNoLeak(nil, astroToken)
}

func TestRedirectIsNotFollowed(t *testing.T) {
	h := newHarness(t, nil, nil)
	h.broker.on("/v1/exchange", cannedReply{status: http.StatusTemporaryRedirect, header: map[string]string{"Location": h.brokerURL + "/elsewhere/v1/exchange"}})
	h.broker.on("/elsewhere/v1/exchange", exchangeOK(astroToken))
	err := Main(context.Background(), h.action(nil), h.deps())
	var be *BrokerError
	if !errors.As(err, &be) || be.Status != http.StatusTemporaryRedirect {
		t.Fatalf("err = %v, want a *BrokerError with status 307", err)
	}
	if n := len(h.broker.Calls()); n != 1 {
		t.Errorf("broker calls = %d, want 1 (redirect not followed)", n)
	}
}

func TestAnswerTooLarge(t *testing.T) {
	h := newHarness(t, nil, nil)
	h.broker.on("/v1/exchange", cannedReply{status: 200, body: `{"token":"` + strings.Repeat("a", maxBody) + `"}`})
	err := Main(context.Background(), h.action(nil), h.deps())
	var ce *CallError
	if !errors.As(err, &ce) || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("err = %v, want a *CallError about the size", err)
	}
	// Asking again would not shrink the answer, and each retry could mint
	// another token.
	if n := len(h.broker.Calls()); n != 1 {
		t.Errorf("broker calls = %d, want 1 (an oversized answer is not retried)", n)
	}
}

// A broker that does not answer in time is named as such, with the limit,
// not as a bare "context deadline exceeded"; every attempt is made.
func TestMainTimeoutSaysWhatTimedOut(t *testing.T) {
	h := newHarness(t, nil, nil)
	h.broker.on("/v1/exchange", cannedReply{delay: time.Minute})
	deps := h.deps()
	deps.CallTimeout = 50 * time.Millisecond
	err := Main(context.Background(), h.action(nil), deps)
	var ce *CallError
	if !errors.As(err, &ce) || ce.Attempts != brokerAttempts {
		t.Fatalf("err = %v, want a *CallError after %d attempts", err, brokerAttempts)
	}
	if msg := err.Error(); !strings.Contains(msg, "the broker did not answer within 50ms") || strings.Contains(msg, "context deadline exceeded") {
		t.Errorf("message does not say what timed out: %s", msg)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("the timeout is not kept in the chain: %v", err)
	}
}

// The same for the runner's token endpoint.
func TestIDTokenTimeoutSaysWhatTimedOut(t *testing.T) {
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(time.Minute):
		case <-r.Context().Done():
		}
	}))
	defer slow.Close()
	h := newHarness(t, nil, map[string]string{"ACTIONS_ID_TOKEN_REQUEST_URL": slow.URL + "/token"})
	deps := h.deps()
	deps.CallTimeout = 50 * time.Millisecond
	err := Main(context.Background(), h.action(nil), deps)
	var ie *IDTokenError
	if !errors.As(err, &ie) {
		t.Fatalf("err = %v, want an *IDTokenError", err)
	}
	if msg := err.Error(); !strings.Contains(msg, "the runner's OIDC token endpoint did not answer within 50ms") {
		t.Errorf("message does not say what timed out: %s", msg)
	}
}
