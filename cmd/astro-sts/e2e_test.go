package main

// The runner-contract test: the real astro-sts binary, run as a subprocess
// with only the environment a GitHub runner gives a container action,
// against the real broker (started through serve, the production wiring),
// the Astro API emulator and a local OIDC issuer, all on loopback.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"html"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/astro-sts/astro-sts/action"
	"github.com/astro-sts/astro-sts/internal/astro"
	"github.com/astro-sts/astro-sts/internal/config"
	"github.com/astro-sts/astro-sts/internal/emulator"
	"github.com/astro-sts/astro-sts/internal/issuer"
	"github.com/astro-sts/astro-sts/internal/runner"
)

// e2eBin holds the binary and its two links, astro-sts-action and
// astro-sts-post, named as in the image. Building takes seconds that most
// of the package's tests do not need, so it happens once, on first use
// (see [e2eBinDir]), and TestMain only removes it.
var e2eBin struct {
	once sync.Once
	dir  string
	err  error
}

func TestMain(m *testing.M) {
	os.Exit(e2eMain(m))
}

func e2eMain(m *testing.M) int {
	code := m.Run()
	if e2eBin.dir != "" {
		os.RemoveAll(e2eBin.dir)
	}
	return code
}

// e2eBinDir is the directory of the built binary and its links, building
// them on the first call of the test binary.
func e2eBinDir(t testing.TB) string {
	t.Helper()
	e2eBin.once.Do(func() {
		dir, err := os.MkdirTemp("", "astro-sts-e2e-bin-")
		if err == nil {
			e2eBin.dir = dir
			err = e2eBuild(dir)
		}
		e2eBin.err = err
	})
	if e2eBin.err != nil {
		t.Fatalf("build astro-sts: %v", e2eBin.err)
	}
	return e2eBin.dir
}

// e2eBuild builds this package into dir/astro-sts once, with the go tool
// of the toolchain running the tests, and links the image's entrypoint
// names to it.
func e2eBuild(dir string) error {
	gotool := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(gotool); err != nil {
		if gotool, err = exec.LookPath("go"); err != nil {
			return errors.New("no go tool in GOROOT/bin or on PATH")
		}
	}
	bin := filepath.Join(dir, "astro-sts")
	cmd := exec.Command(gotool, "build", "-o", bin, ".")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%w\n%s", err, out)
	}
	for _, name := range []string{"astro-sts-action", "astro-sts-post"} {
		if err := os.Symlink(bin, filepath.Join(dir, name)); err != nil {
			return err
		}
	}
	return nil
}

const (
	e2eRepoID      = "123456"
	e2eRole        = astro.RoleWorkspaceAuthor
	e2eMaxTTL      = 30 * time.Minute
	e2eStepTimeout = time.Minute
)

// e2ePolicy trusts pushes to main of acme/dags (repository id 123456).
func e2ePolicy(workspaceID string) string {
	return fmt.Sprintf(`rules:
  - name: deploy-main
    match:
      repository_id: %q
      ref: refs/heads/main
      event_name: [push]
      job_workflow_ref: {glob: "acme/dags/.github/workflows/*.yml@refs/heads/main"}
    grant:
      workspaces: [%s]
      max_role: %s
      max_ttl: %s
`, e2eRepoID, workspaceID, e2eRole, e2eMaxTTL)
}

// e2eLogs collects the broker's logs, written from its goroutines.
type e2eLogs struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *e2eLogs) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *e2eLogs) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// e2eWorld is the emulator, the issuer and a broker, each on 127.0.0.1.
type e2eWorld struct {
	t         *testing.T
	emuURL    string
	emu       *emulator.Emulator
	iss       *issuer.Issuer
	policy    string
	brokerURL string
	logs      *e2eLogs     // the first broker's log
	runs      atomic.Int64 // hands out run ids, so that each job is its own run
}

