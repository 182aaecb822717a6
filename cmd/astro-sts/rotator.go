package main

import (
	"context"
	"log/slog"
	"net/http"

	"github.com/astro-sts/astro-sts/broker"
	"github.com/astro-sts/astro-sts/internal/astro"
	"github.com/astro-sts/astro-sts/internal/policy"
)

// newRotator builds the broker's rotator from the sink configuration in env.
// Until rotation lands it returns nil, and the broker answers 501 to
// POST /v1/rotate.
func newRotator(_ context.Context, _ *policy.Policy, _ map[string]string, _ *astro.Client, _ string, _ *http.Client, _ *slog.Logger) (broker.Rotator, error) {
	return nil, nil
}
