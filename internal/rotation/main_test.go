package rotation_test

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/astro-sts/astro-sts/internal/vaulttest"
)

// testVault is the package's one Vault dev server, started by TestMain when
// the binary exists: starting one per test would cost seconds each.
var testVault *vaulttest.Server

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	bin, ok := vaulttest.Binary()
	if !ok && vaulttest.Required() {
		fmt.Fprintf(os.Stderr, "CI=true but %s (looked for %s)\n", vaulttest.BuildHint, bin)
		return 1
	}
	if ok {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		s, err := vaulttest.Start(ctx, bin)
		cancel()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
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
