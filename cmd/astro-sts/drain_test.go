package main

import (
	"os"
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
