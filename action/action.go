// Package action is the logic of the astro-sts GitHub Action: the main step
// trades the job's GitHub OIDC token for a short-lived Astro API token at the
// broker (or, in rotate mode, asks the broker to rotate a managed token), and
// the post step asks the broker to revoke the token again.
//
// [Main] and [Post] talk to the runner only through the
// [githubactions.Action] they are given (inputs, environment, workflow
// commands on its writer, file commands in the files its environment names),
// so a test drives them with a map and a buffer; internal/runner plays
// the runner's part.
//
// The order of the main step is the security argument: the token is masked
// the moment it is decoded, before anything can print; the token id is saved
// for the post step next, so that a failure further on still ends in a
// revoke; only then is the token exported and set as an output. Errors carry
// the broker's safe message and status, never a token.
package action

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"runtime"
	"strings"
	"time"

	"github.com/sethvargo/go-githubactions"

	"github.com/astro-sts/astro-sts/internal/brokerapi"
)

// StateTokenID is the GITHUB_STATE name under which the main step leaves the
// token id for the post step, which reads it back as STATE_TOKEN_ID (the
// runner keeps the case).
const StateTokenID = "TOKEN_ID"

const (
	// mainTimeout bounds the whole main step, retries included.
	mainTimeout = 3 * time.Minute
	// postTimeout bounds the post step: a revoke that cannot finish in it is
	// left to the broker's reaper.
	postTimeout = 2 * time.Minute
	// callTimeout bounds each request to the broker or the token endpoint
	// (the default of [Deps.CallTimeout]).
	callTimeout = 30 * time.Second
	// maxBody caps what is read of a broker answer.
	maxBody = 1 << 20

	brokerAttempts    = 4
	idTokenAttempts   = 3
	defaultRetryDelay = time.Second
	maxRetryDelay     = 10 * time.Second
	maxRetryAfter     = 30 * time.Second
)

// Deps are the action's dependencies. The zero value works: it uses a
// client with a 30-second timeout, the system clock and one-second backoff.
type Deps struct {
	// HTTPClient calls the broker. The action uses a copy that does not
	// follow redirects. The OIDC token endpoint is called with the
	// [githubactions.Action]'s own client (githubactions.WithHTTPClient).
	HTTPClient *http.Client
	// Now is the clock, for Retry-After dates and the expiry shown in the
	// step summary.
	Now func() time.Time
	// RetryDelay is the first backoff delay; it doubles per retry up to 10s.
	// Tests set a millisecond.
	RetryDelay time.Duration
	// UserAgent is sent to the broker, e.g. "astro-sts-action/v1.2.3".
	UserAgent string
	// CallTimeout bounds each request to the broker or the token endpoint;
	// 0 means 30s. It must stay longer than the broker's request deadline
	// (ASTRO_STS_REQUEST_TIMEOUT, 20s by default), so that the broker's
	// answer, even a "try again", arrives before the action gives up.
	CallTimeout time.Duration
}

func (d Deps) withDefaults() Deps {
	if d.CallTimeout <= 0 {
		d.CallTimeout = callTimeout
	}
	if d.HTTPClient == nil {
		d.HTTPClient = &http.Client{Timeout: d.CallTimeout}
	}
	if d.Now == nil {
		d.Now = time.Now
	}
	if d.RetryDelay <= 0 {
		d.RetryDelay = defaultRetryDelay
	}
	return d
}

// ErrNotInRunner means the file-command files the runner provides are
// missing, so the step is not running under GitHub Actions (or a runner too
// old for file commands). No token is requested in that case.
var ErrNotInRunner = errors.New("not running as a GitHub Actions step")

// Main is the action's main step. In exchange mode it gets a fresh OIDC
// token for the audience, exchanges it at the broker (retrying transient
// failures, each time with a fresh OIDC token), masks the Astro token, saves
// its id for [Post], exports it to the env-name variable, sets the outputs
// and writes a step summary. In rotate mode it asks the broker to run the
// named rotation and writes the result to the step summary.
//
// Its error is one line that says what to do; the caller reports it (as an
// ::error:: annotation) and exits non-zero. Build a with
// githubactions.WithGetenv and githubactions.WithWriter.
func Main(ctx context.Context, a *githubactions.Action, deps Deps) (err error) {
	defer recoverCommandPanic(&err)
	deps = deps.withDefaults()
	ctx, cancel := context.WithTimeout(ctx, mainTimeout)
	defer cancel()

	in, err := readInputs(a)
	if err != nil {
		return err
	}
	if err := checkRunnerFiles(a, in); err != nil {
		return err
	}
	c := newBrokerClient(a, in, deps)
	if in.mode == ModeRotate {
		return rotate(ctx, a, c, in)
	}
	return exchange(ctx, a, c, in, deps)
}

