package redistest

import (
	"context"
	"testing"

	"github.com/astro-sts/astro-sts/internal/servertest"
)

// Main is a test package's TestMain: it starts the package's one server
// ([Shared]) into *s, runs the tests, stops the server and exits with the
// tests' code. Without a redis-server outside CI, *s stays nil and [Need]
// skips the Redis tests.
func Main(m *testing.M, s **Server) {
	servertest.Main(m, s, Shared)
}

// Need returns the package's server s emptied, for a test that uses it; with
// no server it skips the test with [InstallHint] (in CI, [Main] has already
// failed the run, and Need fails the test too).
func Need(t testing.TB, s *Server) *Server {
	t.Helper()
	servertest.Need(t, s == nil, InstallHint)
	if err := s.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	return s
}