func newE2EWorld(t *testing.T) *e2eWorld {
	t.Helper()
	return newE2EWorldWith(t, emulator.Config{})
}

// newE2EWorldWith is [newE2EWorld] with an emulator configured by ecfg.
func newE2EWorldWith(t *testing.T, ecfg emulator.Config) *e2eWorld {
	t.Helper()
	esrv, emu, err := emulator.Start(ecfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { esrv.Close() })
	iss, err := issuer.Start(issuer.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { iss.Close() })
	w := &e2eWorld{t: t, emuURL: esrv.URL, emu: emu, iss: iss, policy: filepath.Join(t.TempDir(), "policy.yaml")}
	if err := os.WriteFile(w.policy, []byte(e2ePolicy(emu.WorkspaceIDs()[0])), 0o600); err != nil {
		t.Fatal(err)
	}
	w.brokerURL, _ = w.startBroker()
	return w
}

// startBroker runs the broker through serve, configured from the
// environment as `astro-sts serve` is, on a free loopback port. The
// audience is the broker's URL, the action's default. stop shuts it down
// and checks that serve returned cleanly; cleanup calls it too.
func (w *e2eWorld) startBroker() (url string, stop func()) {
	w.t.Helper()
	url, logs, stop := startServe(w.t, func(url string) map[string]string {
		return map[string]string{
			"ASTRO_STS_AUDIENCE":       url,
			"ASTRO_STS_ISSUERS":        w.iss.URL(),
			"ASTRO_STS_POLICY_FILE":    w.policy,
			"ASTRO_API_URL":            w.emuURL,
			"ASTRO_ORGANIZATION_ID":    w.emu.OrganizationID(),
			"ASTRO_ORGANIZATION_TOKEN": w.emu.OrganizationToken(),
			"ASTRO_STS_LOG_LEVEL":      "debug",
		}
	})
	if w.logs == nil {
		w.logs = logs
	}
	return url, stop
}

// startServe runs serve on a free loopback port with the configuration
// env(its URL) gives (ASTRO_STS_ADDR is set here). stop shuts it down and
// checks that serve returned cleanly; cleanup calls it too, and prints the
// broker's logs if the test failed.
func startServe(t *testing.T, env func(url string) map[string]string) (url string, logs *e2eLogs, stop func()) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url = "http://" + ln.Addr().String()
	e := env(url)
	e["ASTRO_STS_ADDR"] = ln.Addr().String()
	cfg, err := config.LoadBroker(e)
	if err != nil {
		ln.Close()
		t.Fatal(err)
	}
	logs = &e2eLogs{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, cfg, ln, slog.New(slog.NewJSONHandler(logs, nil)), nil) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("serve = %v after cancel", err)
				}
			case <-time.After(30 * time.Second):
				t.Error("serve did not return after cancel")
			}
		})
	}
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			t.Logf("broker logs:\n%s", logs.String())
		}
	})
	return url, logs, stop
}

// trustedClaims are a push to main of acme/dags in a run of its own.
func (w *e2eWorld) trustedClaims() issuer.Claims {
	c := issuer.DefaultClaims()
	c.RepositoryID = e2eRepoID
	c.RunID = fmt.Sprint(5000 + w.runs.Add(1))
	c.RunAttempt = "1"
	return c
}

// untrustedClaims are the same push from a repository no rule names.
func (w *e2eWorld) untrustedClaims() issuer.Claims {
	c := w.trustedClaims()
	c.Repository, c.RepositoryID = "acme/website", "654321"
	c.Subject = "repo:acme/website:environment:production"
	c.JobWorkflowRef = "acme/website/.github/workflows/deploy.yml@refs/heads/main"
	c.WorkflowRef = c.JobWorkflowRef
	return c
}

// e2eJob is one workflow job: the runner's files and env, and its claims.
type e2eJob struct {
	runner *runner.Runner
	claims issuer.Claims
}

