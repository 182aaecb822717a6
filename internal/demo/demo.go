// Package demo runs the whole astro-sts story on one machine, with no
// configuration: `astro-sts demo` calls [Run].
//
// It starts the Astro API emulator, a local OIDC issuer standing in for
// GitHub and the broker with [SamplePolicy], all on 127.0.0.1; then it plays
// workflow jobs the way a runner runs the action (internal/runner gives
// each job its file-command files and environment, and the action's own
// [action.Main] and [action.Post] run in-process): an exchange, the exported
// token used as the astro CLI would, the post step's revoke, a denied
// exchange, a job whose post step never ran, cleaned up by the reaper, and a
// preview Deployment created by a pull_request run and deleted when its
// branch is, as docs/examples/ documents it.
//
// Each step checks its result, so the demo doubles as a smoke test: [Run]
// returns a [*StepError] when anything turns out differently.
package demo

import (
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/sethvargo/go-githubactions"

	"github.com/astro-sts/astro-sts/action"
	"github.com/astro-sts/astro-sts/internal/astro"
	"github.com/astro-sts/astro-sts/internal/brokerapi"
	"github.com/astro-sts/astro-sts/internal/clock"
	"github.com/astro-sts/astro-sts/internal/idtoken"
	"github.com/astro-sts/astro-sts/internal/issuer"
	"github.com/astro-sts/astro-sts/internal/policy"
	"github.com/astro-sts/astro-sts/internal/runner"
)

//go:embed policy.yaml
var samplePolicy []byte

// SamplePolicy returns the trust policy the demo's broker runs with, and
// docs/examples/policy.yaml: rule deploy-main grants WORKSPACE_AUTHOR on
// the emulator's first Workspace to pushes to main; rules preview and
// preview-cleanup grant WORKSPACE_OPERATOR on its second Workspace to the
// preview workflows. Every rule is bound to a repository id, the events
// and the workflow files. It is meant as the starting point of a real
// policy (`astro-sts demo --print-policy`). Each call returns a copy.
func SamplePolicy() []byte { return slices.Clone(samplePolicy) }

// Options configure [Run]. The zero value is the demo as
// `astro-sts demo` runs it.
type Options struct {
	// Logger receives the logs of the emulator, the issuer and the broker,
	// audit records included (never a token value). nil discards them, which
	// keeps the demo's own output readable.
	Logger *slog.Logger
	// Now is the base clock; nil means time.Now. The demo adds its own
	// offset to it when it skips time.
	Now func() time.Time
	// HTTPClient carries every request of the demo, all to 127.0.0.1; nil
	// means a client with short timeouts that never uses a proxy.
	HTTPClient *http.Client
	// Dir receives the policy file and the jobs' file-command files; ""
	// means a new temporary directory, removed when Run returns.
	Dir string
}

// ErrUnexpected is wrapped by a [StepError] whose step ran but did not turn
// out as the demo expects, as opposed to one that could not run at all.
var ErrUnexpected = errors.New("unexpected result")

// StepError reports the demo step that failed.
type StepError struct {
	Step string
	Err  error
}

func (e *StepError) Error() string { return e.Step + ": " + e.Err.Error() }
func (e *StepError) Unwrap() error { return e.Err }

func unexpected(step, format string, a ...any) error {
	return &StepError{Step: step, Err: fmt.Errorf("%w: %s", ErrUnexpected, fmt.Sprintf(format, a...))}
}

// The jobs the demo plays. The trusted one matches the sample policy's rule;
// the other repository is of the same owner, but no rule names its id.
const (
	trustedRepo     = "acme/dags"
	trustedRepoID   = "123456"
	untrustedRepo   = "acme/website"
	untrustedRepoID = "654321"
	// crashTTLInput is the ttl input of the job whose post step "crashes";
	// crashTTL is the same lifetime as a duration.
	crashTTLInput = "2m"
	crashTTL      = 2 * time.Minute
)

