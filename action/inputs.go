package action

import (
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/sethvargo/go-githubactions"

	"github.com/astro-sts/astro-sts/internal/astro"
	"github.com/astro-sts/astro-sts/internal/loopback"
)

// The inputs of action.yml. The runner passes each as INPUT_<NAME> with the
// hyphens kept; [githubactions.Action.GetInput] builds that name.
const (
	InputBrokerURL    = "broker-url"
	InputAudience     = "audience"
	InputMode         = "mode"
	InputRotation     = "rotation"
	InputWorkspaceID  = "workspace-id"
	InputDeploymentID = "deployment-id"
	InputRole         = "role"
	InputTTL          = "ttl"
	InputEnvName      = "env-name"
	InputExportEnv    = "export-env"
	InputRevoke       = "revoke"
	InputDryRun       = "dry-run"
)

// InputNames lists every input the action reads, in action.yml's order; a
// test keeps action.yml and docs/action.md in step with it.
func InputNames() []string {
	return []string{
		InputBrokerURL, InputAudience, InputMode, InputRotation,
		InputWorkspaceID, InputDeploymentID, InputRole, InputTTL,
		InputEnvName, InputExportEnv, InputRevoke, InputDryRun,
	}
}

// The outputs of action.yml, set in exchange mode.
const (
	OutputToken        = "token"
	OutputTokenID      = "token-id"
	OutputExpiresAt    = "expires-at"
	OutputWorkspaceID  = "workspace-id"
	OutputDeploymentID = "deployment-id"
	OutputRole         = "role"
)

// OutputNames lists every output, in action.yml's order.
func OutputNames() []string {
	return []string{OutputToken, OutputTokenID, OutputExpiresAt, OutputWorkspaceID, OutputDeploymentID, OutputRole}
}

// Mode is the action's mode input.
type Mode string

// The two modes.
const (
	// ModeExchange trades the job's OIDC token for an Astro API token and
	// exports it; the post step revokes it.
	ModeExchange Mode = "exchange"
	// ModeRotate asks the broker to rotate a managed token into its sinks
	// (Vault, GitHub secrets); no token reaches the job.
	ModeRotate Mode = "rotate"
)

// DefaultEnvName is the variable the astro CLI and astronomer/deploy-action
// read the token from.
const DefaultEnvName = "ASTRO_API_TOKEN"

// ErrInsecureBrokerURL is wrapped by the [InputError] for a broker-url that
// would send the job's OIDC token in clear text.
var ErrInsecureBrokerURL = errors.New("must use https (plain http only for a loopback address such as 127.0.0.1 or localhost)")

// InputError reports one action input the workflow must fix.
type InputError struct {
	Input string
	Err   error
}

func (e *InputError) Error() string { return fmt.Sprintf("input %s: %v", e.Input, e.Err) }
func (e *InputError) Unwrap() error { return e.Err }

// inputErrors holds every input problem found, so that one run reports them
// all, on one line as a workflow annotation needs.
type inputErrors []error

func (es inputErrors) Error() string {
	msgs := make([]string, len(es))
	for i, e := range es {
		msgs[i] = e.Error()
	}
	return strings.Join(msgs, "; ")
}

func (es inputErrors) Unwrap() []error { return es }

// inputs are the validated inputs. Declared inputs always arrive, possibly
// empty; empty means unset, so the defaults below match action.yml's.
type inputs struct {
	brokerURL    *url.URL
	audience     string
	mode         Mode
	rotation     string
	workspaceID  string
	deploymentID string
	role         string
	ttl          string
	envName      string
	exportEnv    bool
	revoke       bool
	dryRun       bool
}

