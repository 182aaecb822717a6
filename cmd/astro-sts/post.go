package main

import (
	"context"
	"fmt"
	"io"

	"github.com/astro-sts/astro-sts/action"
)

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