// Run runs the demo and prints each step to out in a few plain lines. It
// returns nil only if every step turned out as it should. No token value is
// ever printed: tokens appear as their id and a SHA-256 prefix.
func Run(ctx context.Context, out io.Writer, opts Options) (err error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.HTTPClient == nil {
		opts.HTTPClient = newHTTPClient()
	}
	dir := opts.Dir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "astro-sts-demo-"); err != nil {
			return err
		}
		defer os.RemoveAll(dir)
	}

	s, err := startStack(clock.New(opts.Now), opts.HTTPClient, opts.Logger, dir)
	if err != nil {
		return &StepError{Step: "start", Err: err}
	}
	defer func() { err = errors.Join(err, s.close()) }()

	d := &demo{stack: s, p: &printer{w: out}, dir: dir}
	err = d.run(ctx)
	return errors.Join(err, d.p.err)
}

// newHTTPClient is a client for loopback servers: no proxy, and every
// phase bounded, so a stuck server fails the demo instead of hanging it.
func newHTTPClient() *http.Client {
	return &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			Proxy:                 nil,
			DialContext:           (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
			ResponseHeaderTimeout: 20 * time.Second,
			IdleConnTimeout:       30 * time.Second,
			MaxIdleConnsPerHost:   4,
		},
	}
}

// demo is one run: the servers, the output and the jobs played so far.
type demo struct {
	*stack
	p    *printer
	dir  string
	jobs int
}

// issued is what a successful main step left for the job's later steps.
type issued struct {
	job         *job
	value       string
	tokenID     string
	workspaceID string
}

func (d *demo) run(ctx context.Context) error {
	d.intro()
	tok, err := d.exchange(ctx)
	if err != nil {
		return err
	}
	if err := d.useToken(ctx, tok); err != nil {
		return err
	}
	if err := d.post(ctx, tok); err != nil {
		return err
	}
	if err := d.denied(ctx); err != nil {
		return err
	}
	if err := d.reap(ctx); err != nil {
		return err
	}
	previewID, err := d.previewCreate(ctx)
	if err != nil {
		return err
	}
	if err := d.previewCleanup(ctx, previewID); err != nil {
		return err
	}
	if err := d.operatorRefused(ctx); err != nil {
		return err
	}
	d.whatNext()
	return nil
}

func (d *demo) intro() {
	p := d.p
	p.f("astro-sts demo: the whole story on this machine, everything on 127.0.0.1.\n\n")
	p.f("Started:\n")
	p.f("  Astro API emulator  %s  (organization %s, Workspace %s)\n", d.emuSrv.URL, d.emu.OrganizationID(), d.emu.WorkspaceIDs()[0])
	p.f("  OIDC issuer         %s  (stands in for https://token.actions.githubusercontent.com)\n", d.iss.URL())
	p.f("  broker              %s  (sample policy: astro-sts demo --print-policy)\n", d.brokerURL)
}

// exchange runs the action's main step for a push to main of the trusted
// repository, and reads back what it left for the job's next steps.
func (d *demo) exchange(ctx context.Context) (issued, error) {
	const step = "main step"
	d.p.f("\n1. Main step of the action, as the runner runs it: %s (repository_id %s), push to refs/heads/main\n", trustedRepo, trustedRepoID)
	tok, err := d.mainStep(ctx, trustedClaims("1001"), nil, d.emu.WorkspaceIDs()[0])
	if err != nil {
		return issued{}, &StepError{Step: step, Err: err}
	}
	d.p.f("   The step masked the token (::add-mask::) before any line could show it: the log shows ***.\n")
	d.p.f("   Read back with the runner's rules: GITHUB_ENV sets ASTRO_API_TOKEN (value %s),\n", fingerprint(tok.value))
	d.p.f("   GITHUB_STATE keeps TOKEN_ID=%s for the post step.\n", tok.tokenID)
	return tok, nil
}

// mainStep runs the action's main step of a new job with claims and
// inputs, shows its log, and reads back the token it left for the job's
// next steps, which must be for Workspace ws (see [demo.collect]).
func (d *demo) mainStep(ctx context.Context, claims issuer.Claims, inputs map[string]string, ws string) (issued, error) {
	j, err := d.newJob(claims, inputs)
	if err != nil {
		return issued{}, err
	}
	log, err := d.runMain(ctx, j)
	if err != nil {
		return issued{}, err
	}
	d.p.lines(log.Lines)
	return d.collect(j, log, ws)
}

