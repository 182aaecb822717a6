// Command astro-sts is the single binary of astro-sts: the broker, the
// GitHub Action's main and post steps, the rotation job, the policy checker,
// the Astro API emulator and the demo, each a subcommand.
//
// main only turns run's error into an exit code; all wiring lives in run and
// in the run* function of each subcommand, which take their environment and
// output streams as arguments so that tests can call them hermetically.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
)

// A subcommand's entry point. env is the process environment as a map.
type runFunc func(ctx context.Context, args []string, env map[string]string, stdout, stderr io.Writer) error

type command struct {
	name    string
	summary string
	run     runFunc
}

// commands is the table of subcommands, in the order --help lists them.
func commands() []command {
	return []command{
		{"serve", "run the broker: exchange GitHub OIDC tokens for Astro tokens", runServe},
		{"action", "the GitHub Action's main step (exchange or rotate)", runAction},
		{"post", "the GitHub Action's post step (revoke)", runPost},
		{"rotate", "rotate a managed token into Vault and GitHub secrets without a broker", runRotate},
		{"policy", "validate and test a trust policy, or check it against a set of claims", runPolicy},
		{"emulator", "serve a faithful emulator of the Astro API v1 on loopback", runEmulator},
		{"demo", "run the whole exchange/revoke/reap story on this machine", runDemo},
		{"version", "print the version", runVersion},
	}
}

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// exitError carries a specific exit code (2 for usage errors, 1 for a
// policy deny) up to main.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// usageError reports bad command-line usage; main exits 2.
func usageError(format string, a ...any) error {
	return &exitError{code: 2, err: fmt.Errorf(format, a...)}
}

// errHelp is returned after help was printed on request; main exits 0.
var errHelp = errors.New("help requested")

func main() {
	err := run(context.Background(), os.Args, os.Environ(), os.Stdout, os.Stderr)
	os.Exit(exitCode(err, os.Stderr))
}

func exitCode(err error, stderr io.Writer) int {
	if err == nil || errors.Is(err, errHelp) {
		return 0
	}
	code := 1
	var ee *exitError
	if errors.As(err, &ee) {
		code = ee.code
	}
	if !errors.Is(err, errQuiet) {
		fmt.Fprintf(stderr, "astro-sts: %v\n", err)
	}
	return code
}

// errQuiet marks an error whose message was already printed.
var errQuiet = errors.New("already reported")

// run dispatches args[1] (or, for the action image, the executable's own
// name) to a subcommand. It owns signal handling: SIGINT and SIGTERM cancel
// ctx so that every subcommand can shut down gracefully.
func run(ctx context.Context, args []string, environ []string, stdout, stderr io.Writer) error {
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()

	env := envMap(environ)
	// The container action runs one binary under two names, because GitHub
	// gives the main and post entrypoints the same args.
	if len(args) > 0 {
		switch filepath.Base(args[0]) {
		case "astro-sts-action":
			return runAction(ctx, args[1:], env, stdout, stderr)
		case "astro-sts-post":
			return runPost(ctx, args[1:], env, stdout, stderr)
		}
	}
	if len(args) < 2 {
		printUsage(stderr)
		return usageError("no subcommand given")
	}
	name := args[1]
	if name == "-h" || name == "--help" || name == "help" {
		printUsage(stdout)
		return nil
	}
	if name == "--version" {
		name = "version"
	}
	for _, c := range commands() {
		if c.name == name {
			return c.run(ctx, args[2:], env, stdout, stderr)
		}
	}
	printUsage(stderr)
	return usageError("unknown subcommand %q", name)
}

func printUsage(w io.Writer) {
	fmt.Fprintln(w, "astro-sts: a security token service and GitHub Action for Astronomer's Astro")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Usage: astro-sts <command> [flags]")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Commands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-9s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Run 'astro-sts <command> --help' for a command's flags and environment.")
}

// envMap turns KEY=VALUE pairs into a map; later entries win, as in exec.
func envMap(environ []string) map[string]string {
	m := make(map[string]string, len(environ))
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok {
			m[k] = v
		}
	}
	return m
}

func runVersion(_ context.Context, args []string, _ map[string]string, stdout, stderr io.Writer) error {
	fs := newFlagSet("version", "Print the version of astro-sts.", stderr)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "astro-sts %s\n", version)
	return nil
}
