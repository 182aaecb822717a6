package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/astro-sts/astro-sts/internal/astro"
	"github.com/astro-sts/astro-sts/internal/config"
	"github.com/astro-sts/astro-sts/internal/emulator"
	"github.com/astro-sts/astro-sts/internal/policy"
	"github.com/astro-sts/astro-sts/internal/rotation"
	"github.com/astro-sts/astro-sts/internal/sink"
	"github.com/astro-sts/astro-sts/internal/testkit/githubtest"
)

const rotateGitHubToken = "ghp_cli-test-token-never-printed"

// rotateEnv is what `astro-sts rotate` talks to: the emulator and the
// GitHub secrets server, over loopback.
type rotateEnv struct {
	emu      *emulator.Emulator
	emuURL   string
	gh       *githubtest.Server
	managed  string // the managed token's id
	oldValue string
	policy   string // path
	environ  map[string]string
}

func newRotateEnv(t *testing.T) *rotateEnv {
	t.Helper()
	esrv, emu, err := emulator.Start(emulator.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { esrv.Close() })
	gh, err := githubtest.Start(githubtest.Config{Tokens: []string{rotateGitHubToken}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gh.Close() })
	gh.AddRepository("acme/dags", "production")

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ac, err := astro.New(astro.Config{BaseURL: esrv.URL, Token: emu.OrganizationToken()})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := ac.CreateToken(ctx, emu.OrganizationID(), astro.CreateTokenRequest{
		Name: "airflow-ci", Scope: astro.ScopeWorkspace, Role: astro.RoleWorkspaceAuthor, EntityID: emu.WorkspaceIDs()[0]})
	if err != nil {
		t.Fatal(err)
	}
	pol := writePolicyTemp(t, "policy.yaml", fmt.Sprintf(`
rotations:
  - name: airflow-ci
    token_id: %s
    strategy: rotate
    allow: {repository_id: "123456", event_name: [schedule]}
    github:
      - {repository: acme/dags, secret: ASTRO_API_TOKEN}
      - {repository: acme/dags, environment: production, secret: ASTRO_API_TOKEN}
`, tok.ID))
	return &rotateEnv{
		emu: emu, emuURL: esrv.URL, gh: gh, managed: tok.ID, oldValue: tok.Token, policy: pol,
		environ: map[string]string{
			"ASTRO_API_URL":            esrv.URL,
			"ASTRO_ORGANIZATION_ID":    emu.OrganizationID(),
			"ASTRO_ORGANIZATION_TOKEN": emu.OrganizationToken(),
			"GITHUB_TOKEN":             rotateGitHubToken,
			"GITHUB_API_URL":           gh.URL(),
			"ASTRO_STS_LOG_LEVEL":      "debug",
		},
	}
}

