package main

import (
	"os"
	"strings"
	"testing"

	"github.com/caarlos0/env/v11"

	"github.com/astro-sts/astro-sts/internal/config"
	"github.com/astro-sts/astro-sts/internal/sink"
)

// Every variable of serve's and rotate's configuration is documented: in
// the command's --help, or for the sinks' settings in docs/sinks.md, to
// which both helps point. A setting added to internal/config without its
// line of documentation fails here.
func TestEverySettingDocumented(t *testing.T) {
	sinksDoc, err := os.ReadFile("../../docs/sinks.md")
	if err != nil {
		t.Fatal(err)
	}
	sinkVars := map[string]bool{}
	for _, k := range variables(t, &sink.Config{}) {
		sinkVars[k] = true
	}
	for _, tc := range []struct {
		command, help string
		cfg           any
	}{
		{"serve", serveAbout, &config.Broker{}},
		{"rotate", rotateAbout, &config.Rotate{}},
	} {
		for _, k := range variables(t, tc.cfg) {
			doc, where := tc.help, tc.command+" --help"
			if sinkVars[k] {
				doc, where = string(sinksDoc), "docs/sinks.md"
			}
			if !strings.Contains(doc, k) {
				t.Errorf("%s: %s does not mention %s", tc.command, where, k)
			}
		}
	}
}

func variables(t *testing.T, cfg any) []string {
	t.Helper()
	params, err := env.GetFieldParams(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, p := range params {
		keys = append(keys, p.Key)
	}
	if len(keys) == 0 {
		t.Fatalf("no variables in %T", cfg)
	}
	return keys
}
