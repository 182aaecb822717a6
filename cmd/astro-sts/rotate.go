package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/astro-sts/astro-sts/internal/astro"
	"github.com/astro-sts/astro-sts/internal/config"
	"github.com/astro-sts/astro-sts/internal/policy"
	"github.com/astro-sts/astro-sts/internal/rotation"
)

const rotateAbout = `Run one rotation of a trust policy's rotations section without a broker, for
example from a Kubernetes CronJob: find the managed token, check that every
sink can be written, rotate or replace the token in Astro, and write the new
value to the rotation's Vault and GitHub sinks (see docs/rotation.md).

The result is printed as JSON on stdout; the token value never is. Logs go to
stderr. Exit status: 0 when every sink holds the new value; 1 when the
rotation failed (the result is still printed when there is one, and the
message on stderr says what state it left and what to do); 2 on bad usage.

Configuration comes from the environment (every problem is reported at once):
  ASTRO_API_URL                   default https://api.astronomer.io/v1
  ASTRO_ORGANIZATION_ID           required
  ASTRO_ORGANIZATION_TOKEN        an Organization Owner token, or
  ASTRO_ORGANIZATION_TOKEN_FILE   a file holding it
  ASTRO_STS_LOG_LEVEL             debug, info (default), warn, error
  plus the Vault and GitHub settings of docs/sinks.md for the rotation's sinks
  (only those of the rotation run are required).`

// runRotate is the 'rotate' subcommand.
func runRotate(ctx context.Context, args []string, environ map[string]string, stdout, stderr io.Writer) error {
	fs := newFlagSet("rotate", rotateAbout, stderr)
	policyFile := fs.String("policy", "", "the trust policy (YAML) holding the rotation (required)")
	name := fs.String("name", "", "the name of the rotation to run (required)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *policyFile == "" || *name == "" {
		return usageError("rotate: --policy and --name are required (see astro-sts rotate --help)")
	}

	cfg, err := config.LoadRotate(environ)
	if err != nil {
		return fmt.Errorf("rotate: invalid configuration:\n%w", err)
	}
	p, err := policy.Load(*policyFile)
	if err != nil {
		return fmt.Errorf("rotate: %w", err)
	}
	r, ok := p.Rotation(*name)
	if !ok {
		var names []string
		for _, r := range p.Rotations() {
			names = append(names, r.Name)
		}
		return fmt.Errorf("rotate: %s has no rotation %q (it has: %s)", *policyFile, *name, strings.Join(names, ", "))
	}
	// Only this rotation's sinks need credentials: a CronJob runs one.
	if err := rotation.CheckRotation(r, cfg.Sinks); err != nil {
		return fmt.Errorf("rotate: invalid configuration:\n%w", err)
	}

	level, _ := config.ParseLevel(cfg.LogLevel)
	logger := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: level}))
	httpClient := &http.Client{Timeout: 30 * time.Second}
	ac, err := astro.New(astro.Config{
		BaseURL:    cfg.Astro.APIURL,
		Token:      cfg.Astro.OrganizationToken().Reveal(),
		HTTPClient: httpClient,
		UserAgent:  "astro-sts/" + version,
	})
	if err != nil {
		return fmt.Errorf("rotate: astro client: %w", err)
	}
	rt, err := rotation.New(rotation.Config{
		Astro:          ac,
		OrganizationID: cfg.Astro.OrganizationID,
		Sinks:          rotation.NewSinks(cfg.Sinks, httpClient, logger),
		Logger:         logger,
	})
	if err != nil {
		return fmt.Errorf("rotate: %w", err)
	}
	// A signal stops the run only before Astro is changed; after that the
	// Rotator finishes writing the sinks (see rotation.Rotator.Rotate).
	res, err := rt.Rotate(ctx, r)
	if res != nil {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if werr := enc.Encode(res); werr != nil && err == nil {
			return fmt.Errorf("rotate: writing the result: %w", werr)
		}
	}
	if err != nil {
		return fmt.Errorf("rotate: %w", err)
	}
	return nil
}
