package vaulttest

import (
	"testing"

	"github.com/astro-sts/astro-sts/internal/servertest"
)

// Main is a test package's TestMain: it starts the package's one Vault dev
// server ([Shared]: starting one per test would cost seconds each) into *s,
// runs the tests, stops the server and exits with the tests' code. Without
// a Vault binary outside CI, *s stays nil and [Need] skips the Vault tests.
func Main(m *testing.M, s **Server) {
	servertest.Main(m, s, Shared)
}

// Need returns the package's server s for a test that uses it; with no
// server it skips the test with [BuildHint] (in CI, [Main] has already
// failed the run, and Need fails the test too).
func Need(t testing.TB, s *Server) *Server {
	t.Helper()
	servertest.Need(t, s == nil, BuildHint)
	return s
}
