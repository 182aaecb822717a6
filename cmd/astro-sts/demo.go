package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"

	"github.com/astro-sts/astro-sts/internal/demo"
)

const demoAbout = `Run the whole astro-sts story on this machine, with no configuration: an
Astro API emulator, a local OIDC issuer standing in for GitHub and the broker
with a sample policy, all on 127.0.0.1; the action's main step as a runner
runs it, the exported token used as the astro CLI would, the post step's
revoke, a denied exchange, and the reaper deleting the token of a job whose
post step never ran. Exits 0 only if every step turns out as expected.
See docs/demo.md.`

// runDemo is the 'demo' subcommand: flags only; the demo is internal/demo.
func runDemo(ctx context.Context, args []string, _ map[string]string, stdout, stderr io.Writer) error {
	fs := newFlagSet("demo", demoAbout, stderr)
	verbose := fs.Bool("verbose", false, "also print the logs of the broker (audit records included), the emulator and the issuer on stderr")
	printPolicy := fs.Bool("print-policy", false, "print the demo's sample trust policy, a starting point for your own, and exit")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *printPolicy {
		_, err := stdout.Write(demo.SamplePolicy())
		return err
	}
	var opts demo.Options
	if *verbose {
		opts.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	if err := demo.Run(ctx, stdout, opts); err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	return nil
}