// collect reads the main step's file commands the way the runner does and
// checks that they and the log agree with each other, and that the token
// is for Workspace ws.
func (d *demo) collect(j *job, log jobLog, ws string) (issued, error) {
	exported, err := j.runner.ExportedEnv()
	if err != nil {
		return issued{}, err
	}
	outputs, err := j.runner.Outputs()
	if err != nil {
		return issued{}, err
	}
	state, err := j.runner.State()
	if err != nil {
		return issued{}, err
	}
	tok := issued{job: j, value: exported[action.DefaultEnvName], tokenID: outputs[action.OutputTokenID], workspaceID: outputs[action.OutputWorkspaceID]}
	switch {
	case tok.value == "":
		return issued{}, fmt.Errorf("%w: GITHUB_ENV does not set %s", ErrUnexpected, action.DefaultEnvName)
	case outputs[action.OutputToken] != tok.value:
		return issued{}, fmt.Errorf("%w: the token output differs from the exported token", ErrUnexpected)
	case tok.tokenID == "" || state[action.StateTokenID] != tok.tokenID:
		return issued{}, fmt.Errorf("%w: GITHUB_STATE's %s is %q, the token-id output %q", ErrUnexpected, action.StateTokenID, state[action.StateTokenID], tok.tokenID)
	case tok.workspaceID != ws:
		return issued{}, fmt.Errorf("%w: token for Workspace %q, want the policy's %q", ErrUnexpected, tok.workspaceID, ws)
	}
	if err := checkMasked(log, tok.value); err != nil {
		return issued{}, fmt.Errorf("%w: %w", ErrUnexpected, err)
	}
	return tok, nil
}

// useToken lists the Workspace's tokens with the exported token, as the
// astro CLI does with ASTRO_API_TOKEN.
func (d *demo) useToken(ctx context.Context, tok issued) error {
	const step = "use the token"
	d.p.f("\n2. A later step uses ASTRO_API_TOKEN as the astro CLI would (list the Workspace's API tokens):\n")
	toks, err := d.listTokens(ctx, tok)
	if err != nil {
		return &StepError{Step: step, Err: err}
	}
	var names []string
	found := false
	for _, t := range toks {
		names = append(names, fmt.Sprintf("%q", t.Name))
		found = found || t.ID == tok.tokenID
	}
	d.p.f("   GET %s\n   -> 200 OK, %d token(s): %s\n", d.listPath(tok), len(toks), strings.Join(names, ", "))
	if !found {
		return unexpected(step, "the listing does not include token %s", tok.tokenID)
	}
	return nil
}

// post runs the action's post step, then checks that the revoked token is
// refused.
func (d *demo) post(ctx context.Context, tok issued) error {
	d.p.f("\n3. Post step of the same job (the runner passes TOKEN_ID back as STATE_TOKEN_ID):\n")
	return d.postRevokes(ctx, "post step", tok)
}

// postRevokes runs the post step of tok's job and checks that the token is
// refused afterwards.
func (d *demo) postRevokes(ctx context.Context, step string, tok issued) error {
	log, err := d.runPost(ctx, tok.job)
	if err != nil {
		return &StepError{Step: step, Err: err}
	}
	d.p.lines(log.Lines)
	if !slices.Contains(log.Lines, "Revoked Astro token "+tok.tokenID+".") {
		return unexpected(step, "the post step did not revoke token %s", tok.tokenID)
	}
	status, err := d.tokenStatus(ctx, tok)
	if err != nil {
		return &StepError{Step: step, Err: err}
	}
	d.p.f("   The token now gets %d %s.\n", status, http.StatusText(status))
	if status != http.StatusUnauthorized {
		return unexpected(step, "the revoked token got %d, want 401", status)
	}
	return nil
}

