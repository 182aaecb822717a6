package rotation_test

import (
	"testing"

	"github.com/astro-sts/astro-sts/internal/testkit/vaulttest"
)

// testVault is the package's one Vault dev server, started by TestMain when
// the binary exists: starting one per test would cost seconds each.
var testVault = vaulttest.PackageServer()

func TestMain(m *testing.M) {
	testVault.Main(m)
}

// needVault returns the shared Vault server, or skips the test when there
// is no Vault binary (TestMain has already failed the run in CI).
func needVault(t *testing.T) *vaulttest.Server {
	t.Helper()
	return testVault.Need(t)
}
