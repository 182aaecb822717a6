package broker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/astro-sts/astro-sts/broker"
	"github.com/astro-sts/astro-sts/internal/astro"
	"github.com/astro-sts/astro-sts/internal/brokerapi"
	"github.com/astro-sts/astro-sts/internal/clock"
	"github.com/astro-sts/astro-sts/internal/config"
	"github.com/astro-sts/astro-sts/internal/emulator"
	"github.com/astro-sts/astro-sts/internal/idtoken"
	"github.com/astro-sts/astro-sts/internal/issuer"
	"github.com/astro-sts/astro-sts/internal/policy"
	"github.com/astro-sts/astro-sts/internal/rotation"
	"github.com/astro-sts/astro-sts/internal/secret"
	"github.com/astro-sts/astro-sts/internal/store"
	"github.com/astro-sts/astro-sts/internal/testkit/syncbuf"
)

const audience = "https://sts.example.com"

// testEnv is a broker wired to a real emulator and a real OIDC issuer, all
// over HTTP on loopback.
type testEnv struct {
	t        testing.TB
	clock    *clock.Clock
	emu      *emulator.Emulator
	emuURL   string
	iss      *issuer.Issuer
	broker   *broker.Server
	url      string
	logs     *syncbuf.Buffer
	policy   string // path of the policy file
	policies *policy.Reloader
	astroOrg *astro.Client
}

type envOptions struct {
	emulator   emulator.Config
	replaySize int            // 0 means 1000
	rotator    broker.Rotator // nil: rotation not configured
	// wrapAstro, if set, wraps the broker's Astro client (the real one,
	// over HTTP) to make upstream misbehave in ways the emulator does not.
	wrapAstro func(broker.Astro) broker.Astro
	// configure, if set, adjusts the broker's configuration before New.
	configure func(*broker.Config)
	// store, if set, makes the store on the test's clock instead of the
	// default memory store (of replaySize).
	store func(now func() time.Time) store.Store
	// policy, if set, writes the policy instead of samplePolicy.
	policy func(ws, deps []string) string
}

// samplePolicy grants, for acme/dags (repository id 123456) on main, up to
// WORKSPACE_OPERATOR on the first Workspace for 30 minutes; up to
// WORKSPACE_AUTHOR on both Workspaces for the preview workflow; and
// DEPLOYMENT_ADMIN on the first Deployment for a deploy-only workflow.
func samplePolicy(ws, deps []string) string {
	return fmt.Sprintf(`
rules:
  - name: deploy-main
    match:
      repository_id: "123456"
      ref: refs/heads/main
      event_name: [push, workflow_dispatch]
      job_workflow_ref: {glob: "acme/dags/.github/workflows/*.yml@refs/heads/main"}
    grant:
      workspaces: [%[1]s]
      max_role: WORKSPACE_OPERATOR
      max_ttl: 30m
  - name: both-workspaces
    match:
      repository_id: "123456"
      workflow: preview
    grant:
      workspaces: [%[1]s, %[2]s]
      max_role: WORKSPACE_AUTHOR
      max_ttl: 15m
  - name: deployment-only
    match:
      repository_id: "123456"
      workflow: deploy-only
    grant:
      deployments: [%[3]s]
      max_ttl: 10m
rotations:
  - name: airflow-ci
    token_id: "cltoken"
    strategy: rotate
    allow:
      repository_id: "123456"
      event_name: [schedule]
    vault: {mount: secret, path: astro/airflow-ci, field: token}
`, ws[0], ws[1], deps[0])
}

func newEnv(t testing.TB, opts envOptions) *testEnv {
	t.Helper()
	c := clock.Stopped(time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC))
	ecfg := opts.emulator
	ecfg.Now = c.Now
	esrv, emu, err := emulator.Start(ecfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { esrv.Close() })

	iss, err := issuer.Start(issuer.Config{Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { iss.Close() })

	dir := t.TempDir()
	policyPath := filepath.Join(dir, "policy.yaml")
	writePolicy := samplePolicy
	if opts.policy != nil {
		writePolicy = opts.policy
	}
	if err := os.WriteFile(policyPath, []byte(writePolicy(emu.WorkspaceIDs(), emu.DeploymentIDs())), 0o600); err != nil {
		t.Fatal(err)
	}
	logs := &syncbuf.Buffer{}
	logger := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	replaySize := opts.replaySize
	if replaySize == 0 {
		replaySize = 1000
	}
	deps := broker.Deps{
		Now:    c.Now,
		Logger: logger,
		TuneAstro: func(ac *astro.Config) {
			ac.BaseDelay, ac.MaxDelay, ac.MaxAttempts = time.Millisecond, 5*time.Millisecond, 2
		},
		Configure: func(c *broker.Config) {
			if opts.wrapAstro != nil {
				c.Astro = opts.wrapAstro(c.Astro)
			}
			if opts.configure != nil {
				opts.configure(c)
			}
		},
	}
	if opts.store != nil {
		st := opts.store(c.Now)
		deps.Store = st
		// A store's first epoch refuses ID tokens issued up to
		// idtoken.FutureLeeway after it (they may have been used before
		// it): begin it, and let the clock pass that window.
		if st.Shared() {
			_ = st.Ping(context.Background())
			c.Advance(idtoken.FutureLeeway)
		}
	}
	if opts.rotator != nil {
		deps.Rotator = func(rotation.Astro) (broker.Rotator, error) { return opts.rotator, nil }
	}
	a, err := broker.Assemble(config.Broker{
		Audience:        audience,
		Issuers:         []string{iss.URL()},
		PolicyFile:      policyPath,
		ReplayCacheSize: replaySize,
		Astro: config.Astro{
			APIURL:         esrv.URL,
			OrganizationID: emu.OrganizationID(),
			Token:          secret.Value(emu.OrganizationToken()),
		},
	}, deps)
	if err != nil {
		t.Fatal(err)
	}
	b, policies, ac := a.Server, a.Policies, a.Astro
	hs := httptest.NewServer(b.Handler())
	t.Cleanup(hs.Close)
	return &testEnv{
		t: t, clock: c, emu: emu, emuURL: esrv.URL, iss: iss, broker: b, url: hs.URL,
		logs: logs, policy: policyPath, policies: policies, astroOrg: ac,
	}
}

