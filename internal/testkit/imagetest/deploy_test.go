package imagetest_test

import (
	"path/filepath"
	"testing"

	"github.com/astro-sts/astro-sts/internal/policy"
)

// TestKubernetesPolicyLoads: the policy the Kubernetes base ships in its
// ConfigMap loads with the broker's own parser (the manifests' module
// cannot import it), so a fresh deployment starts.
func TestKubernetesPolicyLoads(t *testing.T) {
	p, err := policy.Load(filepath.Join("..", "..", "..", "deploy", "kubernetes", "base", "policy.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if p.Rules() == 0 {
		t.Error("the sample policy has no rule")
	}
}