// newJob prepares a job as the runner does for the action's main step:
// every input of action.yml with its default applied, the file-command
// files, and, with idToken, the ID-token endpoint (a URL that already has a
// query string) and its request token.
func (w *e2eWorld) newJob(brokerURL string, claims issuer.Claims, idToken bool) *e2eJob {
	w.t.Helper()
	opts := runner.Options{
		Inputs: map[string]string{
			"broker-url": brokerURL, "audience": "", "mode": "exchange", "rotation": "",
			"workspace-id": "", "deployment-id": "", "role": "", "ttl": "",
			"env-name": "ASTRO_API_TOKEN", "export-env": "true", "revoke": "true",
		},
		Env: map[string]string{"GITHUB_REPOSITORY": claims.Repository, "GITHUB_RUN_ID": claims.RunID, "GITHUB_RUN_ATTEMPT": claims.RunAttempt},
	}
	if idToken {
		opts.IDTokenURL, opts.IDTokenRequestToken = w.iss.RequestURL(claims)
		if !strings.Contains(opts.IDTokenURL, "?") {
			w.t.Fatalf("the ID-token URL %q has no query string, unlike the runner's", opts.IDTokenURL)
		}
	}
	r, err := runner.NewRunner(w.t.TempDir(), opts)
	if err != nil {
		w.t.Fatal(err)
	}
	return &e2eJob{runner: r, claims: claims}
}

// e2eResult is what one run of the binary printed, and how it exited.
type e2eResult struct {
	stdout, stderr string
	code           int
}

// e2eRun runs the binary as argv[0] (a name in [e2eBinDir]) with argv[1:],
// and exactly env plus PATH and HOME: nothing of the test's own
// environment leaks in.
func e2eRun(t *testing.T, argv []string, env map[string]string) e2eResult {
	t.Helper()
	return e2eRunFor(t, e2eStepTimeout, argv, env)
}

// e2eRunFor is [e2eRun] with the step killed after timeout instead of
// [e2eStepTimeout], for a step that waits out a slow Astro.
func e2eRunFor(t *testing.T, timeout time.Duration, argv []string, env map[string]string) e2eResult {
	t.Helper()
	bin := filepath.Join(e2eBinDir(t), argv[0])
	full := make(map[string]string, len(env)+2)
	for k, v := range env {
		full[k] = v
	}
	full["PATH"] = os.Getenv("PATH")
	full["HOME"] = os.Getenv("HOME")
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, argv[1:]...)
	cmd.Env = runner.Environ(full)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	res := e2eResult{stdout: stdout.String(), stderr: stderr.String()}
	var exitErr *exec.ExitError
	switch {
	case errors.As(err, &exitErr):
		res.code = exitErr.ExitCode()
	case err != nil:
		t.Fatalf("%v: %v", argv, err)
	}
	return res
}

// tokenStatus is the emulator's answer to value, used as the astro CLI
// would: listing the Workspace's tokens.
func (w *e2eWorld) tokenStatus(value, workspaceID string) (int, []astro.Token) {
	w.t.Helper()
	c, err := astro.New(astro.Config{BaseURL: w.emuURL, Token: value, MaxAttempts: 1})
	if err != nil {
		w.t.Fatal(err)
	}
	toks, err := c.ListTokens(w.t.Context(), w.emu.OrganizationID(), astro.ListTokensOptions{WorkspaceID: workspaceID})
	var apiErr *astro.APIError
	switch {
	case err == nil:
		return 200, toks
	case errors.As(err, &apiErr):
		return apiErr.StatusCode, nil
	}
	w.t.Fatalf("list tokens: %v", err)
	return 0, nil
}

// mintedFor returns the emulator's tokens minted for the job's run.
func (w *e2eWorld) mintedFor(c issuer.Claims) []string {
	var ids []string
	for _, tok := range w.emu.Tokens() {
		// The name ends with the run, or with the run and the job's check
		// run where the ID token carries one.
		run := " run " + c.RunID + "/" + c.RunAttempt
		if strings.HasSuffix(tok.Name, run) || strings.Contains(tok.Name, run+" job ") {
			ids = append(ids, tok.ID)
		}
	}
	return ids
}