func (e *rotateEnv) status(t *testing.T, value string) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, e.emuURL+"/organizations", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+value)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func TestRotateCommand(t *testing.T) {
	type outcome struct {
		Code int
		// Sinks are the statuses in the printed result; nil when none was
		// printed.
		Sinks []string
		// OldValue is the emulator's answer to the old value afterwards.
		OldValue int
	}
	tests := []struct {
		name    string
		args    func(e *rotateEnv) []string
		environ func(e *rotateEnv, env map[string]string)
		setup   func(e *rotateEnv)
		want    outcome
		// stderr must contain each of these.
		stderr []string
	}{
		{
			name: "success",
			want: outcome{Code: 0, Sinks: []string{rotation.SinkWritten, rotation.SinkWritten}, OldValue: 401},
		},
		{
			name: "token from a file",
			environ: func(e *rotateEnv, env map[string]string) {
				env["ASTRO_ORGANIZATION_TOKEN_FILE"] = writePolicyTemp(t, "org-token", env["ASTRO_ORGANIZATION_TOKEN"]+"\n")
				delete(env, "ASTRO_ORGANIZATION_TOKEN")
			},
			want: outcome{Code: 0, Sinks: []string{rotation.SinkWritten, rotation.SinkWritten}, OldValue: 401},
		},
		{
			name:    "no GitHub credentials for the rotation's sinks",
			environ: func(_ *rotateEnv, env map[string]string) { delete(env, "GITHUB_TOKEN") },
			want:    outcome{Code: 1, OldValue: 200},
			stderr:  []string{`rotation "airflow-ci"`, "no GitHub credentials are configured"},
		},
		{
			name: "every configuration problem at once",
			environ: func(_ *rotateEnv, env map[string]string) {
				delete(env, "ASTRO_ORGANIZATION_ID")
				delete(env, "ASTRO_ORGANIZATION_TOKEN")
				delete(env, "GITHUB_TOKEN")
				env["GITHUB_APP_ID"] = "7"
			},
			want:   outcome{Code: 1, OldValue: 200},
			stderr: []string{"ASTRO_ORGANIZATION_ID is required", "ASTRO_ORGANIZATION_TOKEN", "GITHUB_APP_PRIVATE_KEY_FILE"},
		},
		{
			name: "a sink refuses the write",
			setup: func(e *rotateEnv) {
				e.gh.Fail("/repos/acme/dags/actions/secrets/ASTRO_API_TOKEN", http.StatusForbidden, 10)
			},
			want:   outcome{Code: 1, Sinks: []string{rotation.SinkFailed, rotation.SinkWritten}, OldValue: 401},
			stderr: []string{"repo acme/dags secret ASTRO_API_TOKEN", "run the rotation again"},
		},
		{
			name:   "unknown rotation",
			args:   func(e *rotateEnv) []string { return []string{"--policy", e.policy, "--name", "nope"} },
			want:   outcome{Code: 1, OldValue: 200},
			stderr: []string{`has no rotation "nope" (it has: airflow-ci)`},
		},
		{
			name:   "no name",
			args:   func(e *rotateEnv) []string { return []string{"--policy", e.policy} },
			want:   outcome{Code: 2, OldValue: 200},
			stderr: []string{"--policy and --name are required"},
		},
		{
			name:   "stray argument",
			args:   func(e *rotateEnv) []string { return []string{"--policy", e.policy, "--name", "airflow-ci", "now"} },
			want:   outcome{Code: 2, OldValue: 200},
			stderr: []string{`unexpected argument "now"`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newRotateEnv(t)
			args := []string{"--policy", e.policy, "--name", "airflow-ci"}
			if tt.args != nil {
				args = tt.args(e)
			}
			if tt.environ != nil {
				tt.environ(e, e.environ)
			}
			if tt.setup != nil {
				tt.setup(e)
			}
			var stdout, stderr bytes.Buffer
			err := runRotate(context.Background(), args, e.environ, &stdout, &stderr)
			got := outcome{Code: exitCode(err, &stderr)}

			var res rotation.Result
			if stdout.Len() > 0 {
				if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
					t.Fatalf("stdout is not the result JSON: %v\n%s", err, stdout.String())
				}
				for _, s := range res.Sinks {
					got.Sinks = append(got.Sinks, s.Status)
				}
			}
			got.OldValue = e.status(t, e.oldValue)
			if d := cmp.Diff(tt.want, got); d != "" {
				t.Errorf("outcome (-want +got):\n%s\nstderr:\n%s", d, stderr.String())
			}
			for _, s := range tt.stderr {
				if !strings.Contains(stderr.String(), s) {
					t.Errorf("stderr does not say %q:\n%s", s, stderr.String())
				}
			}

			secrets := []string{e.oldValue, rotateGitHubToken, e.emu.OrganizationToken()}
			for _, s := range []string{githubtest.RepoTarget("acme/dags"), githubtest.EnvTarget("acme/dags", "production")} {
				if v, ok := e.gh.Secret(s, "ASTRO_API_TOKEN"); ok {
					secrets = append(secrets, v)
				}
			}
			if tt.want.Code == 0 {
				if res.Name != "airflow-ci" || res.Strategy != rotation.StrategyRotate || res.TokenID != e.managed || len(secrets) != 5 {
					t.Errorf("result %+v, %d secrets written", res, len(secrets)-3)
				}
				if secrets[3] != secrets[4] || e.status(t, secrets[3]) != http.StatusOK {
					t.Error("the secrets do not hold one valid value")
				}
			}
			for _, s := range secrets {
				if strings.Contains(stdout.String()+stderr.String(), s) {
					t.Fatalf("a secret value was printed:\nstdout:\n%s\nstderr:\n%s", stdout.String(), stderr.String())
				}
			}
		})
	}
}

func TestRotateConfigTokenFile(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	if err := os.WriteFile(empty, []byte(" \n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := config.LoadRotate(map[string]string{
		"ASTRO_ORGANIZATION_ID": "org", "ASTRO_ORGANIZATION_TOKEN_FILE": empty, "ASTRO_API_URL": "http://astro.example.com/v1",
		"ASTRO_STS_LOG_LEVEL": "loud",
	})
	for _, want := range []string{"is empty", "plain http", "ASTRO_STS_LOG_LEVEL"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not say %q", err, want)
		}
	}
}

// The broker's policy reloader refuses, at start, a policy whose rotations
// have no sink credentials; a policy without rotations needs none. The
// rotator itself always exists, so a reload can add a rotation.
func TestRotationCheck(t *testing.T) {
	e := newRotateEnv(t)
	rulesOnly := writePolicyTemp(t, "rules.yaml", policyCheckYAML)
	withCredentials, err := config.LoadRotate(e.environ)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		path    string
		cfg     sink.Config
		wantErr string
	}{
		{"no rotations", rulesOnly, sink.Config{}, ""},
		{"rotations with credentials", e.policy, withCredentials.Sinks, ""},
		{"rotations without credentials", e.policy, sink.Config{}, `rotation "airflow-ci"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := tt.cfg
			_, err := policy.NewReloader(tt.path, nil, rotationCheck(cfg))
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Errorf("err = %v, want %q", err, tt.wantErr)
			}
			ac, err := astro.New(astro.Config{BaseURL: e.emuURL, Token: e.emu.OrganizationToken()})
			if err != nil {
				t.Fatal(err)
			}
			if r, err := newRotator(cfg, ac, e.emu.OrganizationID(), nil, slog.New(slog.DiscardHandler)); r == nil || err != nil {
				t.Errorf("newRotator = %v, %v", r, err)
			}
		})
	}
	// A half-configured sink is refused when the configuration loads.
	if _, err := config.LoadRotate(map[string]string{"GITHUB_TOKEN": "x", "VAULT_TOKEN": "y"}); err == nil || !strings.Contains(err.Error(), "VAULT_ADDR") {
		t.Errorf("half-configured Vault: %v", err)
	}
}