// mainClaims are the claims of a push to main of acme/dags that the
// deploy-main rule trusts.
func mainClaims() issuer.Claims {
	return issuer.Claims{
		Audience:       audience,
		Repository:     "acme/dags",
		RepositoryID:   "123456",
		Ref:            "refs/heads/main",
		EventName:      "push",
		JobWorkflowRef: "acme/dags/.github/workflows/deploy.yml@refs/heads/main",
		Workflow:       "deploy",
		RunID:          "987",
		RunAttempt:     "1",
	}
}

func (e *testEnv) mint(c issuer.Claims) string {
	e.t.Helper()
	tok, err := e.iss.Mint(c)
	if err != nil {
		e.t.Fatal(err)
	}
	return tok
}

// post sends a JSON body (a string, so tests can send malformed ones) with
// a bearer token, and returns the status, the body and the headers.
func (e *testEnv) post(path, bearer, body string) (int, []byte, http.Header) {
	e.t.Helper()
	req, err := http.NewRequest(http.MethodPost, e.url+path, strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return resp.StatusCode, b, resp.Header
}

// exchange performs a successful exchange or fails the test.
func (e *testEnv) exchange(c issuer.Claims, body string) brokerapi.ExchangeResponse {
	e.t.Helper()
	status, b, _ := e.post("/v1/exchange", e.mint(c), body)
	if status != http.StatusOK {
		e.t.Fatalf("exchange: %d %s", status, b)
	}
	var r brokerapi.ExchangeResponse
	if err := json.Unmarshal(b, &r); err != nil {
		e.t.Fatal(err)
	}
	return r
}

// tokenWorks reports whether value is accepted by the emulator, the way the
// astro CLI would use it: listing the tokens of a Workspace it may see.
func (e *testEnv) tokenWorks(value, workspaceID string) (bool, int) {
	e.t.Helper()
	req, err := http.NewRequest(http.MethodGet,
		fmt.Sprintf("%s/organizations/%s/tokens?workspaceId=%s", e.emuURL, e.emu.OrganizationID(), workspaceID), nil)
	if err != nil {
		e.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+value)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK, resp.StatusCode
}

func (e *testEnv) astroToken(id string) (*astro.Token, error) {
	return e.astroOrg.GetToken(context.Background(), e.emu.OrganizationID(), id)
}

func errorCode(t testing.TB, body []byte) (code, message string) {
	t.Helper()
	eb := errorBody(t, body)
	return eb.Error, eb.Message
}

// errorBody decodes an error answer strictly: every field it has is one
// the contract names.
func errorBody(t testing.TB, body []byte) brokerapi.ErrorBody {
	t.Helper()
	var eb brokerapi.ErrorBody
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&eb); err != nil {
		t.Fatalf("error body %q: %v", body, err)
	}
	return eb
}

// metrics returns the broker's /metrics page.
func (e *testEnv) metrics() string {
	e.t.Helper()
	resp, err := http.Get(e.url + "/metrics")
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return string(b)
}

// audits returns the audit records the broker logged for action
// ("exchange", "revoke", "rotate"), in order.
func (e *testEnv) audits(action string) []map[string]any {
	e.t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(e.logs.String()), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			e.t.Fatalf("log line is not JSON: %q", line)
		}
		if rec["audit"] == action {
			out = append(out, rec)
		}
	}
	return out
}

// memStore is the broker's default store, one replica's memory, with a
// replay cache of size entries.
func memStore(size int, now func() time.Time) store.Store {
	return store.NewMemory(size, now)
}
