package config

import (
	"strings"
	"testing"
)

// The exit bound is a sum of durations: a shutdown grace near the largest
// time.Duration must not overflow it to a negative value, which reads as
// "at most 45s" and would start serve with a grace of 292 years. The sum
// saturates, and the setting is refused.
func TestRedTeamExitBoundOverflowIsRefused(t *testing.T) {
	for _, kv := range [][2]string{
		{"ASTRO_STS_SHUTDOWN_GRACE", "2562047h47m16s"},
		{"ASTRO_STS_SHUTDOWN_GRACE", "2562047h47m"},
		{"ASTRO_STS_ASTRO_TIMEOUT", "1281023h53m38s"},
	} {
		env := validEnv()
		env[kv[0]] = kv[1]
		c, err := LoadBroker(env)
		if err == nil || !strings.Contains(err.Error(), "ASTRO_STS_SHUTDOWN_GRACE") {
			t.Errorf("%s=%s: accepted, ExitBound() = %s (err = %v); want it refused for the exit budget", kv[0], kv[1], c.ExitBound(), err)
		}
		if c.ExitBound() < ExitBudget {
			t.Errorf("%s=%s: ExitBound() = %s, under the budget", kv[0], kv[1], c.ExitBound())
		}
	}
}
