package action

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sethvargo/go-githubactions"

	"github.com/astro-sts/astro-sts/internal/runner"
)

// brokerCall is one request the broker stand-in received.
type brokerCall struct {
	Path  string
	Query string
	JTI   string
	Aud   string
	Body  map[string]any
	// RequestID is the X-Request-Id the action sent.
	RequestID string
}

// cannedReply is one answer of the broker stand-in.
type cannedReply struct {
	status int
	body   string
	header map[string]string
	// hangUp closes the connection without an answer, after the request
	// was read: the broker may have acted on it.
	hangUp bool
	// delay holds the answer this long (or until the caller gives up).
	delay time.Duration
}

// fakeBroker stands in for the broker's HTTP contract: it checks the
// request's shape, refuses a replayed jti with 401 as the real broker does,
// records every call and answers from a per-path queue (the last answer
// repeats). Every answer carries X-Request-Id "req-<n>" for the n-th
// request: its own id, as a broker behind a proxy that sets one would, so
// that the tests' expected messages are fixed.
type fakeBroker struct {
	t       *testing.T
	mu      sync.Mutex
	calls   []brokerCall
	seenJTI map[string]bool
	replies map[string][]cannedReply
	// requests counts every request, for the answers' request ids.
	requests int
}

func newFakeBroker(t *testing.T) *fakeBroker {
	return &fakeBroker{t: t, seenJTI: map[string]bool{}, replies: map[string][]cannedReply{}}
}

// on queues answers for requests whose path ends with suffix
// ("/v1/exchange").
func (b *fakeBroker) on(suffix string, rs ...cannedReply) *fakeBroker {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.replies[suffix] = append(b.replies[suffix], rs...)
	return b
}

func (b *fakeBroker) Calls() []brokerCall {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]brokerCall(nil), b.calls...)
}

func (b *fakeBroker) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b.mu.Lock()
	b.requests++
	w.Header().Set("X-Request-Id", fmt.Sprintf("req-%d", b.requests))
	b.mu.Unlock()
	writeErr := func(status int, code, msg string) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(map[string]string{"error": code, "message": msg})
	}
	if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" {
		writeErr(http.StatusBadRequest, "bad_request", "want a JSON POST")
		return
	}
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		writeErr(http.StatusUnauthorized, "unauthorized", "no bearer token")
		return
	}
	claims, err := jwtClaims(tok)
	if err != nil {
		writeErr(http.StatusUnauthorized, "unauthorized", "not a JWT")
		return
	}
	raw, _ := io.ReadAll(r.Body)
	var body map[string]any
	if err := json.Unmarshal(raw, &body); err != nil {
		writeErr(http.StatusBadRequest, "bad_request", "body is not JSON")
		return
	}
	jti, _ := claims["jti"].(string)
	aud, _ := claims["aud"].(string)

	b.mu.Lock()
	replayed := b.seenJTI[jti]
	b.seenJTI[jti] = true
	b.calls = append(b.calls, brokerCall{Path: r.URL.Path, Query: r.URL.RawQuery, JTI: jti, Aud: aud, Body: body, RequestID: r.Header.Get("X-Request-Id")})
	var rep *cannedReply
	for suffix, q := range b.replies {
		if strings.HasSuffix(r.URL.Path, suffix) && len(q) > 0 {
			rep = &q[0]
			if len(q) > 1 {
				b.replies[suffix] = q[1:]
			}
		}
	}
	b.mu.Unlock()

	if replayed {
		writeErr(http.StatusUnauthorized, "unauthorized", "token already used")
		return
	}
	if rep == nil {
		writeErr(http.StatusNotFound, "not_found", "no such route")
		return
	}
	if rep.delay > 0 {
		select {
		case <-time.After(rep.delay):
		case <-r.Context().Done():
			return
		}
	}
	if rep.hangUp {
		conn, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			b.t.Errorf("hijack: %v", err)
			return
		}
		conn.Close()
		return
	}
	for k, v := range rep.header {
		w.Header().Set(k, v)
	}
	if rep.body != "" {
		w.Header().Set("Content-Type", "application/json")
	}
	w.WriteHeader(rep.status)
	_, _ = io.WriteString(w, rep.body)
}

func jwtClaims(tok string) (map[string]any, error) {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return nil, io.ErrUnexpectedEOF
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return nil, err
	}
	var c map[string]any
	return c, json.Unmarshal(raw, &c)
}

// The Astro token the broker stand-in mints; JWT-shaped like a real one.
const astroToken = "eyJhbGciOiJSUzI1NiJ9.eyJhcGlUb2tlbklkIjoidG9rXzEifQ.c2lnbmF0dXJl"