var (
	// Astro ids are cuid-like; rotation names are the broker's config keys.
	idPattern = regexp.MustCompile(`^[A-Za-z0-9._-]{1,128}$`)
	// envNamePattern is what a shell accepts as a variable name.
	envNamePattern = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,127}$`)
)

// readInputs reads and validates every input, reporting all problems at once.
func readInputs(a *githubactions.Action) (inputs, error) {
	var errs inputErrors
	bad := func(input string, err error) { errs = append(errs, &InputError{Input: input, Err: err}) }

	in := inputs{
		mode:         Mode(a.GetInput(InputMode)),
		rotation:     a.GetInput(InputRotation),
		workspaceID:  a.GetInput(InputWorkspaceID),
		deploymentID: a.GetInput(InputDeploymentID),
		role:         a.GetInput(InputRole),
		ttl:          a.GetInput(InputTTL),
		envName:      a.GetInput(InputEnvName),
		audience:     a.GetInput(InputAudience),
	}

	raw := a.GetInput(InputBrokerURL)
	if raw == "" {
		bad(InputBrokerURL, errors.New("required: the broker's base URL, e.g. https://astro-sts.example.com"))
	} else if u, err := parseBrokerURL(raw); err != nil {
		bad(InputBrokerURL, err)
	} else {
		in.brokerURL = u
		if in.audience == "" {
			// The broker's own URL is its natural audience; the trailing
			// slash is dropped so "https://sts/" and "https://sts" agree.
			in.audience = strings.TrimRight(raw, "/")
		}
	}

	switch in.mode {
	case "":
		in.mode = ModeExchange
	case ModeExchange, ModeRotate:
	default:
		bad(InputMode, fmt.Errorf("%q is not a mode: use exchange or rotate", in.mode))
	}

	if in.mode == ModeRotate {
		if in.rotation == "" {
			bad(InputRotation, errors.New("required with mode: rotate: the name of the rotation configured on the broker"))
		}
		for _, f := range []struct{ name, v string }{{InputWorkspaceID, in.workspaceID}, {InputDeploymentID, in.deploymentID}, {InputRole, in.role}, {InputTTL, in.ttl}} {
			if f.v != "" {
				bad(f.name, errors.New("only applies to mode: exchange; the broker's rotation config decides in rotate mode"))
			}
		}
	} else if in.rotation != "" {
		bad(InputRotation, errors.New("only applies to mode: rotate"))
	}
	if in.rotation != "" && !idPattern.MatchString(in.rotation) {
		bad(InputRotation, errors.New("use letters, digits, '.', '_' or '-' (at most 128)"))
	}

	for _, f := range []struct{ name, v string }{{InputWorkspaceID, in.workspaceID}, {InputDeploymentID, in.deploymentID}} {
		if f.v != "" && !idPattern.MatchString(f.v) {
			bad(f.name, errors.New("not an Astro id: use the id shown in the Astro UI, e.g. clm8t5u4q000008l9f7q2abcd"))
		}
	}
	if in.role != "" && !knownRole(in.role) {
		bad(InputRole, fmt.Errorf("%q is not an Astro role: use e.g. %s or %s", in.role, astro.RoleWorkspaceAuthor, astro.RoleWorkspaceOperator))
	}
	if in.ttl != "" {
		if d, err := time.ParseDuration(in.ttl); err != nil || d <= 0 {
			bad(InputTTL, fmt.Errorf("%q is not a positive duration: use e.g. 15m or 1h", in.ttl))
		}
	}

	if in.envName == "" {
		in.envName = DefaultEnvName
	}
	switch {
	case !envNamePattern.MatchString(in.envName):
		bad(InputEnvName, errors.New("not a variable name: use letters, digits and '_', not starting with a digit"))
	case in.envName == "NODE_OPTIONS", strings.HasPrefix(in.envName, "GITHUB_"), strings.HasPrefix(in.envName, "RUNNER_"):
		bad(InputEnvName, fmt.Errorf("the runner does not let a step set %s: choose another name", in.envName))
	}

	var err error
	if in.exportEnv, err = boolInput(a, InputExportEnv, true); err != nil {
		bad(InputExportEnv, err)
	}
	if in.revoke, err = boolInput(a, InputRevoke, true); err != nil {
		bad(InputRevoke, err)
	}
	if in.dryRun, err = boolInput(a, InputDryRun, false); err != nil {
		bad(InputDryRun, err)
	} else if in.dryRun && in.mode == ModeRotate {
		bad(InputDryRun, errors.New("only applies to mode: exchange"))
	}

	if len(errs) > 0 {
		return inputs{}, errs
	}
	return in, nil
}

// boolInput accepts what @actions/core's getBooleanInput accepts (YAML 1.2
// core schema booleans); empty is def.
func boolInput(a *githubactions.Action, name string, def bool) (bool, error) {
	switch v := a.GetInput(name); v {
	case "":
		return def, nil
	case "true", "True", "TRUE":
		return true, nil
	case "false", "False", "FALSE":
		return false, nil
	default:
		return false, fmt.Errorf("%q is not a boolean: use true or false", v)
	}
}

func knownRole(role string) bool {
	for _, t := range []astro.EntityType{astro.EntityWorkspace, astro.EntityDeployment, astro.EntityOrganization} {
		if astro.ValidRole(t, role) {
			return true
		}
	}
	return false
}

// parseBrokerURL accepts the broker's base URL: https, or http for a
// loopback host (the demo and tests), with an optional path prefix. The job's
// OIDC token is a bearer credential, so it never travels in clear text to
// another machine, and a URL carrying credentials, a query or a fragment is
// refused rather than guessed at ([loopback.ParseURL]).
func parseBrokerURL(raw string) (*url.URL, error) {
	u, err := loopback.ParseURL(raw)
	switch {
	case errors.Is(err, loopback.ErrInsecure):
		return nil, ErrInsecureBrokerURL
	case err != nil:
		return nil, fmt.Errorf("%w: use the broker's base URL, e.g. https://astro-sts.example.com", err)
	}
	return u, nil
}