// denied runs the main step for a repository the policy does not trust,
// and shows both sides of the refusal: the job log, where the action
// explains it with what the job may know (the request id, the code, its
// own identity and a rule that would trust it), and the broker's log,
// where the platform team finds why under that request id.
func (d *demo) denied(ctx context.Context) error {
	const step = "denied exchange"
	d.p.f("\n4. Main step in %s (repository_id %s), which no rule of the policy trusts:\n", untrustedRepo, untrustedRepoID)
	before := len(d.emu.Tokens())
	claims := untrustedClaims("2001")
	j, err := d.newJob(claims, nil)
	if err != nil {
		return &StepError{Step: step, Err: err}
	}
	log, mainErr := d.runMain(ctx, j)
	var be *action.BrokerError
	if !errors.As(mainErr, &be) || be.Status != http.StatusForbidden || be.Code != brokerapi.CodeDenied || be.RequestID == "" {
		return unexpected(step, "the exchange was not refused with 403 denied and a request id (got: %v)", mainErr)
	}
	d.p.lines(log.Lines)
	d.p.lines([]string{"Error: " + mainErr.Error()})
	d.p.f("   The step fails (the action exits 1); the step summary holds the same explanation.\n")

	// The rule the job log suggests is ready to paste: it parses and trusts
	// exactly this job.
	rule, err := suggestedRule(log)
	if err != nil {
		return unexpected(step, "%v", err)
	}
	allowedBy, err := d.decideWith(rule, claims)
	if err != nil {
		return unexpected(step, "the suggested rule does not allow the job: %v", err)
	}
	d.p.f("   The suggested rule, parsed and decided by the broker's policy code, allows this job (rule %s).\n", allowedBy)

	// The answer said nothing about the policy; the broker's log did.
	why := d.explained.of(be.RequestID)
	if len(why) == 0 {
		return unexpected(step, "the broker's log has no explanation under request id %s", be.RequestID)
	}
	d.p.f("   The answer named no rule. The broker's log, under request id %s, tells the platform team:\n", be.RequestID)
	for _, e := range why {
		d.p.f("     rule %s (%d of %d entries hold): %s wants %s, the token has %s\n", e.rule, e.held, e.of, e.key, e.expected, e.actual)
	}

	exported, err := j.runner.ExportedEnv()
	if err != nil {
		return &StepError{Step: step, Err: err}
	}
	if len(exported) > 0 || len(d.emu.Tokens()) != before {
		return unexpected(step, "a refused exchange exported %d variables and minted %d tokens", len(exported), len(d.emu.Tokens())-before)
	}
	d.p.f("   Nothing was minted and nothing exported.\n")
	return nil
}

// suggestedRule cuts the suggested rule out of a refused job's log: the
// lines from "  - name:" to the line after the rule.
func suggestedRule(log jobLog) (string, error) {
	var b strings.Builder
	in := false
	for _, l := range log.Lines {
		switch {
		case strings.HasPrefix(l, "  - name: "):
			in = true
		case in && !strings.HasPrefix(l, "    "):
			return b.String(), nil
		}
		if in {
			b.WriteString(l + "\n")
		}
	}
	return "", errors.New("the job log suggests no rule")
}

// decideWith decides claims with a policy holding rule alone, and returns
// the name of the rule that allows them.
func (d *demo) decideWith(rule string, claims issuer.Claims) (string, error) {
	p, err := policy.Parse([]byte("rules:\n" + rule))
	if err != nil {
		return "", err
	}
	tok, err := d.iss.Mint(claims)
	if err != nil {
		return "", err
	}
	c, err := idtoken.UnverifiedClaims(tok) // the demo's own token: it was just signed
	if err != nil {
		return "", err
	}
	dec, err := p.Decide(policy.Claims(c), policy.Request{})
	return dec.Rule, err
}

