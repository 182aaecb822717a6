package sink_test

import (
	"fmt"
	"os"
	"testing"

	"github.com/astro-sts/astro-sts/internal/vaulttest"
)

// testVault is the package's one Vault dev server, started by TestMain when
// the binary exists: starting one per test would cost seconds each.
var testVault *vaulttest.Server

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	s, err := vaulttest.Shared()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if s != nil {
		defer s.Close()
		testVault = s
	}
	return m.Run()
}

// needVault returns the shared Vault server, or skips the test when there
// is no Vault binary (TestMain has already failed the run in CI).
func needVault(t *testing.T) *vaulttest.Server {
	t.Helper()
	if testVault == nil {
		if vaulttest.Required() {
			t.Fatal(vaulttest.BuildHint)
		}
		t.Skip(vaulttest.BuildHint)
	}
	return testVault
}
