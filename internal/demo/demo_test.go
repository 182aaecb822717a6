package demo_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/astro-sts/astro-sts/internal/astro"
	"github.com/astro-sts/astro-sts/internal/demo"
	"github.com/astro-sts/astro-sts/internal/emulator"
	"github.com/astro-sts/astro-sts/internal/runner"
	"github.com/astro-sts/astro-sts/internal/testkit/syncbuf"
)

// exportedTokens reads back, from the jobs' GITHUB_ENV files the demo left
// in dir, every token value it minted.
func exportedTokens(t *testing.T, dir string) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "job*", "github_env"))
	if err != nil {
		t.Fatal(err)
	}
	var values []string
	for _, f := range files {
		env, err := runner.ParseFileCommands(f)
		if err != nil {
			t.Fatal(err)
		}
		if v := env["ASTRO_API_TOKEN"]; v != "" {
			values = append(values, v)
		}
	}
	return values
}

// TestRun runs the whole demo and checks what it prints and logs: every
// step in order, and no token value anywhere.
func TestRun(t *testing.T) {
	dir := t.TempDir()
	logs := &syncbuf.Buffer{}
	var out strings.Builder
	err := demo.Run(t.Context(), &out, demo.Options{
		Dir:    dir,
		Logger: slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatalf("Run = %v\noutput:\n%s", err, out.String())
	}
	text := out.String()
	seeded, err := emulator.New(emulator.Config{Workspaces: 2, Seed: demo.EmulatorSeed})
	if err != nil {
		t.Fatal(err)
	}

	// Key lines, in this order.
	wantInOrder := []string{
		"Astro API emulator  http://127.0.0.1:",
		"OIDC issuer         http://127.0.0.1:",
		"broker              http://127.0.0.1:",
		"1. Main step of the action",
		"| Got Astro API token ",
		"| Exported it as ASTRO_API_TOKEN for the following steps.",
		"GITHUB_ENV sets ASTRO_API_TOKEN (value sha256:",
		"2. A later step uses ASTRO_API_TOKEN",
		"-> 200 OK, 1 token(s): \"astro-sts acme/dags run 1001/1 job 31337000001\"",
		"3. Post step",
		"| Revoked Astro token ",
		"The token now gets 401 Unauthorized.",
		"4. Main step in acme/website",
		"| The broker refused this job's token exchange. Request id: ",
		"|   code:    denied",
		"|   repository_id:       654321",
		"|   environment:         production",
		"|   - name: \"website-production\"",
		"|       repository_id: \"654321\"",
		"| Error: the broker refused the exchange (403 denied, request id ",
		"The suggested rule, parsed and decided by the broker's policy code, allows this job (rule website-production).",
		"The answer named no rule. The broker's log, under request id ",
		`rule deploy-main (2 of 4 entries hold): repository_id wants "123456", the token has "654321"`,
		"Nothing was minted and nothing exported.",
		"5. A job asks for ttl: 2m",
		"Reaper pass before the deadline: 0 token(s) deleted",
		"The demo moved its clock forward 2m1s",
		"1 token(s) deleted",
		"now gets 401 Unauthorized",
		"6. A pull_request run for branch feature/x",
		"role WORKSPACE_OPERATOR",
		"(rule preview).",
		"names the preview preview-feature-x",
		"astro deployment inspect " + seeded.DeploymentIDs()[1] + " --template: 3 requests",
		"astro deployment create --deployment-file ...: 9 requests, among them POST /deployments 200",
		"astro deployment inspect -n preview-feature-x --key metadata.deployment_id -> cl",
		"The preview is a copy of deployment-2, in the same Workspace and cluster.",
		"| Revoked Astro token ",
		"The token now gets 401 Unauthorized.",
		"7. Branch feature/x is deleted: a delete run",
		"(rule preview-cleanup).",
		"astro deployment delete -n preview-feature-x -f: 3 requests, among them DELETE /deployments/{deploymentId} 204",
		"The previews Workspace now holds: deployment-2\n",
		"| Revoked Astro token ",
		"The token now gets 401 Unauthorized.",
		"8. A push to main of acme/dags asks for WORKSPACE_OPERATOR",
		`The broker answered 403 too_wide: "role WORKSPACE_OPERATOR exceeds WORKSPACE_AUTHOR allowed by rule \"deploy-main\""`,
		"All steps turned out as expected.",
		"What next: README.md, \"Go to production\"",
	}
	rest := text
	for _, want := range wantInOrder {
		i := strings.Index(rest, want)
		if i < 0 {
			t.Fatalf("output lacks %q after the previous line:\n%s", want, text)
		}
		rest = rest[i+len(want):]
	}
	// The denied step shows a refused job's whole explanation (some 30
	// lines): it is what a workflow's author reads, and the point of it.
	if n := strings.Count(text, "\n"); n > 100 {
		t.Errorf("output has %d lines, want a readable 100 at most", n)
	}

	values := exportedTokens(t, dir)
	if len(values) != 4 {
		t.Fatalf("found %d exported tokens in the jobs' files, want 4 (the first job, the crashing one, the two preview jobs)", len(values))
	}
	for _, v := range values {
		if strings.Contains(text, v) || strings.Contains(logs.String(), v) {
			t.Error("a token value appears in the output or the logs")
		}
	}
	// Every token here (Astro's and the OIDC ones) is a JWT.
	if strings.Contains(text, "eyJ") {
		t.Errorf("the output contains something shaped like a JWT:\n%s", text)
	}
	for _, want := range []string{`"audit":"exchange","outcome":"allow"`, `"audit":"exchange","outcome":"deny"`, `"audit":"revoke","outcome":"allow"`, `"audit":"reap"`} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("logs lack %s", want)
		}
	}
}