// reap plays a job whose post step never runs, and the reaper deleting its
// token once its TTL has passed.
func (d *demo) reap(ctx context.Context) error {
	const step = "reaper"
	d.p.f("\n5. A job asks for ttl: %s, then its runner dies before the post step:\n", crashTTLInput)
	tok, err := d.mainStep(ctx, trustedClaims("1002"), map[string]string{action.InputTTL: crashTTLInput}, d.emu.WorkspaceIDs()[0])
	if err != nil {
		return &StepError{Step: step, Err: err}
	}

	n, err := d.broker.Reap(ctx)
	if err != nil {
		return &StepError{Step: step, Err: err}
	}
	status, err := d.tokenStatus(ctx, tok)
	if err != nil {
		return &StepError{Step: step, Err: err}
	}
	d.p.f("   Reaper pass before the deadline: %d token(s) deleted; token %s still gets %d.\n", n, tok.tokenID, status)
	if n != 0 || status != http.StatusOK {
		return unexpected(step, "before the deadline the reaper deleted %d tokens and the token got %d", n, status)
	}

	skip := crashTTL + time.Second
	d.clock.Advance(skip)
	d.p.f("   The demo moved its clock forward %s instead of waiting (every part of the demo reads that clock).\n", skip)
	n, err = d.broker.Reap(ctx)
	if err != nil {
		return &StepError{Step: step, Err: err}
	}
	if status, err = d.tokenStatus(ctx, tok); err != nil {
		return &StepError{Step: step, Err: err}
	}
	d.p.f("   Reaper pass (the broker runs one every 30s): %d token(s) deleted; token %s now gets %d %s.\n", n, tok.tokenID, status, http.StatusText(status))
	if n != 1 || status != http.StatusUnauthorized {
		return unexpected(step, "after the deadline the reaper deleted %d tokens and the token got %d", n, status)
	}
	return nil
}

func (d *demo) whatNext() {
	p := d.p
	p.f("\nAll steps turned out as expected.\n\n")
	p.f("What next: README.md, \"Go to production\" (run `astro-sts serve`, start your policy from\n")
	p.f("`astro-sts demo --print-policy`, add the action to your workflows); docs/demo.md maps each step.\n")
}

// job is one workflow job the demo plays: the runner's side of it.
type job struct {
	runner *runner.Runner
}

// newJob registers a job with the issuer (its tokens carry claims) and
// prepares the runner's files and environment, with the action's inputs as
// the runner passes them: every declared input, defaults applied.
func (d *demo) newJob(claims issuer.Claims, inputs map[string]string) (*job, error) {
	d.jobs++
	dir, err := os.MkdirTemp(d.dir, fmt.Sprintf("job%d-", d.jobs))
	if err != nil {
		return nil, err
	}
	url, requestToken := d.iss.RequestURL(claims)
	r, err := runner.NewRunner(dir, runner.Options{
		Inputs:              runnerInputs(d.brokerURL, inputs),
		IDTokenURL:          url,
		IDTokenRequestToken: requestToken,
		Env: map[string]string{
			"GITHUB_REPOSITORY": claims.Repository,
			"GITHUB_RUN_ID":     claims.RunID,
		},
	})
	if err != nil {
		return nil, err
	}
	return &job{runner: r}, nil
}

// runnerInputs are the action's inputs as the runner passes them: every
// input action.yml declares, with its default unless the workflow sets it.
func runnerInputs(brokerURL string, set map[string]string) map[string]string {
	in := map[string]string{
		action.InputBrokerURL: brokerURL, action.InputAudience: "", action.InputMode: string(action.ModeExchange),
		action.InputRotation: "", action.InputWorkspaceID: "", action.InputDeploymentID: "",
		action.InputRole: "", action.InputTTL: "", action.InputEnvName: action.DefaultEnvName,
		action.InputExportEnv: "true", action.InputRevoke: "true", action.InputDryRun: "false",
	}
	for k, v := range set {
		in[k] = v
	}
	return in
}

// runMain runs [action.Main] on the job's environment and returns its
// output as the job log shows it, and Main's error.
func (d *demo) runMain(ctx context.Context, j *job) (jobLog, error) {
	var stdout strings.Builder
	err := action.Main(ctx, d.githubAction(j.runner.Env(), &stdout), d.actionDeps())
	return readJobLog(stdout.String()), err
}

