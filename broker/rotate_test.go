package broker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/astro-sts/astro-sts/broker"
	"github.com/astro-sts/astro-sts/internal/astro"
	"github.com/astro-sts/astro-sts/internal/clock"
	"github.com/astro-sts/astro-sts/internal/emulator"
	"github.com/astro-sts/astro-sts/internal/idtoken"
	"github.com/astro-sts/astro-sts/internal/issuer"
	"github.com/astro-sts/astro-sts/internal/policy"
	"github.com/astro-sts/astro-sts/internal/rotation"
	"github.com/astro-sts/astro-sts/internal/sink"
	"github.com/astro-sts/astro-sts/internal/testkit/githubtest"
	"github.com/astro-sts/astro-sts/internal/testkit/syncbuf"
)

const rotateGitHubToken = "ghp_broker-test-token-never-printed"

// rotateEnv is newEnv's broker with a real rotator: the emulator, the OIDC
// issuer and the GitHub secrets server, all over loopback HTTP.
type rotateEnv struct {
	*testEnv
	gh       *githubtest.Server
	managed  string
	oldValue string
}

func newRotateEnv(t *testing.T) *rotateEnv {
	t.Helper()
	c := clock.Stopped(time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC))
	esrv, emu, err := emulator.Start(emulator.Config{Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { esrv.Close() })
	iss, err := issuer.Start(issuer.Config{Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { iss.Close() })
	gh, err := githubtest.Start(githubtest.Config{Tokens: []string{rotateGitHubToken}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gh.Close() })
	gh.AddRepository("acme/dags", "production")

	ac, err := astro.New(astro.Config{
		BaseURL: esrv.URL, Token: emu.OrganizationToken(),
		BaseDelay: time.Millisecond, MaxDelay: 5 * time.Millisecond, MaxAttempts: 2,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	managed, err := ac.CreateToken(ctx, emu.OrganizationID(), astro.CreateTokenRequest{
		Name: "airflow-ci", Scope: astro.ScopeWorkspace, Role: astro.RoleWorkspaceAuthor, EntityID: emu.WorkspaceIDs()[0]})
	if err != nil {
		t.Fatal(err)
	}

	policyPath := filepath.Join(t.TempDir(), "policy.yaml")
	src := fmt.Sprintf(`
rotations:
  - name: airflow-ci
    token_id: %s
    strategy: replace
    allow:
      repository_id: "123456"
      event_name: [schedule, workflow_dispatch]
    github:
      - {repository: acme/dags, secret: ASTRO_API_TOKEN}
      - {repository: acme/dags, environment: production, secret: ASTRO_API_TOKEN}
`, managed.ID)
	if err := os.WriteFile(policyPath, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	logs := &syncbuf.Buffer{}
	logger := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	policies, err := policy.NewReloader(policyPath, logger)
	if err != nil {
		t.Fatal(err)
	}
	sinkCfg := sink.Config{GitHub: sink.GitHubConfig{Token: rotateGitHubToken, APIURL: gh.URL()}}
	if err := rotation.Check(policies.Current(), sinkCfg); err != nil {
		t.Fatal(err)
	}
	rot, err := rotation.New(rotation.Config{
		Astro: ac, OrganizationID: emu.OrganizationID(), Sinks: rotation.NewSinks(sinkCfg, nil, logger),
		Logger: logger, Now: c.Now, SinkAttempts: 2, BaseDelay: time.Millisecond, MaxDelay: 5 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	v, err := idtoken.New(idtoken.Config{Issuers: []string{iss.URL()}, Audience: audience, Now: c.Now})
	if err != nil {
		t.Fatal(err)
	}
	b, err := broker.New(broker.Config{
		Astro: ac, OrganizationID: emu.OrganizationID(), Verifier: v,
		Store: memStore(100, c.Now), Policies: policies, Rotator: rot, Logger: logger, Now: c.Now,
	})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(b.Handler())
	t.Cleanup(hs.Close)
	return &rotateEnv{
		testEnv: &testEnv{t: t, clock: c, emu: emu, emuURL: esrv.URL, iss: iss, broker: b, url: hs.URL,
			logs: logs, policy: policyPath, astroOrg: ac},
		gh: gh, managed: managed.ID, oldValue: managed.Token,
	}
}

// scheduleClaims are a scheduled run of acme/dags, which the rotation's
// allow block trusts.
func scheduleClaims() issuer.Claims {
	c := mainClaims()
	c.EventName = "schedule"
	return c
}

func TestRotateEndpoint(t *testing.T) {
	type answer struct {
		Status int
		Code   string // error code; "" on success
		Sinks  []string
	}
	tests := []struct {
		name   string
		claims func() issuer.Claims
		body   string
		setup  func(e *rotateEnv)
		want   answer
		// oldValid is whether the managed token's old value works after.
		oldValid bool
	}{
		{
			name: "allowed identity", claims: scheduleClaims, body: `{"name":"airflow-ci"}`,
			want: answer{Status: 200, Sinks: []string{rotation.SinkWritten, rotation.SinkWritten}},
		},
		{
			name: "identity not in allow", claims: mainClaims, body: `{"name":"airflow-ci"}`,
			want: answer{Status: 403, Code: "denied"}, oldValid: true,
		},
		{
			name: "unknown rotation", claims: scheduleClaims, body: `{"name":"nope"}`,
			want: answer{Status: 403, Code: "denied"}, oldValid: true,
		},
		{
			name: "no name", claims: scheduleClaims, body: `{}`,
			want: answer{Status: 400, Code: "bad_request"}, oldValid: true,
		},
		{
			name: "a sink fails", claims: scheduleClaims, body: `{"name":"airflow-ci"}`,
			setup: func(e *rotateEnv) {
				e.gh.Fail("/repos/acme/dags/actions/secrets/ASTRO_API_TOKEN", http.StatusForbidden, 10)
			},
			want:     answer{Status: 502, Code: "rotation_incomplete", Sinks: []string{rotation.SinkFailed, rotation.SinkNotWritten}},
			oldValid: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newRotateEnv(t)
			if tt.setup != nil {
				tt.setup(e)
			}
			status, body, _ := e.post("/v1/rotate", e.mint(tt.claims()), tt.body)
			var got struct {
				Error   string                `json:"error"`
				Message string                `json:"message"`
				Sinks   []rotation.SinkResult `json:"sinks"`
			}
			if err := json.Unmarshal(body, &got); err != nil {
				t.Fatalf("body %q: %v", body, err)
			}
			a := answer{Status: status, Code: got.Error}
			for _, s := range got.Sinks {
				a.Sinks = append(a.Sinks, s.Status)
			}
			if d := cmp.Diff(tt.want, a); d != "" {
				t.Errorf("answer (-want +got):\n%s\nbody: %s", d, body)
			}
			if ok, _ := e.tokenWorks(e.oldValue, e.emu.WorkspaceIDs()[0]); ok != tt.oldValid {
				t.Errorf("old value works: %v, want %v", ok, tt.oldValid)
			}

			secrets := []string{e.oldValue, rotateGitHubToken, e.emu.OrganizationToken()}
			for _, target := range []string{githubtest.RepoTarget("acme/dags"), githubtest.EnvTarget("acme/dags", "production")} {
				if v, ok := e.gh.Secret(target, "ASTRO_API_TOKEN"); ok {
					secrets = append(secrets, v)
				}
			}
			switch tt.want.Status {
			case http.StatusOK:
				checkRotateAnswer(t, e, body, secrets)
			case http.StatusBadGateway:
				if !strings.Contains(got.Message, "was kept and keeps working") || got.Sinks[0].Error == "" {
					t.Errorf("message %q, sinks %+v: want the state and each sink's error", got.Message, got.Sinks)
				}
			}
			for _, s := range secrets {
				if strings.Contains(e.logs.String(), s) || strings.Contains(string(body), s) {
					t.Fatalf("a secret value appears in the logs or the answer:\n%s\n%s", body, e.logs.String())
				}
			}
		})
	}
}

// checkRotateAnswer checks the documented JSON shape of a successful rotation
// and that both secrets hold the replacement's value, which works.
func checkRotateAnswer(t *testing.T, e *rotateEnv, body []byte, secrets []string) {
	t.Helper()
	var res map[string]any
	if err := json.Unmarshal(body, &res); err != nil {
		t.Fatal(err)
	}
	tokenID, _ := res["token_id"].(string)
	want := map[string]any{
		"name": "airflow-ci", "token_id": tokenID, "strategy": "replace", "rotated_at": "2026-11-23T12:00:00Z",
		"sinks": []any{
			map[string]any{"kind": "github", "target": "repo acme/dags secret ASTRO_API_TOKEN", "status": "written"},
			map[string]any{"kind": "github", "target": "env acme/dags:production secret ASTRO_API_TOKEN", "status": "written"},
		},
	}
	for _, s := range res["sinks"].([]any) {
		m := s.(map[string]any)
		if v, _ := m["version"].(string); v == "" {
			t.Errorf("sink %v has no version", m)
		}
		delete(m, "version")
	}
	if d := cmp.Diff(want, res); d != "" {
		t.Errorf("answer (-want +got):\n%s", d)
	}
	if tokenID == e.managed || len(secrets) != 5 || secrets[3] != secrets[4] {
		t.Fatalf("token %s (managed %s), %d secrets written: want a replacement in both", tokenID, e.managed, len(secrets)-3)
	}
	if ok, _ := e.tokenWorks(secrets[3], e.emu.WorkspaceIDs()[0]); !ok {
		t.Error("the written value does not work")
	}
	if tok, err := e.astroToken(tokenID); err != nil || tok.Name != "airflow-ci" {
		t.Errorf("replacement %v, %v", tok, err)
	}
}