// TestE2ERunnerContract runs main and post as the image does (through the
// links astro-sts-action and astro-sts-post) and once through the
// subcommands, and checks everything the runner and the next steps see.
func TestE2ERunnerContract(t *testing.T) {
	w := newE2EWorld(t)
	ws := w.emu.WorkspaceIDs()[0]
	tests := []struct {
		name       string
		main, post []string
	}{
		{name: "image entrypoints", main: []string{"astro-sts-action"}, post: []string{"astro-sts-post"}},
		{name: "subcommands", main: []string{"astro-sts", "action"}, post: []string{"astro-sts", "post"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			job := w.newJob(w.brokerURL, w.trustedClaims(), true)
			start := time.Now()
			res := e2eRun(t, tt.main, job.runner.Env())
			if res.code != 0 || res.stderr != "" {
				t.Fatalf("main: exit %d, stderr %q, stdout:\n%s", res.code, res.stderr, res.stdout)
			}

			// The file commands, read with the runner's rules.
			exported, err := job.runner.ExportedEnv()
			if err != nil {
				t.Fatal(err)
			}
			outputs, err := job.runner.Outputs()
			if err != nil {
				t.Fatal(err)
			}
			state, err := job.runner.State()
			if err != nil {
				t.Fatal(err)
			}
			value, id := exported["ASTRO_API_TOKEN"], outputs["token-id"]
			if value == "" || id == "" {
				t.Fatalf("no token exported (%d bytes) or no token-id output (%q)", len(value), id)
			}
			if diff := cmp.Diff(map[string]string{"ASTRO_API_TOKEN": value}, exported); diff != "" {
				t.Errorf("GITHUB_ENV (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(map[string]string{action.StateTokenID: id}, state); diff != "" {
				t.Errorf("GITHUB_STATE (-want +got):\n%s", diff)
			}
			wantOutputs := map[string]string{
				"token": value, "token-id": id, "expires-at": outputs["expires-at"],
				"workspace-id": ws, "deployment-id": "", "role": e2eRole,
			}
			// Compare without the value, so a mismatch never prints it.
			if outputs["token"] != value {
				t.Error("the token output is not the exported value")
			}
			delete(wantOutputs, "token")
			delete(outputs, "token")
			if diff := cmp.Diff(wantOutputs, outputs); diff != "" {
				t.Errorf("GITHUB_OUTPUT (-want +got):\n%s", diff)
			}
			expires, err := time.Parse(time.RFC3339, outputs["expires-at"])
			if err != nil || expires.Before(start.Add(e2eMaxTTL-time.Minute)) || expires.After(time.Now().Add(e2eMaxTTL+time.Second)) {
				t.Errorf("expires-at = %q, want about now + %s (%v)", outputs["expires-at"], e2eMaxTTL, err)
			}

			// The log: masked before anything could show the value.
			if err := runner.MaskedFirst(res.stdout, value); err != nil {
				t.Errorf("main stdout: %v", err)
			}
			if strings.Contains(res.stdout, "::error::") || strings.Contains(res.stdout, "::warning::") {
				t.Errorf("main stdout has annotations:\n%s", res.stdout)
			}

			// The step summary: where, what and until when; never the value.
			summary, err := job.runner.Summary()
			if err != nil {
				t.Fatal(err)
			}
			// Values are code elements written as character references:
			// read them back as GitHub shows them.
			shown := html.UnescapeString(summary)
			for _, want := range []string{"| Workspace | <code>" + ws + "</code> |", "| Role | <code>WORKSPACE_AUTHOR</code> |", "| Expires | <code>" + outputs["expires-at"] + "</code> ("} {
				if !strings.Contains(shown, want) {
					t.Errorf("step summary lacks %q:\n%s", want, summary)
				}
			}
			if strings.Contains(summary, value) {
				t.Error("the step summary shows the token value")
			}

			// The exported token works as the astro CLI would use it.
			status, toks := w.tokenStatus(value, ws)
			if status != 200 || len(toks) != 1 || toks[0].ID != id {
				t.Fatalf("with the exported token: %d, %d tokens, want 200 and token %s", status, len(toks), id)
			}

			// The post step, with STATE_TOKEN_ID and GITHUB_ENV's exports.
			postEnv, err := job.runner.PostEnv()
			if err != nil {
				t.Fatal(err)
			}
			if postEnv["STATE_"+action.StateTokenID] != id {
				t.Fatalf("post env STATE_TOKEN_ID = %q, want %q", postEnv["STATE_"+action.StateTokenID], id)
			}
			pres := e2eRun(t, tt.post, postEnv)
			if pres.code != 0 || pres.stderr != "" || !strings.Contains(pres.stdout, "Revoked Astro token "+id+".") {
				t.Fatalf("post: exit %d, stderr %q, stdout:\n%s", pres.code, pres.stderr, pres.stdout)
			}
			if strings.Contains(pres.stdout, "::warning::") || strings.Contains(pres.stdout, value) {
				t.Errorf("post stdout warns or shows the token:\n%s", strings.ReplaceAll(pres.stdout, value, "<token>"))
			}
			if status, _ := w.tokenStatus(value, ws); status != 401 {
				t.Errorf("after post the token got %d, want 401", status)
			}
			if ids := w.mintedFor(job.claims); len(ids) != 0 {
				t.Errorf("tokens of the run left in Astro: %v", ids)
			}
		})
	}
}

// TestE2EMainFails covers the main step's failures: each exits 1 with one
// ::error:: line that says what to do, writes no file command and mints
// nothing.
func TestE2EMainFails(t *testing.T) {
	t.Parallel() // with TestE2EPostBrokerDown: both wait out the action's backoff
	w := newE2EWorld(t)
	dead := func() string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		return "http://" + ln.Addr().String()
	}()
	tests := []struct {
		name      string
		brokerURL string
		untrusted bool
		noIDToken bool
		wantError string // in the ::error:: line
	}{
		{name: "no broker", brokerURL: dead, wantError: "check broker-url and that the broker is up"},
		{name: "broker refuses", brokerURL: w.brokerURL, untrusted: true,
			wantError: "): no policy rule allows this identity — no rule of the trust policy trusts this job: hand the rule in the step summary, and the request id, to your platform team"},
		{name: "no id-token permission", brokerURL: w.brokerURL, noIDToken: true,
			wantError: "no OIDC token: add `permissions: id-token: write` to the job"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel() // "no broker" waits out ~7 s of the action's backoff
			claims := w.trustedClaims()
			if tt.untrusted {
				claims = w.untrustedClaims()
			}
			job := w.newJob(tt.brokerURL, claims, !tt.noIDToken)
			res := e2eRun(t, []string{"astro-sts-action"}, job.runner.Env())
			if res.code != 1 {
				t.Errorf("exit %d, want 1", res.code)
			}
			if res.stderr != "" {
				t.Errorf("stderr = %q, want empty (the error is reported once, as an annotation)", res.stderr)
			}
			var errorLines []string
			for _, line := range strings.Split(res.stdout, "\n") {
				if strings.HasPrefix(line, "::error") {
					errorLines = append(errorLines, line)
				}
			}
			if len(errorLines) != 1 || !strings.HasPrefix(errorLines[0], "::error::") || !strings.Contains(errorLines[0], tt.wantError) {
				t.Errorf("error annotations %q, want one containing %q\nstdout:\n%s", errorLines, tt.wantError, res.stdout)
			}
			if tt.untrusted && len(errorLines) == 1 {
				checkRefusalExplained(t, w, job, res.stdout, errorLines[0])
			}
			for name, read := range map[string]func() (map[string]string, error){
				"GITHUB_ENV": job.runner.ExportedEnv, "GITHUB_OUTPUT": job.runner.Outputs, "GITHUB_STATE": job.runner.State,
			} {
				got, err := read()
				if err != nil || len(got) != 0 {
					t.Errorf("%s = %v (%v), want nothing written", name, got, err)
				}
			}
			if ids := w.mintedFor(claims); len(ids) != 0 {
				t.Errorf("a failed main step minted %v", ids)
			}
		})
	}
}