func exchange(ctx context.Context, a *githubactions.Action, c *brokerClient, in inputs, deps Deps) error {
	req := brokerapi.ExchangeRequest{
		WorkspaceID:  in.workspaceID,
		DeploymentID: in.deploymentID,
		Role:         in.role,
		TTL:          in.ttl,
	}
	if in.dryRun {
		return dryRun(ctx, a, c, in, req)
	}
	x, err := c.exchange(ctx, req)
	if err != nil {
		return explain(a, err, c, in)
	}
	// The token is masked (c.exchange did it). Save its id first, so that
	// the post step revokes it even if a later write fails.
	if in.revoke {
		a.SaveState(StateTokenID, x.TokenID)
	}
	if in.exportEnv {
		a.SetEnv(in.envName, x.Token)
	}
	a.SetOutput(OutputToken, x.Token)
	a.SetOutput(OutputTokenID, x.TokenID)
	a.SetOutput(OutputExpiresAt, x.ExpiresAt.UTC().Format(time.RFC3339))
	a.SetOutput(OutputWorkspaceID, x.WorkspaceID)
	a.SetOutput(OutputDeploymentID, x.DeploymentID)
	a.SetOutput(OutputRole, x.Role)

	now := deps.Now()
	legacy := hasLegacyKeys(a)
	if a.Getenv("GITHUB_STEP_SUMMARY") != "" {
		a.AddStepSummary(exchangeSummary(x, in, now, legacy))
	}
	infof(a, "Got Astro API token %s: %s, role %s, expires %s (rule %s).",
		x.TokenID, scopeText(x), x.Role, x.ExpiresAt.UTC().Format(time.RFC3339), x.Rule)
	switch {
	case in.exportEnv:
		infof(a, "Exported it as %s for the following steps.", in.envName)
	default:
		infof(a, "Not exported (export-env: false): use the step's token output.")
	}
	if !x.ExpiresAt.After(now) {
		warningf(a, "The broker's token expired at %s, before now (%s): check the clocks of the broker and the runner.",
			x.ExpiresAt.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	if legacy {
		a.Noticef("%s", legacyNote(in))
	}
	return nil
}

// dryRun asks the broker to decide the exchange and stop there: it prints
// the decision and the rule, exports nothing and leaves nothing to revoke.
// A refusal fails the step as the exchange would.
func dryRun(ctx context.Context, a *githubactions.Action, c *brokerClient, in inputs, req brokerapi.ExchangeRequest) error {
	d, err := c.dryRun(ctx, req)
	if err != nil {
		return explain(a, err, c, in)
	}
	if a.Getenv("GITHUB_STEP_SUMMARY") != "" {
		a.AddStepSummary(dryRunSummary(d))
	}
	// The broker's fields are cleaned: a line break could start a workflow
	// command in the log.
	infof(a, "Dry run: the broker would mint %s. Nothing was minted or exported, and the OIDC token was not spent (request id %s).", cleanText(dryRunText(d), 500), d.RequestID)
	return nil
}

// explain writes the explanation of a refused exchange to the job log and
// the step summary, and returns err for the step to fail with.
func explain(a *githubactions.Action, err error, c *brokerClient, in inputs) error {
	r, ok := newRefusal(err, c.lastClaims, in)
	if !ok {
		return err
	}
	r.log(a)
	if a.Getenv("GITHUB_STEP_SUMMARY") != "" {
		a.AddStepSummary(r.summary())
	}
	return err
}

func rotate(ctx context.Context, a *githubactions.Action, c *brokerClient, in inputs) error {
	r, err := c.rotate(ctx, in.rotation)
	summary := a.Getenv("GITHUB_STEP_SUMMARY") != ""
	var be *BrokerError
	if errors.As(err, &be) && len(be.Sinks) > 0 && summary {
		a.AddStepSummary(rotateFailureSummary(in.rotation, be))
	}
	if err != nil {
		return err
	}
	if summary {
		a.AddStepSummary(rotateSummary(r))
	}
	// The broker's fields are cleaned: a line break could start a workflow
	// command in the log.
	infof(a, "Rotated %q: token %s, strategy %s, %d sinks updated.",
		cleanText(r.Name, 128), cleanText(r.TokenID, 128), cleanText(r.Strategy, 64), len(r.Sinks))
	return nil
}

// Post is the action's post step: with revoke on and a token id saved by
// [Main], it gets a fresh OIDC token and asks the broker to revoke the token.
// It never fails the job for a revoke problem: it prints a warning and
// returns nil, and the broker's reaper deletes the token when it expires.
// It does nothing with revoke: false, in rotate mode, or when Main saved no
// token id. It returns an error only when it could not even write its
// warning.
func Post(ctx context.Context, a *githubactions.Action, deps Deps) (err error) {
	defer recoverCommandPanic(&err)
	deps = deps.withDefaults()
	ctx, cancel := context.WithTimeout(ctx, postTimeout)
	defer cancel()

	tokenID := a.Getenv("STATE_" + StateTokenID)
	if tokenID == "" {
		infof(a, "No Astro token to revoke: the main step saved none (rotate mode, revoke: false, or it failed before the exchange).")
		return nil
	}
	revoke, err := boolInput(a, InputRevoke, true)
	if err == nil && !revoke {
		infof(a, "revoke: false: leaving Astro token %s to expire.", tokenID)
		return nil
	}
	in, err := readInputs(a)
	if err != nil {
		warningf(a, "Could not revoke Astro token %s: %v. The broker's reaper deletes it when it expires.", tokenID, err)
		return nil
	}
	c := newBrokerClient(a, in, deps)
	if err := c.revoke(ctx, tokenID); err != nil {
		warningf(a, "Could not revoke Astro token %s: %v. The broker's reaper deletes it when it expires.", tokenID, err)
		return nil
	}
	infof(a, "Revoked Astro token %s.", tokenID)
	return nil
}

// checkRunnerFiles refuses to start an exchange whose result could not be
// delivered: without these files the token would be minted for nothing.
func checkRunnerFiles(a *githubactions.Action, in inputs) error {
	var need []string
	if in.mode == ModeExchange && !in.dryRun {
		need = append(need, "GITHUB_OUTPUT")
		if in.exportEnv {
			need = append(need, "GITHUB_ENV")
		}
		if in.revoke {
			need = append(need, "GITHUB_STATE")
		}
	}
	var missing []string
	for _, name := range need {
		if a.Getenv(name) == "" {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: %s not set; use the action in a workflow step (uses: astro-sts/astro-sts@v1)", ErrNotInRunner, strings.Join(missing, ", "))
	}
	return nil
}

// mask tells the runner to hide v, and each of its lines, in all later
// output. The runner matches masks line by line, so a multi-line value
// needs its lines masked one by one.
func mask(a *githubactions.Action, v string) {
	a.AddMask(v)
	if !strings.ContainsAny(v, "\r\n") {
		return
	}
	for _, line := range strings.FieldsFunc(v, func(r rune) bool { return r == '\r' || r == '\n' }) {
		if strings.TrimSpace(line) != "" {
			a.AddMask(line)
		}
	}
}

// recoverCommandPanic turns the panics of [githubactions.Action] (it panics
// when it cannot write a workflow or file command) into an error. Runtime
// errors are real bugs and are re-raised.
func recoverCommandPanic(err *error) {
	r := recover()
	if r == nil {
		return
	}
	if _, ok := r.(runtime.Error); ok {
		panic(r)
	}
	e, ok := r.(error)
	if !ok {
		panic(r)
	}
	*err = fmt.Errorf("could not write a GitHub Actions command: %w", e)
}

// hasLegacyKeys reports whether the job also sets the API key pair that the
// astro CLI ignores once ASTRO_API_TOKEN is set.
func hasLegacyKeys(a *githubactions.Action) bool {
	return a.Getenv("ASTRONOMER_KEY_ID") != "" || a.Getenv("ASTRONOMER_KEY_SECRET") != ""
}

func legacyNote(in inputs) string {
	if in.exportEnv && in.envName == DefaultEnvName {
		return "ASTRONOMER_KEY_ID/ASTRONOMER_KEY_SECRET are set in this job: ASTRO_API_TOKEN takes precedence over them, so the astro CLI and deploy-action use the token from astro-sts. Remove the key pair from the workflow."
	}
	return "ASTRONOMER_KEY_ID/ASTRONOMER_KEY_SECRET are set in this job: ASTRO_API_TOKEN takes precedence over them, but this step did not set ASTRO_API_TOKEN, so the astro CLI still uses the key pair."
}

func scopeText(x exchanged) string {
	switch {
	case x.DeploymentID != "":
		return "deployment " + x.DeploymentID
	case x.WorkspaceID != "":
		return "workspace " + x.WorkspaceID
	default:
		return "organization " + x.OrganizationID
	}
}
