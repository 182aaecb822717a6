package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"

	"github.com/astro-sts/astro-sts/broker"
	"github.com/astro-sts/astro-sts/internal/astro"
	"github.com/astro-sts/astro-sts/internal/policy"
	"github.com/astro-sts/astro-sts/internal/rotation"
	"github.com/astro-sts/astro-sts/internal/sink"
)

// newRotator builds the broker's rotator from the sink configuration in
// env. With no rotations in the policy it returns nil, and the broker
// answers 501 to POST /v1/rotate. Otherwise every rotation's sinks must have
// credentials now: a rotation that could never write is a start-up error,
// not a failed run weeks later.
func newRotator(_ context.Context, p *policy.Policy, env map[string]string, ac *astro.Client, org string, hc *http.Client, logger *slog.Logger) (broker.Rotator, error) {
	if len(p.Rotations()) == 0 {
		logger.Info("the policy has no rotations: POST /v1/rotate is disabled")
		return nil, nil
	}
	cfg, err := sink.LoadConfig(env)
	if err != nil {
		return nil, fmt.Errorf("sink configuration:\n%w", err)
	}
	if err := rotation.Check(p, cfg); err != nil {
		return nil, fmt.Errorf("the policy's rotations cannot run with this configuration:\n%w", err)
	}
	r, err := rotation.New(rotation.Config{
		Astro:          ac,
		OrganizationID: org,
		Sinks:          rotation.NewSinks(cfg, hc, logger),
		Logger:         logger,
	})
	if err != nil {
		return nil, err
	}
	logger.Info("rotation enabled", "rotations", len(p.Rotations()), "sinks", cfg.String())
	return r, nil
}