// checkRefusalExplained: the job log and the step summary of a refused job
// hold the request id of its error, its identity and a rule for it; the
// broker's log explains the refusal under that id; no OIDC token shows
// anywhere but in its ::add-mask:: line.
func checkRefusalExplained(t *testing.T, w *e2eWorld, job *e2eJob, stdout, errorLine string) {
	t.Helper()
	m := regexp.MustCompile(`\(403 denied, request id ([A-Za-z0-9._-]+)\)`).FindStringSubmatch(errorLine)
	if m == nil {
		t.Fatalf("the error %q has no request id", errorLine)
	}
	id := m[1]
	for _, want := range []string{
		"The broker refused this job's token exchange. Request id: " + id + " ",
		"  repository_id:       654321\n",
		"      repository_id: \"654321\"\n",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("the job log lacks %q:\n%s", want, stdout)
		}
	}
	summary, err := job.runner.Summary()
	if err != nil || !strings.Contains(summary, "### Astro API token refused") || !strings.Contains(summary, id) {
		t.Errorf("step summary (%v):\n%s", err, summary)
	}
	for i, line := range strings.Split(stdout+"\n"+summary, "\n") {
		if strings.Contains(line, "eyJ") && !strings.HasPrefix(line, "::add-mask::") {
			t.Errorf("line %d shows a JWT: %q", i+1, line)
		}
	}
	explained := 0
	for _, line := range strings.Split(w.logs.String(), "\n") {
		if strings.Contains(line, `"msg":"denial explained"`) && strings.Contains(line, `"request_id":"`+id+`"`) {
			explained++
		}
	}
	if explained == 0 {
		t.Errorf("the broker's log has no explanation under request id %s", id)
	}
}

