package main

import (
	"fmt"
	"log/slog"
	"net/http"

	"github.com/astro-sts/astro-sts/broker"
	"github.com/astro-sts/astro-sts/internal/policy"
	"github.com/astro-sts/astro-sts/internal/rotation"
	"github.com/astro-sts/astro-sts/internal/sink"
)

// rotationCheck refuses a policy with a rotation whose sinks have no
// credentials in cfg. The broker's policy reloader runs it at start and at
// every reload, so a rotation that could never write is a load-time error
// (the old policy stays in force on reload), not a failed run weeks later.
func rotationCheck(cfg sink.Config) func(*policy.Policy) error {
	return func(p *policy.Policy) error {
		if err := rotation.Check(p, cfg); err != nil {
			return fmt.Errorf("the policy's rotations cannot run with this configuration:\n%w", err)
		}
		return nil
	}
}

// newRotator builds the broker's rotator. It exists even when the policy in
// force has no rotations, so that a reload adding one needs no restart; the
// store's [rotationCheck] guarantees every rotation it hands out can write.
// ac is the broker's Astro client behind the broker's bound on calls in
// flight ([broker.AstroBound.Rotation]).
func newRotator(cfg sink.Config, ac rotation.Astro, org string, hc *http.Client, logger *slog.Logger) (broker.Rotator, error) {
	return rotation.New(rotation.Config{
		Astro:          ac,
		OrganizationID: org,
		Sinks:          rotation.NewSinks(cfg, hc, logger),
		Logger:         logger,
	})
}