// runPost runs [action.Post] on the post step's environment.
func (d *demo) runPost(ctx context.Context, j *job) (jobLog, error) {
	env, err := j.runner.PostEnv()
	if err != nil {
		return jobLog{}, err
	}
	var stdout strings.Builder
	err = action.Post(ctx, d.githubAction(env, &stdout), d.actionDeps())
	return readJobLog(stdout.String()), err
}

func (d *demo) githubAction(env map[string]string, stdout io.Writer) *githubactions.Action {
	return githubactions.New(
		githubactions.WithGetenv(func(k string) string { return env[k] }),
		githubactions.WithWriter(stdout),
		githubactions.WithHTTPClient(d.http),
	)
}

func (d *demo) actionDeps() action.Deps {
	return action.Deps{HTTPClient: d.http, Now: d.clock.Now, UserAgent: "astro-sts-demo"}
}

// cliClient is an Astro client holding the job's token, as the astro CLI
// uses it: one attempt, because a refusal is the answer the demo wants to
// see, not a fault to retry. observe, if not nil, sees every request.
func (d *demo) cliClient(tok issued, observe func(method, route string, status int, _ time.Duration)) (*astro.Client, error) {
	return astro.New(astro.Config{
		BaseURL:     d.emuSrv.URL,
		Token:       tok.value,
		HTTPClient:  d.http,
		MaxAttempts: 1,
		UserAgent:   "astro-sts-demo (as the astro CLI)",
		Now:         d.clock.Now,
		Observe:     observe,
	})
}

// listTokens lists the Workspace's tokens with the job's token.
func (d *demo) listTokens(ctx context.Context, tok issued) ([]astro.Token, error) {
	c, err := d.cliClient(tok, nil)
	if err != nil {
		return nil, err
	}
	return c.ListTokens(ctx, d.emu.OrganizationID(), astro.ListTokensOptions{WorkspaceID: tok.workspaceID})
}

// tokenStatus is the HTTP status the emulator answers the token with.
func (d *demo) tokenStatus(ctx context.Context, tok issued) (int, error) {
	_, err := d.listTokens(ctx, tok)
	var apiErr *astro.APIError
	switch {
	case err == nil:
		return http.StatusOK, nil
	case errors.As(err, &apiErr):
		return apiErr.StatusCode, nil
	default:
		return 0, err
	}
}

func (d *demo) listPath(tok issued) string {
	return fmt.Sprintf("/v1/organizations/%s/tokens?workspaceId=%s", d.emu.OrganizationID(), tok.workspaceID)
}

// trustedClaims are a push to main of the repository the sample policy
// trusts, in run runID.
func trustedClaims(runID string) issuer.Claims {
	c := issuer.DefaultClaims()
	c.Repository, c.RepositoryID = trustedRepo, trustedRepoID
	c.Subject = "repo:" + trustedRepo + ":environment:production"
	c.RunID, c.RunAttempt = runID, "1"
	return c
}

// untrustedClaims are the same push, from a repository of the same owner
// that no rule names.
func untrustedClaims(runID string) issuer.Claims {
	c := trustedClaims(runID)
	c.Repository, c.RepositoryID = untrustedRepo, untrustedRepoID
	c.Subject = "repo:" + untrustedRepo + ":environment:production"
	c.JobWorkflowRef = untrustedRepo + "/.github/workflows/deploy.yml@refs/heads/main"
	c.WorkflowRef = c.JobWorkflowRef
	return c
}

// fingerprint names a token value without revealing it.
func fingerprint(value string) string {
	sum := sha256.Sum256([]byte(value))
	return "sha256:" + hex.EncodeToString(sum[:])[:12]
}

// printer writes the demo's output and keeps the first write error, so
// that the steps read as a script.
type printer struct {
	w   io.Writer
	err error
}

func (p *printer) f(format string, a ...any) {
	if p.err != nil {
		return
	}
	_, p.err = fmt.Fprintf(p.w, format, a...)
}

// lines prints job-log lines, marked as such.
func (p *printer) lines(ls []string) {
	for _, l := range ls {
		p.f("   | %s\n", l)
	}
}