// TestE2EPostBrokerDown: when the broker is gone by the time the post step
// runs, post warns, exits 0 and leaves the token to the reaper.
func TestE2EPostBrokerDown(t *testing.T) {
	t.Parallel() // it waits out ~7 s of the action's backoff
	w := newE2EWorld(t)
	url, stop := w.startBroker()
	job := w.newJob(url, w.trustedClaims(), true)
	if res := e2eRun(t, []string{"astro-sts-action"}, job.runner.Env()); res.code != 0 {
		t.Fatalf("main: exit %d\n%s%s", res.code, res.stdout, res.stderr)
	}
	state, err := job.runner.State()
	if err != nil {
		t.Fatal(err)
	}
	id := state[action.StateTokenID]
	stop()

	postEnv, err := job.runner.PostEnv()
	if err != nil {
		t.Fatal(err)
	}
	res := e2eRun(t, []string{"astro-sts-post"}, postEnv)
	if res.code != 0 || res.stderr != "" {
		t.Errorf("post: exit %d, stderr %q; want 0 and nothing", res.code, res.stderr)
	}
	want := "::warning::Could not revoke Astro token " + id + ": the revoke call to the broker failed"
	if !strings.Contains(res.stdout, want) || !strings.Contains(res.stdout, "The broker's reaper deletes it when it expires.") {
		t.Errorf("post stdout lacks %q and the reaper note:\n%s", want, res.stdout)
	}
	if ids := w.mintedFor(job.claims); len(ids) != 1 || ids[0] != id {
		t.Errorf("tokens of the run = %v, want %s still there for the reaper", ids, id)
	}
}