// faultTransport answers the requests that match with a canned error,
// and passes the others on: a broken dependency the demo must notice.
type faultTransport struct {
	next   http.RoundTripper
	method string
	path   string // suffix of the URL path
	query  string // a query parameter that must be present, if set
	status int
}

func (f *faultTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Method != f.method || !strings.HasSuffix(r.URL.Path, f.path) || (f.query != "" && !r.URL.Query().Has(f.query)) {
		return f.next.RoundTrip(r)
	}
	if r.Body != nil {
		r.Body.Close()
	}
	body := fmt.Sprintf(`{"error":"injected","message":"injected by the test","statusCode":%d}`, f.status)
	return &http.Response{
		StatusCode: f.status,
		Status:     fmt.Sprintf("%d %s", f.status, http.StatusText(f.status)),
		Proto:      "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header:  http.Header{"Content-Type": {"application/json"}},
		Body:    io.NopCloser(strings.NewReader(body)),
		Request: r,
	}, nil
}

// TestRunFails proves the demo is a smoke test: when a step does not turn
// out as it should, Run says which and fails.
func TestRunFails(t *testing.T) {
	tests := []struct {
		name       string
		fault      *faultTransport // nil: none
		missingDir bool
		wantStep   string
		check      func(error) bool
	}{
		{
			name:     "the broker refuses the post step's revoke",
			fault:    &faultTransport{method: http.MethodPost, path: "/v1/revoke", status: http.StatusForbidden},
			wantStep: "post step",
			check:    func(err error) bool { return errors.Is(err, demo.ErrUnexpected) },
		},
		{
			name:     "Astro refuses the exported token",
			fault:    &faultTransport{method: http.MethodGet, path: "/tokens", query: "workspaceId", status: http.StatusUnauthorized},
			wantStep: "use the token",
			check: func(err error) bool {
				var apiErr *astro.APIError
				return errors.As(err, &apiErr) && apiErr.StatusCode == http.StatusUnauthorized
			},
		},
		{
			name:       "nowhere to write the policy",
			missingDir: true,
			wantStep:   "start",
			check:      func(err error) bool { return errors.Is(err, os.ErrNotExist) },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := demo.Options{Dir: t.TempDir()}
			if tt.missingDir {
				opts.Dir = filepath.Join(opts.Dir, "missing")
			}
			if tt.fault != nil {
				tt.fault.next = &http.Transport{Proxy: nil}
				opts.HTTPClient = &http.Client{Timeout: 30 * time.Second, Transport: tt.fault}
			}
			var out strings.Builder
			err := demo.Run(t.Context(), &out, opts)
			var se *demo.StepError
			if !errors.As(err, &se) || se.Step != tt.wantStep {
				t.Fatalf("Run = %v, want a failure of step %q\noutput:\n%s", err, tt.wantStep, out.String())
			}
			if !tt.check(err) {
				t.Errorf("Run = %v: not the expected cause", err)
			}
			if strings.Contains(out.String(), "All steps turned out as expected.") {
				t.Error("a failed demo claims success")
			}
		})
	}
}

// Run plays the whole story and prints it; here only the step headings are
// kept, since the rest (ports, ids, times) changes from run to run.
func ExampleRun() {
	var out strings.Builder
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := demo.Run(ctx, &out, demo.Options{}); err != nil {
		fmt.Println("demo failed:", err)
		return
	}
	for _, line := range strings.Split(out.String(), "\n") {
		if len(line) > 2 && line[1] == '.' && line[0] >= '1' && line[0] <= '9' {
			fmt.Println(line)
		}
	}
	// Output:
	// 1. Main step of the action, as the runner runs it: acme/dags (repository_id 123456), push to refs/heads/main
	// 2. A later step uses ASTRO_API_TOKEN as the astro CLI would (list the Workspace's API tokens):
	// 3. Post step of the same job (the runner passes TOKEN_ID back as STATE_TOKEN_ID):
	// 4. Main step in acme/website (repository_id 654321), which no rule of the policy trusts:
	// 5. A job asks for ttl: 2m, then its runner dies before the post step:
	// 6. A pull_request run for branch feature/x (docs/examples/preview.yml, job create), rule preview:
	// 7. Branch feature/x is deleted: a delete run (docs/examples/preview-cleanup.yml), ref refs/heads/main
	// 8. A push to main of acme/dags asks for WORKSPACE_OPERATOR (to create Deployments outside the previews):
}