func exchangeOK(token string) cannedReply {
	b, _ := json.Marshal(map[string]string{
		"token": token, "token_id": "tok_1", "organization_id": "org_1",
		"workspace_id": "ws_1", "deployment_id": "", "role": "WORKSPACE_AUTHOR",
		"expires_at": "2030-01-02T03:19:05Z", "rule": "deploy-main",
	})
	return cannedReply{status: http.StatusOK, body: string(b)}
}

func errReply(status int, code, msg string) cannedReply {
	b, _ := json.Marshal(map[string]string{"error": code, "message": msg})
	return cannedReply{status: status, body: string(b)}
}

// testNow is the clock of every test: 15 minutes before exchangeOK expires.
var testNow = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

// harness is one job: a runner (files and environment), the runner's token
// endpoint and a broker stand-in, all on loopback.
type harness struct {
	t         *testing.T
	runner    *runner.Runner
	ids       *runner.IDTokenHandler
	broker    *fakeBroker
	brokerURL string
	stdout    bytes.Buffer
}

// declaredInputs is what the runner passes when the workflow sets only
// broker-url: every input of action.yml, with its default.
func declaredInputs() map[string]string {
	return map[string]string{
		InputBrokerURL: "", InputAudience: "", InputMode: "exchange", InputRotation: "",
		InputWorkspaceID: "", InputDeploymentID: "", InputRole: "", InputTTL: "",
		InputEnvName: "ASTRO_API_TOKEN", InputExportEnv: "true", InputRevoke: "true", InputDryRun: "false",
	}
}

// newHarness starts the servers and the runner; inputs override
// declaredInputs, and the value "{broker}" stands for the broker's URL.
func newHarness(t *testing.T, inputs map[string]string, env map[string]string) *harness {
	t.Helper()
	h := &harness{t: t, broker: newFakeBroker(t), ids: &runner.IDTokenHandler{RequestToken: "runner-request-token"}}
	bs := httptest.NewServer(h.broker)
	t.Cleanup(bs.Close)
	is := httptest.NewServer(h.ids)
	t.Cleanup(is.Close)
	h.brokerURL = bs.URL

	in := declaredInputs()
	in[InputBrokerURL] = bs.URL
	for k, v := range inputs {
		in[k] = strings.ReplaceAll(v, "{broker}", bs.URL)
	}
	r, err := runner.NewRunner(t.TempDir(), runner.Options{
		Inputs:              in,
		IDTokenURL:          is.URL + "/token?api-version=2.0",
		IDTokenRequestToken: "runner-request-token",
		Env:                 env,
	})
	if err != nil {
		t.Fatal(err)
	}
	h.runner = r
	return h
}

func (h *harness) deps() Deps {
	return Deps{HTTPClient: &http.Client{Timeout: 5 * time.Second}, Now: func() time.Time { return testNow }, RetryDelay: time.Millisecond}
}

// action builds the step's Action over env; nil means the main step's env.
func (h *harness) action(env map[string]string) *githubactions.Action {
	if env == nil {
		env = h.runner.Env()
	}
	return githubactions.New(
		githubactions.WithGetenv(func(k string) string { return env[k] }),
		githubactions.WithWriter(&h.stdout),
	)
}

func (h *harness) files() (envs, outputs, state map[string]string) {
	h.t.Helper()
	var err error
	if envs, err = h.runner.ExportedEnv(); err != nil {
		h.t.Fatal(err)
	}
	if outputs, err = h.runner.Outputs(); err != nil {
		h.t.Fatal(err)
	}
	if state, err = h.runner.State(); err != nil {
		h.t.Fatal(err)
	}
	return envs, outputs, state
}

func (h *harness) summary() string {
	h.t.Helper()
	s, err := h.runner.Summary()
	if err != nil {
		h.t.Fatal(err)
	}
	return s
}

// checkNoLeak fails the test if a secret (each one given, and every OIDC
// token issued) was not masked with its own add-mask command, or shows in
// any other stdout line, in err, or in the step summary.
func (h *harness) checkNoLeak(err error, secrets ...string) {
	h.t.Helper()
	secrets = append(secrets, h.ids.Issued()...)
	lines := strings.Split(h.stdout.String(), "\n")
	for _, s := range secrets {
		masked := false
		for i, line := range lines {
			if line == "::add-mask::"+s {
				masked = true
			}
			if strings.HasPrefix(line, "::add-mask::") {
				continue
			}
			if strings.Contains(line, s) {
				h.t.Errorf("stdout line %d shows a secret: %q", i+1, line)
			}
		}
		if !masked {
			h.t.Errorf("secret %.8s... was never masked", s)
		}
		if err != nil && strings.Contains(err.Error(), s) {
			h.t.Errorf("error shows a secret: %v", err)
		}
		if strings.Contains(h.summary(), s) {
			h.t.Errorf("step summary shows a secret")
		}
	}
}
