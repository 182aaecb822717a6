package vaulttest

import (
	"testing"

	"github.com/astro-sts/astro-sts/internal/testkit/servertest"
)

// Main is a test package's TestMain ([servertest.Main]) with one Vault dev
// server ([Shared]) for the whole package in *s, since one per test would
// cost seconds each: nil without a Vault binary outside CI.
func Main(m *testing.M, s **Server) {
	servertest.Main(m, s, Shared)
}

// Need is s for a test that uses Vault; without a server it skips
// (locally) or fails (in CI) the test with [BuildHint].
func Need(t testing.TB, s *Server) *Server {
	t.Helper()
	servertest.Need(t, s == nil, BuildHint)
	return s
}
