package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/sethvargo/go-githubactions"

	"github.com/astro-sts/astro-sts/action"
)

// runAction is the GitHub Action's main step, run as the 'action'
// subcommand or as the executable astro-sts-action (the image's entrypoint).
// Its configuration is the runner's environment (INPUT_*, GITHUB_*,
// ACTIONS_ID_TOKEN_REQUEST_*), not flags. A failure is reported once, as an
// ::error:: annotation on stdout, and exits 1.
func runAction(ctx context.Context, args []string, env map[string]string, stdout, stderr io.Writer) error {
	a, deps, err := actionStep("action", "The GitHub Action's main step: exchange the job's OIDC token for an Astro API\ntoken at the broker, or run a rotation (mode: rotate). It reads its inputs\nfrom INPUT_* as the runner sets them; see docs/action.md.", args, env, stdout, stderr)
	if err != nil {
		return err
	}
	if err := action.Main(ctx, a, deps); err != nil {
		action.ReportError(a, err)
		return fmt.Errorf("%w: %w", errQuiet, err)
	}
	return nil
}

// runPost is the GitHub Action's post step, run as the 'post' subcommand or
// as the executable astro-sts-post (the image's post-entrypoint): it revokes
// the token the main step minted. It never fails the job: a revoke problem
// is a warning, and the broker's reaper is the backstop.
func runPost(ctx context.Context, args []string, env map[string]string, stdout, stderr io.Writer) error {
	a, deps, err := actionStep("post", "The GitHub Action's post step: revoke the Astro API token the main step\nminted (STATE_TOKEN_ID). Revoke problems are warnings; it always exits 0.", args, env, stdout, stderr)
	if err != nil {
		return err
	}
	if err := action.Post(ctx, a, deps); err != nil {
		// Post could not even write its warning; say so where we can, and
		// still leave the job alone.
		fmt.Fprintf(stderr, "astro-sts post: warning: %v\n", err)
	}
	return nil
}

// actionStep is the start of each of the action's steps: it takes no
// flags (only -h), and builds the runner-facing action from env.
func actionStep(name, about string, args []string, env map[string]string, stdout, stderr io.Writer) (*githubactions.Action, action.Deps, error) {
	if err := parseFlags(newFlagSet(name, about, stderr), args); err != nil {
		return nil, action.Deps{}, err
	}
	a, deps := newGitHubAction(env, stdout)
	return a, deps, nil
}

// newGitHubAction builds the runner-facing [githubactions.Action] from env
// (file commands go to the files env names) and the action's dependencies.
// One client serves the broker and the runner's token endpoint; the action
// bounds each call to 30 s, the client's Timeout is a backstop.
func newGitHubAction(env map[string]string, stdout io.Writer) (*githubactions.Action, action.Deps) {
	client := &http.Client{
		Timeout: 45 * time.Second,
		Transport: &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			ForceAttemptHTTP2:     true,
			TLSHandshakeTimeout:   10 * time.Second,
			ResponseHeaderTimeout: 30 * time.Second,
			IdleConnTimeout:       30 * time.Second,
			MaxIdleConns:          4,
		},
	}
	a := githubactions.New(
		githubactions.WithGetenv(func(k string) string { return env[k] }),
		githubactions.WithWriter(stdout),
		githubactions.WithHTTPClient(client),
	)
	return a, action.Deps{
		HTTPClient: client,
		Now:        time.Now,
		UserAgent:  "astro-sts-action/" + version,
	}
}
