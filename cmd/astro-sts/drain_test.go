package main

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/astro-sts/astro-sts/internal/config"
)

// deploy/broker-container.yaml says how long the broker may take after
// SIGTERM, and the manifests size the grace period from it. That must be
// what serve's shutdown takes at most with its defaults: the shutdown
// grace for requests in flight, then twice the Astro timeout for the
// clean-ups of what they minted (see shutdown in serve.go).
func TestDeployDrainMatchesTheTimeoutChain(t *testing.T) {
	b, err := os.ReadFile("../../deploy/broker-container.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var s struct {
		BrokerDrainSeconds            int `yaml:"brokerDrainSeconds"`
		TerminationGracePeriodSeconds int `yaml:"terminationGracePeriodSeconds"`
		PreStopSleepSeconds           int `yaml:"preStopSleepSeconds"`
	}
	if err := yaml.Unmarshal(b, &s); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.LoadBroker(map[string]string{
		"ASTRO_STS_AUDIENCE": "https://sts.example.com", "ASTRO_STS_POLICY_FILE": "/p",
		"ASTRO_ORGANIZATION_ID": "clorg", "ASTRO_ORGANIZATION_TOKEN": "value",
	})
	if err != nil {
		t.Fatal(err)
	}
	if want := cfg.ShutdownGrace + 2*cfg.AstroTimeout; time.Duration(s.BrokerDrainSeconds)*time.Second != want {
		t.Errorf("deploy/broker-container.yaml says the broker drains for %d s; serve takes up to %s with its defaults", s.BrokerDrainSeconds, want)
	}
	// serve refuses settings whose exit bound exceeds config.ExitBudget:
	// the budget is what the manifests leave the broker after the preStop
	// sleep, and their defaults fit in it.
	if got := time.Duration(s.TerminationGracePeriodSeconds-s.PreStopSleepSeconds) * time.Second; got != config.ExitBudget {
		t.Errorf("deploy/broker-container.yaml leaves the broker %s after its preStop sleep; config.ExitBudget is %s", got, config.ExitBudget)
	}
	if cfg.ExitBound() > config.ExitBudget {
		t.Errorf("the defaults' exit bound %s exceeds the budget %s", cfg.ExitBound(), config.ExitBudget)
	}
}

// serve refuses, before it listens, settings that would defeat its
// clean-ups, naming each setting and its limit in one error: an Astro
// timeout under the floor, an exit bound beyond the manifests' budget, a
// reap interval of a day or more.
func TestServeRefusesSettingsThatDefeatRecovery(t *testing.T) {
	environ := []string{
		"ASTRO_STS_AUDIENCE=https://sts.example.com", "ASTRO_STS_POLICY_FILE=/p",
		"ASTRO_ORGANIZATION_ID=clorg", "ASTRO_ORGANIZATION_TOKEN=value",
		"ASTRO_STS_ADDR=127.0.0.1:0",
		"ASTRO_STS_ASTRO_TIMEOUT=100ms", "ASTRO_STS_REQUEST_TIMEOUT=29s", "ASTRO_STS_SHUTDOWN_GRACE=80s",
		"ASTRO_STS_REAP_INTERVAL=48h",
	}
	var stdout, stderr strings.Builder
	err := run(context.Background(), []string{"astro-sts", "serve"}, environ, &stdout, &stderr)
	if err == nil {
		t.Fatal("serve accepted the settings")
	}
	for _, want := range []string{
		"ASTRO_STS_ASTRO_TIMEOUT must be at least 1s, got 100ms",
		"ASTRO_STS_SHUTDOWN_GRACE (1m20s) plus twice ASTRO_STS_ASTRO_TIMEOUT (100ms) is 1m20.2s", "must be at most 45s",
		"ASTRO_STS_REAP_INTERVAL must be at least 1s and under 24h0m0s", "got 48h0m0s",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("serve's error lacks %q:\n%v", want, err)
		}
	}
	if strings.Contains(stdout.String(), "broker listening") {
		t.Error("serve listened with settings it should refuse")
	}
}
